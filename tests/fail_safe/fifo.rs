//! Item 4: nothing blocks on a file. A FIFO where cchost expects a file used to hang
//! every command forever (an open for reading waits for a writer).

use crate::support::*;

const HOST: &str = "host/tdx-8xh100-4nvswitch";

fn fifo_at_is_named_not_waited_on(host_path: &str, args: &[&str]) {
    let root = copy_host(&fixture(HOST));
    plant_fifo(root.path(), host_path);
    let run = cchost(root.path(), args);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("FIFO"),
        "{host_path}: the output does not say a FIFO is there: {run:?}"
    );
    assert_ne!(run.code, Some(101), "panicked: {run:?}");
}

#[test]
fn fifo_at_proc_cpuinfo_does_not_hang_check() {
    fifo_at_is_named_not_waited_on("/proc/cpuinfo", &["check"]);
}

#[test]
fn fifo_at_proc_cmdline_does_not_hang_check() {
    fifo_at_is_named_not_waited_on("/proc/cmdline", &["check"]);
}

#[test]
fn fifo_at_dev_kmsg_does_not_hang_inventory() {
    fifo_at_is_named_not_waited_on("/dev/kmsg", &["inventory"]);
}

#[test]
fn fifo_as_a_sysfs_attribute_does_not_hang_gpu_list() {
    fifo_at_is_named_not_waited_on(
        "/sys/devices/pci0000:00/0000:00:1c.0/vendor",
        &["gpu", "list"],
    );
}

#[test]
fn fifo_as_the_config_file_is_an_error_not_a_hang() {
    let root = copy_host(&fixture(HOST));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = cchost_with(root.path(), &cfg, &["check"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("FIFO"), "{run:?}");
}
