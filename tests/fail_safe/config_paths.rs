//! Item 1: a config cannot aim cchost at arbitrary host files. Every hostile path is an
//! error naming its key (exit 2) before anything is touched.

use crate::support::*;

#[test]
fn hostile_config_paths_are_refused_and_nothing_is_touched() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    let shadow = root.path().join("etc/shadow");
    std::fs::create_dir_all(shadow.parent().unwrap()).unwrap();
    std::fs::write(&shadow, "root:*:19000:0:99999:7:::\n").unwrap();
    for (key, toml) in [
        (
            "labels.feature_file",
            "[labels]\nbackend = \"file\"\nfeature_file = \"/etc/shadow\"\n",
        ),
        (
            "dcap.qgs_conf_path",
            "[dcap]\nqgs_conf_path = \"/etc/shadow\"\n",
        ),
        (
            "dcap.qcnl_conf_path",
            "[dcap]\nqcnl_conf_path = \"/etc/shadow\"\n",
        ),
        (
            "kernel.modules_load_file",
            "[kernel]\nmodules_load_file = \"/etc/modules-load.d/../../etc/shadow.conf\"\n",
        ),
    ] {
        let cfg = config(toml);
        for args in [&["run"][..], &["dcap", "configure"], &["apply"]] {
            let run = cchost_with(root.path(), cfg.path(), args);
            assert_eq!(run.code, Some(2), "{key} {args:?}: {run:?}");
            assert!(run.stderr.contains(key), "{key} {args:?}: {run:?}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&shadow).unwrap(),
        "root:*:19000:0:99999:7:::\n"
    );
    assert!(!root.path().join("etc/shadow.conf").exists());
}
