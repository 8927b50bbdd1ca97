//! Item 3: a host root without sys/ (or proc/, dev/) is named as such: exit 2, and no
//! hardware remedy built from files that are simply absent.

use crate::support::*;

/// Words of remedies and verdicts that only a whole host could justify.
const HARDWARE_WORDS: [&str; 4] = ["VT-d", "BIOS", "lacks TDX", "every file read"];

#[test]
fn a_root_without_sys_proc_or_dev_is_refused_with_exit_2() {
    for missing in ["sys", "proc", "dev"] {
        let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
        std::fs::remove_dir_all(root.path().join(missing)).unwrap();
        for args in [&["check"][..], &["inventory"], &["plan"], &["gpu", "list"]] {
            let run = cchost(root.path(), args);
            assert_eq!(run.code, Some(2), "{missing} {args:?}: {run:?}");
            assert!(
                run.stderr.contains("not a whole host")
                    && run.stderr.contains(&format!("{missing}/")),
                "{missing} {args:?}: {run:?}"
            );
            for w in HARDWARE_WORDS {
                assert!(
                    !run.stdout.contains(w),
                    "{missing} {args:?}: remedy {w:?}: {run:?}"
                );
            }
        }
    }
}

#[test]
fn an_empty_sys_is_refused_too() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    std::fs::remove_dir_all(root.path().join("sys")).unwrap();
    std::fs::create_dir(root.path().join("sys")).unwrap();
    let run = cchost(root.path(), &["check"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("sys/"), "{run:?}");
}
