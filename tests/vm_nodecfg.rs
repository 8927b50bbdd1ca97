//! Node configuration on a real kernel: `cchost apply` loads vhost_vsock with the
//! guest's own modprobe (kmod) and persists it, `/dev/vhost-vsock` appears, a second
//! apply changes nothing, `cchost undo` puts everything back.

#[path = "vm/harness.rs"]
mod harness;

use harness::Vm;
use serde_json::Value;

fn actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vhost_vsock_loaded_persisted_and_undone_on_the_real_kernel() {
    let run = Vm::new()
        .cmd("cchost plan --json")
        .cmd("cchost apply")
        .cmd("grep -w '^vhost_vsock' /proc/modules | cut -d' ' -f1; test -c /dev/vhost-vsock && echo chardev; cat /etc/modules-load.d/cchost.conf")
        .cmd("cchost apply --json")
        .cmd("cchost plan --json")
        .cmd("cchost undo")
        .cmd("grep -c -w '^vhost_vsock' /proc/modules; test -e /dev/vhost-vsock || echo no-node; test -e /etc/modules-load.d/cchost.conf || echo no-file")
        .run();
    let before = run.step(0).assert_code(1).json();
    assert_eq!(
        actions(&before),
        ["load-module", "persist-modules"],
        "{before:#}"
    );
    assert_eq!(before["actions"][0]["module"], "vhost_vsock");
    let applied = run.step(1).assert_success().stdout();
    assert!(
        applied.contains("done: load module vhost_vsock"),
        "{applied}"
    );
    assert_eq!(
        run.step(2).assert_success().lines(),
        ["vhost_vsock", "chardev", "vhost_vsock"]
    );
    let again = run.step(3).assert_success().json();
    assert_eq!(again["done"], serde_json::json!([]), "{again:#}");
    let after = run.step(4).assert_success().json();
    assert!(actions(&after).is_empty(), "{after:#}");
    assert_eq!(after["labels"]["cchost.io/vsock"], "true");
    run.step(5).assert_success();
    assert_eq!(run.step(6).lines(), ["0", "no-node", "no-file"]);
}
