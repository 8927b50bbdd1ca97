//! The VM harness itself: steps, exit codes, timeouts, fetches, the guest's modules
//! and the real modprobe.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::harness::Vm;

#[test]
fn guest_runs_steps_and_reports_output_and_exit_codes() {
    let run = Vm::new()
        .file("/etc/ccvm-test.txt", "hello from the host\n")
        .step_timeout(Duration::from_secs(10))
        .cmd("cat /etc/ccvm-test.txt; echo to-stderr >&2")
        .cmd("exit 3")
        .cmd("cchost --version")
        .cmd("modprobe vfio_pci && test -c /dev/vfio/vfio && lsmod")
        .cmd("readlink -f /sbin/modprobe; cat /proc/sys/kernel/modprobe; cat /proc/cmdline")
        .cmd("sleep 60")
        .cmd("echo still running after a killed step")
        .cmd("modprobe vhost_vsock && test -c /dev/vhost-vsock")
        .cmd("mkdir -p /tmp/out/sub && echo data > /tmp/out/sub/f && ln -s ../sub/f /tmp/out/link && echo single > /tmp/one")
        .fetch("/tmp/out")
        .fetch("/tmp/one")
        .run();
    eprintln!(
        "kernel boot {:.1}s, boot + steps {:.1}s",
        run.boot_secs,
        run.elapsed.as_secs_f64()
    );
    let s0 = run.step(0).assert_success();
    assert_eq!(s0.stdout(), "hello from the host\n");
    assert_eq!(s0.stderr(), "to-stderr\n");
    run.step(1).assert_code(3);
    let v = run.step(2).assert_success().stdout();
    assert!(v.starts_with("cchost "), "{v}");
    let lsmod = run.step(3).assert_success().stdout();
    for m in ["vfio_pci", "vfio_pci_core", "vfio", "irqbypass"] {
        assert!(
            lsmod
                .lines()
                .any(|l| l.split_whitespace().next() == Some(m)),
            "{m} missing:\n{lsmod}"
        );
    }
    let lines = run.step(4).assert_success().lines();
    assert_eq!(lines[0], "/bin/kmod");
    assert_eq!(lines[1], "/sbin/modprobe");
    assert!(lines[2].contains("intel_iommu=on"), "{}", lines[2]);
    // The step timeout kills a hung step and the run goes on.
    run.step(5).assert_code(137);
    run.step(6).assert_success();
    run.step(7).assert_success();
    run.step(8).assert_success();
    let out = run.fetched("/tmp/out");
    assert_eq!(
        std::fs::read_to_string(out.join("sub/f")).unwrap(),
        "data\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        std::path::Path::new("../sub/f")
    );
    assert_eq!(
        std::fs::read_to_string(run.fetched("/tmp/one")).unwrap(),
        "single\n"
    );
}

#[test]
fn a_guest_that_does_not_finish_is_an_error_not_a_hang() {
    let err = Vm::new()
        .timeout(Duration::from_secs(3))
        .cmd("sleep 600")
        .try_run()
        .expect_err("a guest sleeping 600 s cannot finish in 3 s");
    assert!(
        err.message.contains("did not finish within"),
        "{}",
        err.message
    );
    assert!(err.message.contains("guest console"), "{}", err.message);
}
