//! `cchost gpu cc` on fixture hosts laid out like sysfs (symlinks as the kernel makes
//! them). `resource0` is a sparse regular file: the query path really maps and reads it;
//! the refusal tests prove that nothing is written to it. No GPU is touched.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

const BDF: &str = "0000:3b:00.0";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// An H100 SXM5 (10de:2330) below a root port, optionally bound to `driver`.
    fn h100(driver: Option<&str>, regs: &[(u64, u32)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let real = root.join("sys/devices/pci0000:00/0000:00:01.0").join(BDF);
        std::fs::create_dir_all(&real).unwrap();
        for (name, val) in [
            ("vendor", "0x10de\n"),
            ("device", "0x2330\n"),
            ("class", "0x030200\n"),
            ("numa_node", "0\n"),
            ("driver_override", "(null)\n"),
        ] {
            std::fs::write(real.join(name), val).unwrap();
        }
        // Config space: vendor/device, COMMAND with memory decode on.
        std::fs::write(
            real.join("config"),
            [0xde, 0x10, 0x30, 0x23, 0x06, 0x00, 0x10, 0x00],
        )
        .unwrap();
        let f = std::fs::File::create(real.join("resource0")).unwrap();
        f.set_len(16 << 20).unwrap();
        for &(off, v) in regs {
            f.write_all_at(&v.to_le_bytes(), off).unwrap();
        }
        std::fs::write(real.join("reset"), "").unwrap();
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/12/devices")).unwrap();
        symlink(
            "../../../../kernel/iommu_groups/12",
            real.join("iommu_group"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(
            format!("../../../devices/pci0000:00/0000:00:01.0/{BDF}"),
            root.join("sys/bus/pci/devices").join(BDF),
        )
        .unwrap();
        if let Some(d) = driver {
            std::fs::create_dir_all(root.join("sys/bus/pci/drivers").join(d)).unwrap();
            symlink(
                format!("../../../../bus/pci/drivers/{d}"),
                real.join("driver"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("proc/sys")).unwrap();
        std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
        Fixture { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn resource0(&self) -> PathBuf {
        self.root()
            .join("sys/devices/pci0000:00/0000:00:01.0")
            .join(BDF)
            .join("resource0")
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
            .arg("--host-root")
            .arg(self.root())
            .args(args)
            .env_remove("CCHOST_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

const BOOTED_ON: &[(u64, u32)] = &[(0, 0x1800_00a1), (0x200bc, 0xff), (0x1182cc, 0x1)];

#[test]
fn query_maps_resource0_and_decodes_the_mode() {
    let fx = Fixture::h100(None, BOOTED_ON);
    let (code, out, err) = fx.run(&["gpu", "cc", "query", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["device"], BDF);
    assert_eq!(v[0]["family"], "hopper");
    assert_eq!(v[0]["state"]["mode"], "on");
    assert_eq!(v[0]["state"]["ppcie"], false);
    assert_eq!(v[0]["label"], "on");
}

#[test]
fn query_of_a_suspended_looking_bar_fails_with_exit_1() {
    let fx = Fixture::h100(None, &[(0, 0xffff_ffff)]);
    let (code, out, _) = fx.run(&["gpu", "cc", "query", BDF]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("all-ones"), "{out}");
}

fn untouched(fx: &Fixture) {
    let bytes = std::fs::read(fx.resource0()).unwrap();
    // Only the registers the fixture wrote are non-zero: no EMEM/queue write happened.
    let nonzero: Vec<usize> = bytes
        .chunks(4)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, _)| i * 4)
        .collect();
    assert_eq!(nonzero, vec![0, 0x200bc, 0x1182cc]);
    let reset = fx.resource0().with_file_name("reset");
    assert_eq!(std::fs::read_to_string(reset).unwrap(), "");
}

#[test]
fn set_refuses_a_gpu_bound_to_nvidia() {
    let fx = Fixture::h100(Some("nvidia"), BOOTED_ON);
    let (code, out, err) = fx.run(&["gpu", "cc", "set", "off", BDF]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("bound to nvidia"), "{out}");
    untouched(&fx);
}

#[test]
fn set_refuses_a_gpu_a_vm_holds() {
    let fx = Fixture::h100(Some("vfio-pci"), BOOTED_ON);
    let fd = fx.root().join("proc/4242/fd");
    std::fs::create_dir_all(&fd).unwrap();
    std::fs::write(fx.root().join("proc/4242/comm"), "qemu-system-x86\n").unwrap();
    symlink("/dev/vfio/12", fd.join("17")).unwrap();
    let (code, out, err) = fx.run(&["gpu", "cc", "set", "off", "--all", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["status"], "failed");
    let e = v[0]["error"].as_str().unwrap();
    assert!(
        e.contains("pid 4242 (qemu-system-x86) holds /dev/vfio/12"),
        "{e}"
    );
    untouched(&fx);
}

#[test]
fn set_needs_devices_or_all_and_a_known_device() {
    let fx = Fixture::h100(None, BOOTED_ON);
    let (code, _, err) = fx.run(&["gpu", "cc", "set", "on"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all"), "{err}");
    let (code, _, err) = fx.run(&["gpu", "cc", "set", "on", "0000:99:00.0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0000:99:00.0"), "{err}");
    untouched(&fx);
}

#[test]
fn undo_of_a_cc_switch_goes_through_the_switch_checks() {
    // An earlier `gpu cc set on` journaled the GPU (CC was off); since then somebody
    // bound the nvidia driver: undo must refuse, touch nothing and keep the entry.
    let fx = Fixture::h100(Some("nvidia"), BOOTED_ON);
    let journal = fx.root().join("var/lib/cchost/journal.json");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let text = format!(
        r#"{{"version":1,"next_seq":2,"entries":[{{"seq":1,"kind":"gpu.cc","subject":"{BDF}",
        "state":"applied","change":{{"setting":{{"cc":"on"}}}},
        "restore":{{"family":"hopper","vendor":4318,"device":9008,
        "before":{{"mode":"off","ppcie":false,"raw":0}}}},"at_unix":0}}]}}"#
    );
    std::fs::write(&journal, &text).unwrap();
    let (code, out, err) = fx.run(&["undo"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("gpu.cc") && err.contains("bound to nvidia"),
        "{err}"
    );
    // Kept, marked as being restored: the next start or undo tries again.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    assert_eq!(v["entries"][0]["kind"], "gpu.cc");
    assert_eq!(v["entries"][0]["state"], "restoring");
    untouched(&fx);
}

#[test]
fn a_proc_entry_that_cannot_be_read_refuses_the_query_and_says_why() {
    // Seen on a real H100 host (a Firecracker guest): root could list /proc/1/fd but not
    // read its links. Here /proc/4242/fd is a symlink loop, which cannot be listed
    // either (and root's permissions cannot get around it).
    let fx = Fixture::h100(None, BOOTED_ON);
    std::fs::create_dir_all(fx.root().join("proc/4242")).unwrap();
    symlink("fd", fx.root().join("proc/4242/fd")).unwrap();
    let (code, out, err) = fx.run(&["gpu", "cc", "query", BDF]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("cannot tell whether a process uses it") && out.contains("/proc/4242/fd"),
        "{out}"
    );
}

#[test]
fn decode_off_on_vfio_does_not_say_bind_vfio() {
    for (driver, must, must_not) in [
        (Some("vfio-pci"), "setpci", "bind vfio-pci"),
        (None, "bind vfio-pci", "setpci"),
    ] {
        let fx = Fixture::h100(driver, BOOTED_ON);
        let config = fx
            .root()
            .join("sys/devices/pci0000:00/0000:00:01.0")
            .join(BDF)
            .join("config");
        // COMMAND = 0: memory decode off.
        std::fs::write(&config, [0xde, 0x10, 0x30, 0x23, 0x00, 0x00, 0x10, 0x00]).unwrap();
        let (code, out, err) = fx.run(&["gpu", "cc", "query"]);
        let all = format!("{out}{err}");
        assert_ne!(code, 0, "{all}");
        assert!(all.contains("memory decode is disabled"), "{all}");
        assert!(all.contains(must), "{driver:?}: {all}");
        assert!(!all.contains(must_not), "{driver:?}: {all}");
    }
}
