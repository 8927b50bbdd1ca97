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
