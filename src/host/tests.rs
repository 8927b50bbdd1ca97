use super::*;
use std::os::unix::fs::symlink;

fn root() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path()).unwrap();
    (dir, host)
}

#[test]
fn reads_through_relative_symlinks_like_sysfs() {
    let (dir, host) = root();
    let d = dir.path();
    fs::create_dir_all(d.join("sys/devices/pci0000:00/0000:00:01.0")).unwrap();
    fs::write(
        d.join("sys/devices/pci0000:00/0000:00:01.0/vendor"),
        "0x10de\n",
    )
    .unwrap();
    fs::create_dir_all(d.join("sys/bus/pci/devices")).unwrap();
    symlink(
        "../../../devices/pci0000:00/0000:00:01.0",
        d.join("sys/bus/pci/devices/0000:00:01.0"),
    )
    .unwrap();
    assert_eq!(
        host.read_attr("/sys/bus/pci/devices/0000:00:01.0/vendor")
            .unwrap(),
        "0x10de"
    );
}

#[test]
fn absolute_symlink_is_rerooted_not_followed_out() {
    let (dir, host) = root();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "outside").unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    symlink(outside.path().join("secret"), dir.path().join("etc/link")).unwrap();
    // Resolved inside the root, the target does not exist: not-found, never the secret.
    let err = host.read_string("/etc/link").unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn dotdot_symlink_cannot_climb_above_root() {
    let (dir, host) = root();
    fs::create_dir_all(dir.path().join("a")).unwrap();
    symlink(
        "../../../../../../../../etc/passwd",
        dir.path().join("a/up"),
    )
    .unwrap();
    let local = host.resolve("/a/up").unwrap();
    assert!(local.starts_with(host.root()), "{}", local.display());
    assert_eq!(local, host.root().join("etc/passwd"));
}

#[test]
fn write_through_hostile_symlink_stays_inside_root() {
    let (dir, host) = root();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    symlink(outside.path(), dir.path().join("etc/cchost")).unwrap();
    host.write_atomic("/etc/cchost/config.toml", b"x=1\n", 0o644)
        .unwrap();
    assert!(!outside.path().join("config.toml").exists());
    let inside = host.root().join(outside.path().strip_prefix("/").unwrap());
    assert!(inside.join("config.toml").exists());
}

#[test]
fn symlink_loop_is_an_error_naming_the_path() {
    let (dir, host) = root();
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    let err = host.read_string("/a").unwrap_err();
    assert!(matches!(err, HostError::SymlinkLoop(_)), "{err}");
    assert!(err.to_string().contains("/a"));
}

#[test]
fn oversized_and_non_utf8_files_are_typed_errors() {
    let (dir, host) = root();
    fs::write(dir.path().join("big"), vec![b'a'; 100]).unwrap();
    let err = host.read_bytes_limited("/big", 10).unwrap_err();
    assert!(matches!(err, HostError::TooLarge { .. }));
    fs::write(dir.path().join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    let err = host.read_string("/bin").unwrap_err();
    assert!(matches!(err, HostError::NotUtf8(_)));
    assert!(err.to_string().contains("/bin"));
}

#[test]
fn missing_files_are_none_in_opt_readers() {
    let (_dir, host) = root();
    assert_eq!(host.read_attr_opt("/sys/nothing").unwrap(), None);
    assert_eq!(host.link_name("/sys/nothing").unwrap(), None);
    assert!(host.list_dir_opt("/sys/nothing").unwrap().is_empty());
}

#[test]
fn atomic_write_replaces_and_leaves_no_temp_files() {
    let (dir, host) = root();
    host.write_atomic("/var/run/cdi/a.yaml", b"one", 0o600)
        .unwrap();
    host.write_atomic("/var/run/cdi/a.yaml", b"two", 0o644)
        .unwrap();
    assert_eq!(host.read_string("/var/run/cdi/a.yaml").unwrap(), "two");
    let names = host.list_dir("/var/run/cdi").unwrap();
    assert_eq!(names, vec!["a.yaml".to_string()]);
    let mode = fs::metadata(dir.path().join("var/run/cdi/a.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn link_name_gives_driver_name() {
    let (dir, host) = root();
    fs::create_dir_all(dir.path().join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    fs::create_dir_all(dir.path().join("dev0")).unwrap();
    symlink(
        "../sys/bus/pci/drivers/vfio-pci",
        dir.path().join("dev0/driver"),
    )
    .unwrap();
    assert_eq!(
        host.link_name("/dev0/driver").unwrap().as_deref(),
        Some("vfio-pci")
    );
}

/// Both ways of resolving (openat2(RESOLVE_IN_ROOT) and the user-space fallback) keep a
/// hostile absolute or `..` symlink inside the root.
#[test]
fn both_resolutions_keep_symlinks_inside_the_root() {
    let (dir, host) = root();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "outside").unwrap();
    let inside = dir.path().join(outside.path().strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fs::write(inside.join("secret"), "inside").unwrap();
    fs::create_dir_all(dir.path().join("a")).unwrap();
    symlink(outside.path().join("secret"), dir.path().join("a/abs")).unwrap();
    let up = format!("{}{}/secret", "../".repeat(12), outside.path().display());
    symlink(&up, dir.path().join("a/up")).unwrap();
    for h in [host.clone(), host.with_resolution(Resolution::UserSpace)] {
        assert_eq!(h.read_string("/a/abs").unwrap(), "inside", "{h:?}");
        assert_eq!(h.read_string("/a/up").unwrap(), "inside", "{h:?}");
        h.write_attr("/a/abs", "written").unwrap();
        assert_eq!(
            fs::read_to_string(outside.path().join("secret")).unwrap(),
            "outside"
        );
        fs::write(inside.join("secret"), "inside").unwrap();
        let err = h.read_string("/a/missing").unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
    assert!(
        !host
            .with_resolution(Resolution::UserSpace)
            .kernel_resolves(),
        "the fallback must be selectable"
    );
}

/// On a kernel with openat2 (5.6+, which every CI and dev machine here has), the host
/// door uses it: then the kernel, not cchost, confines each lookup to the root.
#[test]
fn openat2_is_used_where_the_kernel_has_it() {
    let (dir, host) = root();
    fs::write(dir.path().join("f"), "x").unwrap();
    host.read_string("/f").unwrap();
    let how = nix::fcntl::OpenHow::new()
        .flags(nix::fcntl::OFlag::O_RDONLY)
        .resolve(nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT);
    let d = fs::File::open(dir.path()).unwrap();
    let kernel_has_it = nix::fcntl::openat2(&d, "f", how).is_ok();
    assert_eq!(host.kernel_resolves(), kernel_has_it);
}

/// A symlink loop is the same error either way.
#[test]
fn symlink_loop_is_named_with_both_resolutions() {
    let (dir, host) = root();
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    for h in [host.clone(), host.with_resolution(Resolution::UserSpace)] {
        let err = h.read_string("/a").unwrap_err();
        assert!(matches!(err, HostError::SymlinkLoop(_)), "{err}");
    }
}

/// A FIFO where a file belongs is refused at once, for reads and attribute writes, with
/// either resolution (it used to block the open forever).
#[test]
fn fifo_is_refused_not_waited_on() {
    let (dir, host) = root();
    nix::unistd::mkfifo(
        &dir.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h2 = host.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        for h in [h2.clone(), h2.with_resolution(Resolution::UserSpace)] {
            out.push(h.read_string("/fifo").map(|_| ()));
            out.push(h.read_string_opt("/fifo").map(|_| ()));
        }
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("reading a FIFO blocked");
    for r in out {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
    }
    // Writing: with no reader the open fails (ENXIO) or the type check refuses it.
    let e = host.write_attr("/fifo", "1").unwrap_err();
    assert!(e.to_string().contains("/fifo"), "{e}");
}

/// A host root with two hostile links under `/a`: `abs` (an absolute path to a directory
/// outside the root) and `up` (`../..` far enough to climb out, then that path). Outside
/// and its mirror inside the root (the same path under the root) hold different things,
/// so every operation shows which one it reached.
struct Escape {
    dir: tempfile::TempDir,
    outside: tempfile::TempDir,
    host: HostRoot,
}

impl Escape {
    fn new() -> Self {
        let (dir, host) = root();
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        let i = dir.path().join(o.strip_prefix("/").unwrap());
        for (base, tag) in [(o.to_path_buf(), "outside"), (i.clone(), "inside")] {
            fs::create_dir_all(base.join("dir")).unwrap();
            fs::write(base.join(format!("dir/{tag}-entry")), "").unwrap();
            fs::write(base.join("victim"), tag).unwrap();
            fs::write(base.join("secret"), tag).unwrap();
            symlink(format!("{tag}-target"), base.join("lnk")).unwrap();
            fs::write(
                base.join("res"),
                if tag == "inside" { b"in!!" } else { b"out!" },
            )
            .unwrap();
            fs::write(base.join("kmsg"), format!("6,1,1,-;{tag}\n")).unwrap();
            fs::create_dir_all(base.join("pci/0000:00:01.0")).unwrap();
            let vendor = if tag == "inside" {
                "0x10de\n"
            } else {
                "0x8086\n"
            };
            for (k, v) in [
                ("vendor", vendor),
                ("device", "0x2330\n"),
                ("class", "0x030200\n"),
            ] {
                fs::write(base.join("pci/0000:00:01.0").join(k), v).unwrap();
            }
        }
        fs::set_permissions(o.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(i.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(o.join("only-outside"), "").unwrap();
        fs::create_dir_all(dir.path().join("a")).unwrap();
        symlink(o, dir.path().join("a/abs")).unwrap();
        let up = format!(
            "{}{}",
            "../".repeat(12),
            o.strip_prefix("/").unwrap().display()
        );
        symlink(up, dir.path().join("a/up")).unwrap();
        Escape { dir, outside, host }
    }

    /// Every file outside, with its content (or link target) and mode.
    fn outside_state(&self) -> Vec<(PathBuf, Vec<u8>, u32)> {
        fn walk(d: &Path, out: &mut Vec<(PathBuf, Vec<u8>, u32)>) {
            let mut names: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                let m = fs::symlink_metadata(&p).unwrap();
                let mode = m.permissions().mode();
                if m.file_type().is_symlink() {
                    let t = fs::read_link(&p).unwrap();
                    out.push((p, t.into_os_string().into_encoded_bytes(), mode));
                } else if m.is_dir() {
                    out.push((p.clone(), b"<dir>".to_vec(), mode));
                    walk(&p, out);
                } else {
                    out.push((p.clone(), fs::read(&p).unwrap(), mode));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.outside.path(), &mut out);
        out
    }

    fn inside(&self, rel: &str) -> PathBuf {
        self.dir
            .path()
            .join(self.outside.path().strip_prefix("/").unwrap())
            .join(rel)
    }
}

/// Every operation of the host door, through a hostile absolute or `../..` symlink, with
/// openat2 and with the user-space fallback: it reaches the mirror inside the root (or
/// nothing), never the outside, and changes nothing outside.
#[test]
fn every_operation_stays_inside_the_root_through_hostile_links() {
    let e = Escape::new();
    let before = e.outside_state();
    for h in [
        e.host.clone(),
        e.host.with_resolution(Resolution::UserSpace),
    ] {
        for l in ["/a/abs", "/a/up"] {
            let p = |rel: &str| format!("{l}/{rel}");
            let ctx = format!("{l} {:?}", h.kernel_resolves());
            assert_eq!(h.list_dir(p("dir")).unwrap(), vec!["inside-entry"], "{ctx}");
            assert!(!h.exists(p("only-outside")), "{ctx}");
            assert_eq!(h.kind(p("lnk")), Some(NodeKind::Symlink), "{ctx}");
            assert_eq!(h.kind_followed(p("only-outside")), None, "{ctx}");
            assert_eq!(
                h.read_link(p("lnk")).unwrap(),
                PathBuf::from("inside-target"),
                "{ctx}"
            );
            assert_eq!(h.mode_of(p("secret")), Some(0o600), "{ctx}");
            assert_eq!(h.read_string(p("secret")).unwrap(), "inside", "{ctx}");
            let map = h.map_resource(p("res"), mmio::MapAccess::ReadOnly).unwrap();
            assert_eq!(
                map.read32(0).unwrap(),
                u32::from_le_bytes(*b"in!!"),
                "{ctx}"
            );
            let ids = h.read_attr_in_subdirs(p("pci"), "vendor").unwrap();
            assert_eq!(
                ids[0].1.as_ref().unwrap().as_deref(),
                Some("0x10de"),
                "{ctx}"
            );
            h.create_dir_all(p("made/deeper")).unwrap();
            assert!(e.inside("made/deeper").is_dir(), "{ctx}");
            fs::remove_dir_all(e.inside("made")).unwrap();
            let lock = h.lock_exclusive(p("locks/l"), LockWait::No).unwrap();
            assert!(e.inside("locks/l").is_file(), "{ctx}");
            drop(lock);
            fs::remove_dir_all(e.inside("locks")).unwrap();
            h.set_mode(p("secret"), 0o640).unwrap();
            assert_eq!(h.mode_of(p("secret")), Some(0o640), "{ctx}");
            h.set_mode(p("secret"), 0o600).unwrap();
            h.write_atomic(p("victim"), b"rewritten", 0o644).unwrap();
            h.remove_file(p("victim")).unwrap();
            assert!(!e.inside("victim").exists(), "{ctx}");
            fs::write(e.inside("victim"), "inside").unwrap();
            assert_eq!(
                e.outside_state(),
                before,
                "{ctx}: something outside changed"
            );
        }
    }
}

/// The kernel log and a PCI device whose paths are hostile links: read inside the root.
#[test]
fn kmsg_and_pci_reads_stay_inside_the_root() {
    let e = Escape::new();
    let o = e.outside.path().to_path_buf();
    let d = e.dir.path();
    fs::create_dir_all(d.join("dev")).unwrap();
    fs::create_dir_all(d.join("sys/bus/pci/devices")).unwrap();
    for h in [
        e.host.clone(),
        e.host.with_resolution(Resolution::UserSpace),
    ] {
        for absolute in [true, false] {
            let target = |rel: &str| -> PathBuf {
                if absolute {
                    o.join(rel)
                } else {
                    PathBuf::from(format!(
                        "{}{}",
                        "../".repeat(12),
                        o.join(rel).strip_prefix("/").unwrap().display()
                    ))
                }
            };
            let _ = fs::remove_file(d.join("dev/kmsg"));
            symlink(target("kmsg"), d.join("dev/kmsg")).unwrap();
            let log = h.kernel_log().unwrap();
            assert_eq!(log.records[0].message, "inside", "absolute={absolute}");
            let link = d.join("sys/bus/pci/devices/0000:00:01.0");
            let _ = fs::remove_file(&link);
            symlink(target("pci/0000:00:01.0"), &link).unwrap();
            let addr: pci::PciAddress = "0000:00:01.0".parse().unwrap();
            assert_eq!(h.pci_ident(&addr).unwrap().vendor, 0x10de);
            assert_eq!(h.pci_device(&addr).unwrap().vendor, 0x10de);
            let scan = h.pci_scan().unwrap();
            assert_eq!(
                scan[0].1.as_ref().unwrap().vendor,
                0x10de,
                "absolute={absolute}"
            );
        }
    }
}

/// Removing and reading a link acts on the link itself, never on what it points to.
#[test]
fn link_operations_act_on_the_link_not_its_target() {
    let (dir, host) = root();
    fs::write(dir.path().join("target"), "keep").unwrap();
    symlink("/target", dir.path().join("l")).unwrap();
    assert_eq!(host.kind("/l"), Some(NodeKind::Symlink));
    assert_eq!(host.kind_followed("/l"), Some(NodeKind::File));
    assert_eq!(
        host.mode_of("/l"),
        None,
        "a link has no file mode of its own here"
    );
    host.remove_file("/l").unwrap();
    assert!(!dir.path().join("l").exists());
    assert_eq!(
        fs::read_to_string(dir.path().join("target")).unwrap(),
        "keep"
    );
    let err = host.read_link("/target").unwrap_err();
    assert!(err.to_string().contains("/target"), "{err}");
    assert!(matches!(host.remove_file("/"), Err(HostError::BadPath(_))));
    host.remove_file("/no/such/dir/file").unwrap();
}

/// The race openat2 closes: a directory on the path swapped for a link to the outside
/// (and back) while cchost works. Each operation must never reach the outside: with the
/// kernel resolving, the link is followed inside the root whatever the moment. (The
/// user-space fallback cannot promise this: it checks, then acts on a path string, and
/// a swap in between wins; run with `Resolution::UserSpace` this test fails within a
/// few thousand rounds, which is why the fallback is only a fallback.)
#[test]
fn a_link_swapped_in_during_a_call_cannot_lead_outside() {
    let (dir, host) = root();
    if !host.kernel_resolves()
        && !{
            fs::write(dir.path().join("probe"), "").unwrap();
            let _ = host.read_string("/probe");
            host.kernel_resolves()
        }
    {
        eprintln!("openat2 not available here; the race is the fallback's known gap");
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("outside-entry"), "").unwrap();
    fs::write(outside.path().join("victim"), "keep").unwrap();
    let a = dir.path().join("a");
    fs::create_dir_all(a.join("x")).unwrap();
    fs::write(a.join("x/inside-entry"), "").unwrap();
    symlink(outside.path(), a.join("spare")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let a = a.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a.join("x"),
                    nix::fcntl::AT_FDCWD,
                    &a.join("spare"),
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let mut seen_inside = 0;
    for _ in 0..20_000 {
        if let Ok(names) = host.list_dir("/a/x") {
            assert!(
                !names.iter().any(|n| n == "outside-entry"),
                "listed the outside"
            );
            seen_inside += names.iter().filter(|n| *n == "inside-entry").count();
        }
        assert_eq!(host.kind("/a/x/outside-entry"), None, "saw the outside");
        host.remove_file("/a/x/victim").unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(
        outside.path().join("victim").exists(),
        "removed a file outside"
    );
    assert!(
        flips > 100 && seen_inside > 0,
        "no race happened: {flips} flips"
    );
}

/// Issue 13 item 4: a character device planted at /dev/kmsg that is not the kernel log
/// (here /dev/zero's 1:5, which never ends) is refused, naming both numbers, instead of
/// being read forever. Needs root for mknod(2), as the crate's CI runs.
#[test]
fn a_char_device_at_dev_kmsg_that_is_not_the_kernel_log_is_refused() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("dev")).unwrap();
    mknod(
        &d.path().join("dev/kmsg"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 5),
    )
    .expect("mknod needs root (the test suite runs as root)");
    let host = HostRoot::new(d.path()).unwrap();
    let err = host.kernel_log().unwrap_err().to_string();
    assert!(
        err.contains("1:5") && err.contains("1:11") && err.contains("not the kernel log"),
        "{err}"
    );
}
