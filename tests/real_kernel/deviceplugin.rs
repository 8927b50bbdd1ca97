//! The CDI spec and the device plugin on a real kernel: after `cchost gpu bind`, the
//! spec names the guest's real /dev/vfio nodes and `cchost run` advertises exactly
//! those devices; unbinding one (a real driver unbind, seen through kernel uevents)
//! turns it Unhealthy and drops it from the spec, rebinding heals it, and SIGTERM
//! removes the socket. `edu` and `pci-testdev` stand in for GPUs through `[match]`.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::harness::{FIND_STAND_INS, STAND_IN_MATCH, Vm};

const PLUGIN: &str = "\n[device_plugin]\nmode = \"on\"\nrescan_interval_s = 0\n";

fn config() -> String {
    format!("{STAND_IN_MATCH}{PLUGIN}")
}

const LIB: &str = r#"
SPEC=/var/run/cdi/cchost-nvidia.com-pgpu.json
SOCK=/var/lib/kubelet/device-plugins/cchost-nvidia.com-pgpu.sock
# Wait (at most 5 s) until the plugin reports device $1 with health $2 (query prints
# the keys of a device sorted: health, id, numa).
wait_health() {
  i=0
  while [ $i -lt 50 ]; do
    cchost device-plugin query | tr -d ' \n' | grep -q "\"health\":\"$2\",\"id\":\"$1\"" && return 0
    sleep 0.1; i=$((i+1))
  done
  return 1
}
"#;

fn lib(script: &str) -> String {
    format!(". /etc/dp-test.sh\n{script}")
}

#[test]
fn cdi_and_plugin_follow_real_vfio_binding() {
    let run = Vm::new()
        .config(&config())
        .file("/etc/dp-test.sh", format!("{FIND_STAND_INS}{LIB}"))
        // 0: bind, write the spec, show the real nodes
        .cmd(&lib(r#"
cchost gpu bind --all >/dev/null || exit 1
cchost cdi generate || exit 1
echo "GROUPS $(grp $EDU) $(grp $TD)"
for g in $(grp $EDU) $(grp $TD); do [ -c /dev/vfio/$g ] && echo "CHARDEV /dev/vfio/$g"; done
[ -c /dev/vfio/vfio ] && echo "CHARDEV /dev/vfio/vfio"
cat $SPEC"#))
        // 1: cchost run serves; the plugin advertises the same IDs; Allocate names them
        .cmd(&lib(r#"
cchost run 2>/tmp/run.log & echo $! > /tmp/run.pid
i=0; while [ ! -S $SOCK ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
cchost device-plugin query --allocate $(grp $EDU),$(grp $TD)"#))
        // 2: unbind edu for real: the uevent makes it Unhealthy and drops it from the spec
        .cmd(&lib(r#"
cchost gpu unbind $EDU >/dev/null || exit 1
wait_health $(grp $EDU) Unhealthy; echo "unhealthy rc=$?"
cchost device-plugin query
cat $SPEC"#))
        // 3: bind it again: Healthy, back in the spec
        .cmd(&lib(r#"
cchost gpu bind $EDU >/dev/null || exit 1
wait_health $(grp $EDU) Healthy; echo "healthy rc=$?"
cat $SPEC"#))
        // 4: SIGTERM: socket gone, spec still whole
        .cmd(&lib(r#"
kill -TERM $(cat /tmp/run.pid)
i=0; while kill -0 $(cat /tmp/run.pid) 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
[ -e $SOCK ] && echo "SOCKET LEFT" || echo "SOCKET GONE"
cat $SPEC
cat /tmp/run.log"#))
        .run();

    let s0 = run.step(0).assert_success();
    let out = s0.stdout();
    let groups: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("GROUPS "))
        .expect("groups")
        .split(' ')
        .map(str::to_string)
        .collect();
    for g in &groups {
        assert!(out.contains(&format!("CHARDEV /dev/vfio/{g}")), "{s0}");
    }
    let spec_start = out.find('{').expect("spec JSON");
    let spec: serde_json::Value = serde_json::from_str(&out[spec_start..]).expect("spec JSON");
    assert_eq!(spec["kind"], "nvidia.com/pgpu");
    let mut names: Vec<String> = spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut want = groups.clone();
    want.sort();
    assert_eq!(names, want, "CDI names are the real IOMMU groups: {s0}");
    for d in spec["devices"].as_array().unwrap() {
        let n = d["name"].as_str().unwrap();
        assert_eq!(
            d["containerEdits"]["deviceNodes"],
            serde_json::json!([{"path": "/dev/vfio/vfio"}, {"path": format!("/dev/vfio/{n}")}]),
            "{s0}"
        );
    }

    let q = run.step(1).assert_success().json();
    let mut ids: Vec<String> = q["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["health"], "Healthy", "{q}");
            d["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, want, "plugin IDs == CDI names: {q}");
    let cdi: Vec<&str> = q["allocate"]["cdi_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        cdi,
        [
            format!("nvidia.com/pgpu={}", groups[0]),
            format!("nvidia.com/pgpu={}", groups[1])
        ],
        "{q}"
    );

    let s2 = run.step(2).assert_success();
    assert!(s2.stdout().contains("unhealthy rc=0"), "{s2}");
    let edu = &groups[0];
    let spec_text = &s2.stdout()[s2.stdout().rfind("\"cdiVersion\"").expect("spec")..];
    assert!(
        !spec_text.contains(&format!("/dev/vfio/{edu}\"")),
        "edu dropped from the spec: {s2}"
    );
    assert!(
        spec_text.contains(&format!("/dev/vfio/{}\"", groups[1])),
        "{s2}"
    );

    let s3 = run.step(3).assert_success();
    assert!(s3.stdout().contains("healthy rc=0"), "{s3}");
    assert!(
        s3.stdout().contains(&format!("/dev/vfio/{edu}\"")),
        "edu back in the spec: {s3}"
    );

    let s4 = run.step(4).assert_success();
    assert!(s4.stdout().contains("SOCKET GONE"), "{s4}");
    assert!(
        s4.stdout().contains("\"kind\": \"nvidia.com/pgpu\""),
        "{s4}"
    );
}

/// `vfio.bind_on_start`: `cchost run` alone moves the matched devices to vfio-pci (the
/// real driver bind, journaled) and serves them; `cchost undo` afterwards puts the
/// original drivers back.
#[test]
fn run_binds_matched_devices_at_start_and_undo_restores_them() {
    let config = format!("{}\n[vfio]\nbind_on_start = true\n", config());
    let run = Vm::new()
        .config(&config)
        .file("/etc/dp-test.sh", format!("{FIND_STAND_INS}{LIB}"))
        .cmd(&lib(r#"
drv() { d=$(readlink /sys/bus/pci/devices/$1/driver); echo ${d##*/}; }
echo "BEFORE $(drv $EDU) $(drv $TD)"
cchost run 2>/tmp/run.log & echo $! > /tmp/run.pid
i=0; while [ ! -S $SOCK ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
echo "DURING $(drv $EDU) $(drv $TD)"
cchost device-plugin query | tr -d ' \n'; echo
kill -TERM $(cat /tmp/run.pid)
i=0; while kill -0 $(cat /tmp/run.pid) 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
cchost undo >/dev/null || exit 1
echo "AFTER $(drv $EDU) $(drv $TD)"
cat /tmp/run.log"#))
        .run();
    let s = run.step(0).assert_success();
    let out = s.stdout();
    let line = |tag: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} in {s}"))
            .to_string()
    };
    let before = line("BEFORE ");
    assert_ne!(before, "vfio-pci vfio-pci", "{s}");
    assert_eq!(line("DURING "), "vfio-pci vfio-pci", "{s}");
    assert_eq!(line("AFTER "), before, "undo restores the drivers: {s}");
    assert_eq!(
        out.matches("\"health\":\"Healthy\"").count(),
        2,
        "both devices served: {s}"
    );
}
