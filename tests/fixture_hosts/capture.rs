//! `cchost capture` on the fixture hosts: the capture is a valid host root whose
//! inventory equals the original's, with nothing cchost does not read.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use cchost::config::Config;
use cchost::fixture::scenarios;
use cchost::host::HostRoot;
use cchost::inventory::Inventory;

#[test]
fn capture_round_trips_every_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::default();
    for name in scenarios::NAMES {
        let src = tmp.path().join("src").join(name);
        let host = scenarios::scenario(name, &src).unwrap().build().unwrap();
        let dest = tmp.path().join("cap").join(name);
        let (seen, summary) = cchost::capture::capture(&host, &config, &dest).unwrap();
        let original = Inventory::collect(&host, &config);
        assert_eq!(seen, original, "{name}: recording changed the inventory");
        let mut captured = Inventory::collect(&HostRoot::new(&dest).unwrap(), &config);
        // The command line is the one file changed on the way: disk identifiers are
        // scrubbed, every argument name stays.
        let cmdline = fs::read_to_string(dest.join("proc/cmdline")).unwrap();
        assert!(!cmdline.contains(scenarios::ROOT_UUID), "{name}: {cmdline}");
        assert_eq!(
            captured.kernel.cmdline.raw,
            cchost::capture::scrub_cmdline(&original.kernel.cmdline.raw),
            "{name}"
        );
        let names = |i: &Inventory| -> Vec<String> {
            i.kernel
                .cmdline
                .params
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names(&captured), names(&original), "{name}");
        captured.kernel.cmdline = original.kernel.cmdline.clone();
        assert_eq!(
            captured, original,
            "{name}: capture differs from the original"
        );
        assert!(
            summary.files > 10 && summary.links > 0,
            "{name}: {summary:?}"
        );

        // Only what cchost reads: the log's noise is gone, unrelated files are absent.
        let kmsg = fs::read_to_string(dest.join("dev/kmsg")).unwrap();
        for noise in ["EXT4-fs", "systemd[1]", "usb 1-1", "Linux version"] {
            assert!(!kmsg.contains(noise), "{name}: {noise} kept in /dev/kmsg");
        }
        assert_eq!(
            kmsg.lines().count(),
            original.kernel_log.relevant.len(),
            "{name}: the capture's log is exactly the relevant records"
        );
        assert!(fs::metadata(dest.join("proc/cpuinfo")).is_ok());
    }
}

#[test]
fn scrub_replaces_disk_identifiers_only() {
    let s = cchost::capture::scrub_cmdline(
        "BOOT_IMAGE=/vmlinuz root=UUID=2f1c7a0e-5d7b resume=PARTUUID=abcd rd.luks.uuid=luks-1234 \
         root=/dev/disk/by-uuid/77aa ro intel_iommu=on kvm_intel.tdx=1 LABEL=x\n",
    );
    assert_eq!(
        s,
        "BOOT_IMAGE=/vmlinuz root=UUID=scrubbed resume=PARTUUID=scrubbed rd.luks.uuid=scrubbed \
         root=/dev/disk/by-uuid/scrubbed ro intel_iommu=on kvm_intel.tdx=1 LABEL=x\n"
    );
}

#[test]
fn capture_keeps_symlinks_exactly_and_skips_unread_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let host = scenarios::scenario("tdx-8xh100-4nvswitch", &src)
        .unwrap()
        .file("/home/user/secret.txt", "do not copy")
        .file("/sys/block/nvme0n1/device/serial", "S6XXNX0T123456\n")
        .build()
        .unwrap();
    let dest = tmp.path().join("cap");
    cchost::capture::capture(&host, &Config::default(), &dest).unwrap();
    let link = Path::new("sys/bus/pci/devices/0000:18:00.0");
    assert_eq!(
        fs::read_link(dest.join(link)).unwrap(),
        fs::read_link(src.join(link)).unwrap()
    );
    let gpu = "sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0";
    assert_eq!(
        fs::read_link(dest.join(gpu).join("driver")).unwrap(),
        Path::new("../../../../../../bus/pci/drivers/nvidia")
    );
    assert_eq!(
        fs::read(dest.join(gpu).join("vendor")).unwrap(),
        b"0x10de\n"
    );
    assert!(!dest.join("home").exists());
    assert!(!dest.join("sys/block").exists());
    // A second capture into the same (now non-empty) directory is refused.
    let err = cchost::capture::capture(&host, &Config::default(), &dest).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}
