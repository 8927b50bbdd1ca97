//! Blackwell's boot-time BAR0 firewall (docs/facts/gpu.md#cc-registers): after a reset, BAR0 reads
//! all-ones until the firmware drops the firewall. gpu-admin-tools waits for bit 20 of
//! the dword at +0x8 of NVIDIA's DVSEC capability (vendor 0x10de, DVSEC ID 0) to clear,
//! up to 5 s, and sleeps 3 s instead where the capability is absent. cchost does the
//! same, reading the extended capabilities from sysfs `config` (read-only).

use std::time::{Duration, Instant};

use super::error::CcError;

/// PCIe extended capability ID of a Designated Vendor-Specific Extended Capability.
pub(crate) const EXT_CAP_DVSEC: u16 = 0x0023;
/// Extended capabilities start here in config space.
pub(crate) const EXT_CAP_START: usize = 0x100;
pub(crate) const NVIDIA_VENDOR: u16 = 0x10de;
/// NVIDIA's DVSEC ID carrying the firewall bit.
pub(crate) const NVIDIA_DVSEC_ID: u16 = 0;
/// Offset of the dword holding the bit, from the capability's start.
pub(crate) const FIREWALL_DWORD: usize = 0x8;
pub(crate) const FIREWALL_BIT: u32 = 1 << 20;

/// Read access to the device's configuration space.
pub trait ConfigSpace: Send + Sync {
    /// The whole config space (4 KiB when the extended capabilities are readable).
    fn read(&self) -> Result<Vec<u8>, String>;
}

fn dword(cfg: &[u8], off: usize) -> Option<u32> {
    cfg.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The offset of NVIDIA's DVSEC capability, walking the extended capability list
/// (header: ID bits 15:0, version 19:16, next 31:20; DVSEC header 1 at +4: vendor 15:0;
/// header 2 at +8: DVSEC ID 15:0). `None` when absent or config space is too short.
pub fn find_nvidia_dvsec(cfg: &[u8]) -> Option<usize> {
    let mut off = EXT_CAP_START;
    // A list can hold at most (4096 - 256) / 4 entries; more means a loop.
    for _ in 0..960 {
        let header = dword(cfg, off)?;
        if header == 0 || header == u32::MAX {
            return None;
        }
        if header & 0xffff == u32::from(EXT_CAP_DVSEC)
            && dword(cfg, off + 4).is_some_and(|h1| h1 & 0xffff == u32::from(NVIDIA_VENDOR))
            && dword(cfg, off + 8).is_some_and(|h2| h2 & 0xffff == u32::from(NVIDIA_DVSEC_ID))
        {
            return Some(off);
        }
        let next = (header >> 20) as usize;
        if next < EXT_CAP_START || next <= off || !next.is_multiple_of(4) {
            return None;
        }
        off = next;
    }
    None
}

/// Is the firewall up, per the DVSEC at `dvsec`?
pub fn firewall_up(cfg: &[u8], dvsec: usize) -> Option<bool> {
    dword(cfg, dvsec + FIREWALL_DWORD).map(|d| d & FIREWALL_BIT != 0)
}

/// What waiting for the firewall did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallWait {
    /// The capability is there and the bit is clear (now).
    Clear,
    /// No NVIDIA DVSEC: slept the fallback time (after a reset) or nothing (otherwise).
    Absent,
}

/// Waits until the firewall bit clears (`timeout`), or, without the capability, sleeps
/// `fallback` when `after_reset`.
pub fn wait(
    config: &dyn ConfigSpace,
    after_reset: bool,
    timeout: Duration,
    fallback: Duration,
    poll: Duration,
) -> Result<FirewallWait, CcError> {
    let start = Instant::now();
    let read = || config.read().map_err(CcError::Config);
    let cfg = read()?;
    let Some(dvsec) = find_nvidia_dvsec(&cfg) else {
        if after_reset {
            std::thread::sleep(fallback);
        }
        return Ok(FirewallWait::Absent);
    };
    let mut cfg = cfg;
    loop {
        match firewall_up(&cfg, dvsec) {
            Some(false) => return Ok(FirewallWait::Clear),
            Some(true) if start.elapsed() < timeout => {}
            _ => {
                return Err(CcError::FirewallTimeout {
                    waited_ms: start.elapsed().as_millis(),
                });
            }
        }
        std::thread::sleep(poll);
        cfg = read()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cfg: &mut [u8], off: usize, v: u32) {
        cfg[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// AER at 0x100 -> a foreign DVSEC at 0x140 -> NVIDIA's DVSEC at 0x180.
    fn chain(bit: bool) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        put(&mut c, 0x100, 0x0001 | (2 << 16) | (0x140 << 20));
        put(&mut c, 0x140, 0x0023 | (1 << 16) | (0x180 << 20));
        put(&mut c, 0x144, 0x8086 | (0x10 << 20));
        put(&mut c, 0x148, FIREWALL_BIT); // foreign vendor: must be ignored
        put(&mut c, 0x180, 0x0023 | (1 << 16));
        put(&mut c, 0x184, 0x10de | (0x10 << 20));
        put(&mut c, 0x188, if bit { FIREWALL_BIT } else { 0 });
        c
    }

    #[test]
    fn walks_to_nvidias_dvsec_past_others() {
        let c = chain(true);
        assert_eq!(find_nvidia_dvsec(&c), Some(0x180));
        assert_eq!(firewall_up(&c, 0x180), Some(true));
        assert_eq!(firewall_up(&chain(false), 0x180), Some(false));
    }

    /// The extended capability headers of a real H100 SXM5's config space (read with
    /// `od` in a Firecracker guest, 2026-11-23): ID-0 entries that only link onwards,
    /// LTR, AER, a VSEC, power budgeting, DSN; an off-list word at 0x140; no DVSEC.
    fn h100_in_a_vm() -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        for (off, v) in [
            (0x100, 0x12c0_0000),
            (0x12c, 0x1341_0018),
            (0x134, 0x1b81_0000),
            (0x140, 0x14c1_0024),
            (0x1b8, 0x2482_0001),
            (0x248, 0x2501_0000),
            (0x250, 0x2a41_0000),
            (0x2a4, 0x2b81_000b),
            (0x2b8, 0x2f01_0004),
            (0x2f0, 0x0001_0003),
        ] {
            put(&mut c, off, v);
        }
        c
    }

    #[test]
    fn a_real_hopper_list_has_no_nvidia_dvsec_and_id0_entries_are_followed() {
        let c = h100_in_a_vm();
        assert_eq!(find_nvidia_dvsec(&c), None);
        // The same list with NVIDIA's DVSEC hung after its last entry is walked to it.
        let mut c = c;
        put(&mut c, 0x2f0, 0x0001_0003 | (0x300 << 20));
        put(&mut c, 0x300, 0x0023 | (1 << 16));
        put(&mut c, 0x304, 0x10de | (0x10 << 20));
        assert_eq!(find_nvidia_dvsec(&c), Some(0x300));
    }

    #[test]
    fn absent_short_or_looping_lists_find_nothing() {
        assert_eq!(find_nvidia_dvsec(&[0u8; 64]), None); // unprivileged 64-byte read
        let mut c = chain(true);
        put(&mut c, 0x140, 0x0023 | (1 << 16)); // list ends at the foreign DVSEC
        assert_eq!(find_nvidia_dvsec(&c), None);
        put(&mut c, 0x140, 0x0023 | (1 << 16) | (0x100 << 20)); // points backwards
        assert_eq!(find_nvidia_dvsec(&c), None);
        let mut c = vec![0u8; 4096];
        put(&mut c, 0x100, u32::MAX);
        assert_eq!(find_nvidia_dvsec(&c), None);
    }
}
