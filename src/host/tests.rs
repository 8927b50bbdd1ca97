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
