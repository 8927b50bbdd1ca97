//! The host door on the real kernel (issue 13 item 13): a host root whose `sys` is a
//! link leading out of it (to the guest's real /sys, absolutely or by `../..`) is
//! resolved inside the root by openat2(RESOLVE_IN_ROOT) — a loop there — so cchost
//! reports the root as not a whole host instead of reading the real /sys.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::harness::Vm;

#[test]
fn a_sys_link_out_of_the_host_root_is_not_followed_on_the_real_kernel() {
    let setup = "mkdir -p /tmp/r/proc /tmp/r/dev /tmp/q/proc /tmp/q/dev /tmp/q/x/y \
                 && cp /proc/cpuinfo /proc/cmdline /tmp/r/proc/ && cp /proc/cpuinfo /proc/cmdline /tmp/q/proc/ \
                 && touch /tmp/r/dev/null /tmp/q/dev/null \
                 && ln -s /sys /tmp/r/sys && ln -s ../../../sys /tmp/q/sys && ls /sys/bus/pci/devices | head -1";
    let run = Vm::new()
        .cmd(setup)
        .cmd("cchost --host-root /tmp/r inventory --json")
        .cmd("cchost --host-root /tmp/q inventory --json")
        .cmd("cchost --host-root / inventory --json >/dev/null")
        .run();
    let first = run.step(0).assert_success().stdout();
    assert!(
        !first.trim().is_empty(),
        "the guest has PCI devices: {first}"
    );
    for i in [1, 2] {
        let s = run.step(i);
        s.assert_code(2);
        let err = s.stderr();
        assert!(
            err.contains("not a whole host") && err.contains("sys"),
            "{err}"
        );
    }
    // The same command on the real root reads the real /sys.
    run.step(3).assert_success();
}
