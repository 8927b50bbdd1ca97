use super::*;
use std::cell::RefCell;
use std::fs;

fn host() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path()).unwrap();
    (dir, host)
}

/// A restorer that records what it was asked to do, and can be told to fail or to
/// finish interrupted changes instead of rolling them back.
struct Recorder {
    kind: &'static str,
    log: RefCell<Vec<String>>,
    fail_on: Option<String>,
    finish: bool,
}

impl Recorder {
    fn new(kind: &'static str) -> Self {
        Recorder {
            kind,
            log: RefCell::new(Vec::new()),
            fail_on: None,
            finish: false,
        }
    }
}

impl Restorer for Recorder {
    fn kind(&self) -> &str {
        self.kind
    }
    fn restore(&self, _host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        if self.fail_on.as_deref() == Some(entry.subject.as_str()) {
            return Err(RestoreError::new("device is busy"));
        }
        self.log
            .borrow_mut()
            .push(format!("restore {}", entry.subject));
        Ok(())
    }
    fn recover(&self, host: &HostRoot, entry: &Entry) -> Result<Recovery, RestoreError> {
        if self.finish {
            self.log
                .borrow_mut()
                .push(format!("finish {}", entry.subject));
            Ok(Recovery::Finished)
        } else {
            self.restore(host, entry)?;
            Ok(Recovery::RolledBack)
        }
    }
}

#[test]
fn entry_is_on_disk_before_the_change_and_survives_reopen() {
    let (dir, host) = host();
    let mut j = Journal::open(&host).unwrap();
    let seq = j
        .begin("vfio.bind", "0000:3b:00.0", "to vfio-pci", "back to nvidia")
        .unwrap();
    // Written to disk by `begin` itself, in state applying.
    let text = fs::read_to_string(dir.path().join("var/lib/cchost/journal.json")).unwrap();
    assert!(text.contains("\"applying\""), "{text}");
    assert!(text.contains("back to nvidia"), "{text}");
    j.applied(seq).unwrap();
    drop(j);
    let j = Journal::open(&host).unwrap();
    assert_eq!(j.entries().len(), 1);
    assert_eq!(j.entries()[0].state, EntryState::Applied);
    assert_eq!(j.find("vfio.bind", "0000:3b:00.0").unwrap().seq, seq);
    assert!(j.find("vfio.bind", "0000:3c:00.0").is_none());
}

#[test]
fn corrupt_journal_is_an_error_naming_the_file() {
    let (dir, host) = host();
    let p = dir.path().join("var/lib/cchost/journal.json");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    for bad in [
        "{not json",
        r#"{"version":1,"next_seq":1,"entries":[],"extra":1}"#,
        r#"{"version":9,"next_seq":1,"entries":[]}"#,
        r#"{"version":1,"next_seq":1,"entries":[{"seq":1,"kind":"k","subject":"s","state":"applied","change":null,"restore":null,"at_unix":0}]}"#,
        // Issue 14.4: the next change would overflow the sequence number.
        r#"{"version":1,"next_seq":18446744073709551615,"entries":[]}"#,
    ] {
        fs::write(&p, bad).unwrap();
        let err = Journal::open(&host).unwrap_err().to_string();
        assert!(err.contains("journal.json"), "{err}");
        assert!(err.contains("corrupt"), "{err}");
        // Nothing was rewritten.
        assert_eq!(fs::read_to_string(&p).unwrap(), bad);
        assert!(Journal::peek(&host).is_err());
    }
}

#[test]
fn undo_goes_newest_first_and_empties_the_journal() {
    let (_dir, host) = host();
    let mut j = Journal::open(&host).unwrap();
    for s in ["a", "b", "c"] {
        let seq = j.begin("t", s, (), ()).unwrap();
        j.applied(seq).unwrap();
    }
    let r = Recorder::new("t");
    let done = undo_all(&mut j, &[&r]).unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(*r.log.borrow(), vec!["restore c", "restore b", "restore a"]);
    assert!(j.entries().is_empty());
    drop(j);
    assert!(Journal::open(&host).unwrap().entries().is_empty());
}

#[test]
fn undo_with_an_unknown_kind_changes_nothing() {
    let (_dir, host) = host();
    let mut j = Journal::open(&host).unwrap();
    let a = j.begin("t", "a", (), ()).unwrap();
    j.applied(a).unwrap();
    let b = j.begin("future.kind", "x", (), ()).unwrap();
    j.applied(b).unwrap();
    let r = Recorder::new("t");
    let err = undo_all(&mut j, &[&r]).unwrap_err().to_string();
    assert!(err.contains("future.kind"), "{err}");
    assert!(r.log.borrow().is_empty());
    assert_eq!(j.entries().len(), 2);
}

#[test]
fn failed_restore_stops_and_keeps_the_entry() {
    let (_dir, host) = host();
    let mut j = Journal::open(&host).unwrap();
    for s in ["a", "b", "c"] {
        let seq = j.begin("t", s, (), ()).unwrap();
        j.applied(seq).unwrap();
    }
    let mut r = Recorder::new("t");
    r.fail_on = Some("b".into());
    let err = undo_all(&mut j, &[&r]).unwrap_err().to_string();
    assert!(err.contains("busy") && err.contains(" b "), "{err}");
    assert_eq!(*r.log.borrow(), vec!["restore c"]);
    let left: Vec<&str> = j.entries().iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(left, vec!["a", "b"]);
    // b is marked as being restored: the next start finishes it.
    assert_eq!(j.find("t", "b").unwrap().state, EntryState::Restoring);
}

#[test]
fn recovery_rolls_back_or_finishes_interrupted_steps() {
    let (_dir, host) = host();
    let mut j = Journal::open(&host).unwrap();
    let a = j.begin("t", "done", (), ()).unwrap();
    j.applied(a).unwrap();
    j.begin("t", "half", (), ()).unwrap();
    let c = j.begin("t", "unrestored", (), ()).unwrap();
    j.applied(c).unwrap();
    j.restoring(c).unwrap();
    j.begin("other", "x", (), ()).unwrap();
    drop(j);

    let mut j = Journal::open(&host).unwrap();
    let r = Recorder::new("t");
    let done = recover(&mut j, &[&r]).unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(*r.log.borrow(), vec!["restore unrestored", "restore half"]);
    let left: Vec<&str> = j.entries().iter().map(|e| e.subject.as_str()).collect();
    // The applied entry stays for undo; the foreign kind is not ours to judge.
    assert_eq!(left, vec!["done", "x"]);

    // A restorer that finishes instead keeps the entry, now applied.
    let mut j2 = j;
    let h = j2.begin("t", "half2", (), ()).unwrap();
    let mut r = Recorder::new("t");
    r.finish = true;
    recover(&mut j2, &[&r]).unwrap();
    assert_eq!(j2.get(h).unwrap().state, EntryState::Applied);
}

#[test]
fn file_change_is_journaled_and_undone() {
    let (dir, host) = host();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/existing.conf"), "old\n").unwrap();
    let mut j = Journal::open(&host).unwrap();
    assert!(write_file(&host, &mut j, "/etc/existing.conf", "new\n", 0o644).unwrap());
    assert!(write_file(&host, &mut j, "/etc/existing.conf", "newer\n", 0o644).unwrap());
    assert!(!write_file(&host, &mut j, "/etc/existing.conf", "newer\n", 0o644).unwrap());
    assert!(
        write_file(
            &host,
            &mut j,
            "/etc/modules-load.d/cchost.conf",
            "vfio_pci\n",
            0o644
        )
        .unwrap()
    );
    assert_eq!(j.entries().len(), 2);
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/existing.conf")).unwrap(),
        "newer\n"
    );
    undo_all(&mut j, &[&FileRestorer]).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/existing.conf")).unwrap(),
        "old\n"
    );
    assert!(!dir.path().join("etc/modules-load.d/cchost.conf").exists());
}

#[test]
fn lock_serialises_two_openers() {
    let (_dir, host) = host();
    let j = Journal::open(&host).unwrap();
    let h2 = host.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _j = Journal::open(&h2).unwrap();
        tx.send(()).unwrap();
    });
    // The second opener waits while the first holds the journal.
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(200))
            .is_err()
    );
    drop(j);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    t.join().unwrap();
}

#[test]
fn file_write_keeps_the_existing_mode_and_undo_restores_it() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, host) = host();
    let p = dir.path().join("etc/modules-load.d/x.conf");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, "old\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let mut j = Journal::open(&host).unwrap();
    assert!(write_file(&host, &mut j, "/etc/modules-load.d/x.conf", "new\n", 0o644).unwrap());
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    undo_all(&mut j, &[&FileRestorer]).unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "old\n");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}

/// Item 6: undo never destroys an operator's edit made after cchost's change.
#[test]
fn undo_refuses_over_a_later_edit_and_keeps_an_edit_elsewhere() {
    let (dir, host) = host();
    let p = dir.path().join("etc/default/grub");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, "A=1\nCMD=\"quiet\"\n").unwrap();
    let mut j = Journal::open(&host).unwrap();
    assert!(
        write_file(
            &host,
            &mut j,
            "/etc/default/grub",
            "A=1\nCMD=\"quiet iommu=on\"\n",
            0o644
        )
        .unwrap()
    );
    // The operator edits the same line afterwards: undo refuses, names the file, and
    // changes nothing; the entry stays for a later undo.
    fs::write(&p, "A=1\nCMD=\"quiet iommu=on nosmt\"\n").unwrap();
    let e = undo_all(&mut j, &[&FileRestorer]).unwrap_err().to_string();
    assert!(
        e.contains("/etc/default/grub") && e.contains("edited"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "A=1\nCMD=\"quiet iommu=on nosmt\"\n"
    );
    assert_eq!(j.entries().len(), 1);
    assert_eq!(j.entries()[0].state, EntryState::Applied);
    // An edit of another line is kept while cchost's line is taken back.
    fs::write(&p, "A=2\nCMD=\"quiet iommu=on\"\n").unwrap();
    undo_all(&mut j, &[&FileRestorer]).unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "A=2\nCMD=\"quiet\"\n");
    // A file cchost created and the operator then edited is not removed.
    assert!(write_file(&host, &mut j, "/etc/new.conf", "x\n", 0o644).unwrap());
    fs::write(dir.path().join("etc/new.conf"), "x\nmine\n").unwrap();
    assert!(undo_all(&mut j, &[&FileRestorer]).is_err());
    assert!(dir.path().join("etc/new.conf").exists());
}
