//! /etc/default/grub: cchost's reading and editing of the two command-line variables.
//! Always: an edit of a file cchost can read gives a file it reads back with the edit
//! done, and editing again changes nothing. With CCHOST_FUZZ_BASH=1 also against bash
//! (slow: a process per input): what cchost reads is what sourcing gives, and every
//! file it writes passes `bash -n` and sources to what cchost meant.
#![no_main]

use std::io::Write;
use std::process::Command;

use cchost::hostcfg::args::{ArgEdit, ArgMatch, KernelArg};
use cchost::hostcfg::grubfile::{edit_files, effective_args, effective_values};
use libfuzzer_sys::fuzz_target;

fn bash_values(text: &str) -> Option<(String, String)> {
    let mut f = tempfile();
    f.1.write_all(text.as_bytes()).unwrap();
    let path = f.0.clone();
    if !Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .ok()?
        .status
        .success()
    {
        return None;
    }
    let out = Command::new("bash")
        .env_clear()
        .arg("-c")
        .arg("set -e; . \"$1\"; printf '%s\\0%s' \"$GRUB_CMDLINE_LINUX\" \"$GRUB_CMDLINE_LINUX_DEFAULT\"")
        .arg("bash")
        .arg(&path)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() || !out.stderr.is_empty() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let (a, b) = s.split_once('\0')?;
    Some((a.to_string(), b.to_string()))
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let p = std::env::temp_dir().join(format!("cchost-fuzz-grub-{}", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    (p, f)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = vec![("/etc/default/grub".to_string(), text.to_string())];
    // bash runs only files made of lines cchost reads itself (blank, comment, one of
    // the two assignments): any other line is arbitrary shell, and sourcing fuzz input
    // must not run commands.
    let bash = std::env::var_os("CCHOST_FUZZ_BASH").is_some()
        && text.lines().all(|l| {
            let t = l.trim_start();
            let t = t.strip_prefix("export ").unwrap_or(t).trim_start();
            t.is_empty()
                || t.starts_with('#')
                || t.starts_with("GRUB_CMDLINE_LINUX=")
                || t.starts_with("GRUB_CMDLINE_LINUX_DEFAULT=")
        });
    let Ok(values) = effective_values(&files) else {
        return;
    };
    if bash {
        if let Some(b) = bash_values(text) {
            assert_eq!(values, b, "read of {text:?}");
        }
    }
    let edit = ArgEdit {
        add: vec![
            KernelArg::kv("kvm_intel.tdx", "1"),
            KernelArg::flag("nokaslr"),
        ],
        remove: vec![ArgMatch::parse("quiet")],
    };
    let Ok(out) = edit_files(&files, &edit) else {
        return;
    };
    let again: Vec<(String, String)> = vec![(files[0].0.clone(), out[0].clone())];
    let args = effective_args(&again).expect("cchost reads back what it wrote");
    assert!(
        edit.satisfied_by(&args),
        "{text:?} -> {:?} gives {args:?}",
        out[0]
    );
    assert_eq!(edit_files(&again, &edit).unwrap(), out, "idempotent");
    if bash {
        let written = effective_values(&again).unwrap();
        assert_eq!(
            bash_values(&out[0]),
            Some(written),
            "{text:?} -> {:?}",
            out[0]
        );
    }
});
