//! The mmap `Bar0` under the CC client, with a regular temp file standing in for
//! `resource0`. This proves the mapping, the offsets and the read-only refusal — not
//! anything about real hardware (no GPU is touched).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::FileExt;

use cchost::gpu::cc::bar0::MmioBar0;
use cchost::gpu::cc::device::{CcDevice, Reset, ResetError, Timing};
use cchost::gpu::cc::{CcError, CcMode, Family, TargetMode};
use cchost::host::HostRoot;
use cchost::host::mmio::MapAccess;

struct NoReset;
impl Reset for NoReset {
    fn reset(&self) -> Result<(), ResetError> {
        Err(ResetError("not in this test".into()))
    }
}

fn fake_bar(values: &[(u64, u32)]) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("sys/bus/pci/devices/0000:3b:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    let f = std::fs::File::create(dev.join("resource0")).unwrap();
    f.set_len(16 << 20).unwrap(); // sparse, like a 16 MiB register BAR
    for &(off, v) in values {
        f.write_all_at(&v.to_le_bytes(), off).unwrap();
    }
    let host = HostRoot::new(dir.path()).unwrap();
    (dir, host)
}

fn device(host: &HostRoot, family: Family, access: MapAccess) -> CcDevice {
    let map = host
        .map_resource0(&"0000:3b:00.0".parse().unwrap(), access)
        .unwrap();
    CcDevice::new(
        "0000:3b:00.0",
        family,
        Box::new(MmioBar0(map)),
        Box::new(NoReset),
        Timing {
            boot: Some(std::time::Duration::from_millis(50)),
            ..Timing::default()
        },
    )
}

#[test]
fn query_through_a_read_only_mapping() {
    let (_d, host) = fake_bar(&[(0, 0x1800_00a1), (0x200bc, 0xff), (0x1182cc, 0x21)]);
    let st = device(&host, Family::Hopper, MapAccess::ReadOnly)
        .query()
        .unwrap();
    assert_eq!((st.mode, st.ppcie), (Some(CcMode::On), Some(true)));

    let (_d, host) = fake_bar(&[(0, 0x1b00_00a1), (0xad00bc, 0xff), (0x590, 0x3)]);
    let st = device(&host, Family::Gb20x, MapAccess::ReadOnly)
        .query()
        .unwrap();
    assert_eq!(st.mode, Some(CcMode::Devtools));
}

#[test]
fn boot_not_complete_and_security_fault_are_errors() {
    let (_d, host) = fake_bar(&[(0, 0x1800_00a1), (0x1182cc, 1)]);
    let err = device(&host, Family::Hopper, MapAccess::ReadOnly)
        .query()
        .unwrap_err();
    assert!(
        matches!(err, CcError::BootTimeout { reg: 0x200bc, .. }),
        "{err}"
    );

    let (_d, host) = fake_bar(&[(0, 0xbadf_0200), (0x200bc, 0xff)]);
    let err = device(&host, Family::Hopper, MapAccess::ReadOnly)
        .query()
        .unwrap_err();
    assert!(matches!(err, CcError::SecurityFault { .. }), "{err}");
}

#[test]
fn a_read_only_mapping_cannot_stage_knobs() {
    let (_d, host) = fake_bar(&[(0, 0x1800_00a1), (0x200bc, 0xff)]);
    let err = device(&host, Family::Hopper, MapAccess::ReadOnly)
        .stage_cc(TargetMode::On)
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}
