//! vfio binding on a real kernel: the emulated `edu` (1234:11e8) and `pci-testdev`
//! (1b36:0005) devices stand in for GPUs, selected through the same `[match]` config
//! that selects NVIDIA GPUs. `pci-testdev` starts on `pci-stub` (with a
//! driver_override), `edu` without a driver, so undo has both kinds of original to
//! restore.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::harness::{FIND_STAND_INS, STAND_IN_MATCH, StepResult, Vm};

/// Sourced by every step after [`FIND_STAND_INS`]: prints the devices' state.
const LIB: &str = r#"
# "STATE bdf driver override node": node = yes when /dev/vfio/<group> is a char device.
state() {
  d=/sys/bus/pci/devices/$1; drv=$(readlink $d/driver); g=$(grp $1)
  node=no; [ -c /dev/vfio/$g ] && node=yes
  echo "STATE $1 ${drv##*/} $(cat $d/driver_override) $node"
}
both() { state $EDU; state $TD; }
# The original state: edu without a driver, pci-testdev on pci-stub by override.
setup() {
  modprobe pci_stub || return 1
  echo pci-stub > /sys/bus/pci/devices/$TD/driver_override
  echo $TD > /sys/bus/pci/drivers/pci-stub/bind
}
"#;

fn lib(script: &str) -> String {
    format!(". /etc/vfio-test.sh\n{script}")
}

/// The (driver, override, node) of a `state` line; driver "" = none, "(null)" = no override.
fn parse_state(line: &str) -> (String, String, String) {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "state line {line:?}");
    (f[2].to_string(), f[3].to_string(), f[4].to_string())
}

fn states(step: &StepResult) -> Vec<(String, String, String)> {
    step.lines()
        .iter()
        .filter(|l| l.starts_with("STATE "))
        .map(|l| parse_state(l))
        .collect()
}

fn original() -> Vec<(String, String, String)> {
    vec![
        ("".into(), "(null)".into(), "no".into()),
        ("pci-stub".into(), "pci-stub".into(), "no".into()),
    ]
}

fn on_vfio() -> Vec<(String, String, String)> {
    vec![
        ("vfio-pci".into(), "vfio-pci".into(), "yes".into()),
        ("vfio-pci".into(), "vfio-pci".into(), "yes".into()),
    ]
}

#[test]
fn bind_unbind_undo_and_refusals_on_a_real_kernel() {
    let run = Vm::new()
        .config(STAND_IN_MATCH)
        .file("/etc/vfio-test.sh", format!("{FIND_STAND_INS}{LIB}"))
        // 0: the original state
        .cmd(&lib("setup && both && echo EDU=$EDU TD=$TD"))
        // 1: a dry run changes nothing (not even the state directory); list sees both
        .cmd(&lib("cchost gpu bind --all --dry-run >&2 && test ! -e /var/lib/cchost && both >&2 && cchost gpu list --json"))
        // 2: bind everything (vfio-pci is not loaded yet: cchost loads it)
        .cmd(&lib("cchost gpu bind --all && both && lsmod | cut -d' ' -f1 | grep -x vfio_pci && cat /var/lib/cchost/journal.json"))
        // 3: binding again changes nothing
        .cmd(&lib("cchost gpu bind --all --json; rc=$?; both; exit $rc"))
        // 4: a process holds edu's group node: unbind is refused, nothing changes
        .cmd(&lib(r#"
sleep 1000 < /dev/vfio/$(grp $EDU) & pid=$!
while [ "$(readlink /proc/$pid/fd/0)" != /dev/vfio/$(grp $EDU) ]; do sleep 0.05; done
cchost gpu unbind --all; echo "rc=$?"
both
cchost undo; echo "undo rc=$?"
both
kill $pid"#))
        // 5: unbind: edu back to no driver, pci-testdev back to pci-stub (+ override)
        .cmd(&lib("cchost gpu unbind --all && both && cat /var/lib/cchost/journal.json"))
        // 6: a process holds pci-testdev's config space: bind is refused for both
        .cmd(&lib(r#"
sleep 1000 < /sys/bus/pci/devices/$TD/config & pid=$!
while [ "$(readlink /proc/$pid/fd/0)" != "$(readlink -f /sys/bus/pci/devices/$TD)/config" ]; do sleep 0.05; done
cchost gpu bind $EDU $TD; echo "rc=$?"
both
kill $pid"#))
        // 7: addresses that are missing or not matched are refused
        .cmd(&lib("cchost gpu bind 0000:00:00.0 0000:99:00.0 $EDU; echo rc=$?; both"))
        // 8: bind by address, then undo restores the originals
        .cmd(&lib("cchost gpu bind $EDU $TD >/dev/null && both && cchost undo && both && cat /var/lib/cchost/journal.json"))
        // 9: a corrupt journal stops cchost before it changes anything
        .cmd(&lib("echo '{broken' > /var/lib/cchost/journal.json; cchost gpu bind --all; echo rc=$?; cchost undo; echo rc=$?; both; cat /var/lib/cchost/journal.json"))
        .run();

    let s0 = run.step(0).assert_success();
    assert_eq!(states(s0), original(), "{s0}");

    let s1 = run.step(1).assert_success();
    assert_eq!(
        s1.stderr().matches("would bind to vfio-pci").count(),
        2,
        "{s1}"
    );
    assert!(
        s1.stderr().contains("STATE") && !s1.stderr().contains("vfio-pci yes"),
        "{s1}"
    );
    let list = s1.json();
    let devs = list["devices"].as_array().expect("devices");
    assert_eq!(devs.len(), 2, "{list}");
    assert!(
        devs.iter()
            .all(|d| d["kind"] == "gpu" && d["iommu_group"].is_u64())
    );

    let s2 = run.step(2).assert_success();
    assert_eq!(states(s2), on_vfio(), "{s2}");
    assert!(s2.stdout().contains("\"vfio.bind\""), "{s2}");
    assert!(
        s2.stdout().contains("\"pci-stub\""),
        "original recorded: {s2}"
    );

    let s3 = run.step(3).assert_success();
    assert_eq!(states(s3), on_vfio(), "{s3}");
    assert_eq!(s3.stdout().matches("already_bound").count(), 2, "{s3}");

    let s4 = run.step(4).assert_success();
    assert!(s4.stdout().contains("rc=1"), "{s4}");
    assert!(s4.stderr().contains("in use"), "{s4}");
    assert!(s4.stderr().contains("sleep"), "holder named: {s4}");
    let st = states(s4);
    assert_eq!(st[..2], on_vfio()[..], "nothing changed: {s4}");
    // undo goes newest first: pci-testdev is restored, then it stops at the held edu.
    assert!(s4.stdout().contains("undo rc=1"), "{s4}");
    assert_eq!(st[2], on_vfio()[0], "{s4}");
    assert_eq!(st[3], original()[1], "{s4}");

    let s5 = run.step(5).assert_success();
    assert_eq!(states(s5), original(), "{s5}");
    assert!(s5.stdout().contains("\"entries\": []"), "{s5}");

    let s6 = run.step(6).assert_success();
    assert!(s6.stdout().contains("rc=1"), "{s6}");
    assert!(s6.stderr().contains("/config"), "{s6}");
    assert_eq!(states(s6), original(), "nothing changed: {s6}");

    let s7 = run.step(7).assert_success();
    assert!(s7.stdout().contains("rc=1"), "{s7}");
    assert!(
        s7.stderr().contains("0000:99:00.0: no such PCI device"),
        "{s7}"
    );
    assert!(
        s7.stderr().contains("0000:00:00.0") && s7.stderr().contains("not a GPU"),
        "{s7}"
    );
    assert_eq!(states(s7), original(), "nothing changed: {s7}");

    let s8 = run.step(8).assert_success();
    let st = states(s8);
    assert_eq!(st[..2], on_vfio()[..], "{s8}");
    assert_eq!(st[2..], original()[..], "{s8}");
    assert!(s8.stdout().contains("\"entries\": []"), "{s8}");

    let s9 = run.step(9).assert_success();
    assert_eq!(s9.stdout().matches("rc=2").count(), 2, "{s9}");
    assert!(s9.stderr().contains("/var/lib/cchost/journal.json"), "{s9}");
    assert!(s9.stderr().contains("corrupt"), "{s9}");
    assert_eq!(states(s9), original(), "nothing changed: {s9}");
    assert!(
        s9.stdout().contains("{broken"),
        "journal left as it was: {s9}"
    );
}

/// Steps of one device's bind (journal, 4 sysfs writes + check, node, commit).
const STEPS_PER_DEVICE: u32 = 7;

/// `bind --all` binds what it can: with pci-testdev held (its config space open),
/// edu is still bound, the refusal names pci-testdev, the exit code says "not all";
/// undo restores edu and leaves pci-testdev as it was.
#[test]
fn bind_all_binds_what_it_can_and_names_each_refusal() {
    let run = Vm::new()
        .config(STAND_IN_MATCH)
        .file("/etc/vfio-test.sh", format!("{FIND_STAND_INS}{LIB}"))
        .cmd(&lib(r#"setup || exit 9
sleep 1000 < /sys/bus/pci/devices/$TD/config & pid=$!
while [ "$(readlink /proc/$pid/fd/0)" != "$(readlink -f /sys/bus/pci/devices/$TD)/config" ]; do sleep 0.05; done
echo TD=$TD
cchost gpu bind --all; echo "rc=$?"
both
kill $pid
cchost undo; echo "undo rc=$?"
both"#))
        .run();
    let s = run.step(0).assert_success();
    assert!(s.stdout().contains("rc=1"), "{s}");
    let td = s
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("TD=").map(str::to_string))
        .expect("TD printed");
    let refusal = s
        .stderr()
        .lines()
        .find(|l| l.starts_with(&td))
        .unwrap_or_else(|| panic!("no refusal for {td}: {s}"))
        .to_string();
    assert!(
        refusal.contains("/config") && refusal.contains("the other devices are bound"),
        "{refusal}"
    );
    let st = states(s);
    assert_eq!(st[0], on_vfio()[0], "edu bound: {s}");
    assert_eq!(st[1], original()[1], "pci-testdev untouched: {s}");
    assert!(s.stdout().contains("undo rc=0"), "{s}");
    assert_eq!(st[2..], original()[..], "undo restored edu: {s}");
}

#[test]
fn sigkill_after_every_step_of_a_two_device_bind_is_recovered() {
    let mut vm = Vm::new()
        .config(STAND_IN_MATCH)
        .file("/etc/vfio-test.sh", format!("{FIND_STAND_INS}{LIB}"))
        .cmd(&lib("setup && both"));
    let total = 2 * STEPS_PER_DEVICE;
    for n in 1..=total {
        vm = vm.cmd(&lib(&format!(
            r#"
CCHOST_TEST_KILL_AFTER_STEP={n} cchost gpu bind --all >/dev/null; echo "killed rc=$?"
both
cchost gpu bind --all >/dev/null; echo "rebind rc=$?"
both
cchost undo >/dev/null; echo "undo rc=$?"
both
cat /var/lib/cchost/journal.json"#
        )));
    }
    // A kill in the middle of an unbind (after its journal write) and of an undo.
    vm = vm.cmd(&lib(r#"
cchost gpu bind --all >/dev/null
CCHOST_TEST_KILL_AFTER_STEP=1 cchost gpu unbind --all >/dev/null; echo "killed rc=$?"
both
cchost undo >/dev/null; echo "undo rc=$?"
both"#));
    let run = vm.run();
    assert_eq!(states(run.step(0).assert_success()), original());
    for n in 1..=total {
        let s = run.step(n as usize).assert_success();
        let out = s.stdout();
        assert!(out.contains("killed rc=137"), "step {n}: {s}");
        assert!(out.contains("rebind rc=0"), "step {n}: {s}");
        assert!(out.contains("undo rc=0"), "step {n}: {s}");
        let st = states(s);
        assert_eq!(st.len(), 6, "step {n}: {s}");
        // After the restart: both bound, whatever the kill left.
        assert_eq!(st[2..4], on_vfio()[..], "after rebind, kill at {n}: {s}");
        // Undo restores the original drivers and overrides.
        assert_eq!(st[4..6], original()[..], "after undo, kill at {n}: {s}");
        assert!(out.contains("\"entries\": []"), "step {n}: {s}");
    }
    let s = run.step(total as usize + 1).assert_success();
    assert!(s.stdout().contains("killed rc=137"), "{s}");
    assert!(s.stdout().contains("undo rc=0"), "{s}");
    assert_eq!(states(s)[2..], original()[..], "{s}");
}
