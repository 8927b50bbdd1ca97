//! PCI device names (`GH100 [H100 SXM5 80GB]`) from the pci.ids database, as a flat
//! table written by build.rs: sorted integer keys and byte offsets, no pointers. The
//! table sits in the binary's read-only data and only the pages a lookup touches (a
//! binary search: about 15 records and one name) are ever read in; see build.rs for
//! why the `pci-ids` crate's own tables are not linked in.

static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pci_names.bin"));

const RECORD: usize = 12;

fn u32_at(at: usize) -> Option<u32> {
    let b = TABLE.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Number of devices in the table.
pub fn len() -> usize {
    u32_at(0).unwrap_or(0) as usize
}

/// The pci.ids name of a device, `None` when the database does not list it.
pub(crate) fn device_name(vendor: u16, device: u16) -> Option<&'static str> {
    let key = (u32::from(vendor) << 16) | u32::from(device);
    let n = len();
    let names = 4 + n * RECORD;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = 4 + mid * RECORD;
        let k = u32_at(at)?;
        if k == key {
            let off = u32_at(at + 4)? as usize;
            let len = u32_at(at + 8)? as usize;
            let bytes = TABLE.get(names + off..names + off + len)?;
            return std::str::from_utf8(bytes).ok();
        }
        if k < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nvidia_datacenter_parts_and_misses_unknown_ids() {
        assert_eq!(device_name(0x10de, 0x2330), Some("GH100 [H100 SXM5 80GB]"));
        assert_eq!(device_name(0x10de, 0x2331), Some("GH100 [H100 PCIe]"));
        // QEMU's pci-testdev, one of the VM tests' stand-in GPUs.
        assert_eq!(device_name(0x1b36, 0x0005), Some("QEMU PCI Test Device"));
        assert_eq!(device_name(0x10de, 0xfffe), None);
        assert_eq!(device_name(0xfffe, 0x0001), None);
    }

    #[test]
    fn every_entry_is_in_order_and_readable() {
        // The whole pci.ids database is in (tens of thousands of devices), sorted
        // strictly, each name valid UTF-8 and non-empty: a broken build.rs fails here.
        let n = len();
        assert!(n > 10_000, "{n}");
        let mut last = None;
        for i in 0..n {
            let key = u32_at(4 + i * RECORD).unwrap();
            assert!(last < Some(key), "record {i} out of order");
            last = Some(key);
            let name = device_name((key >> 16) as u16, key as u16).unwrap();
            assert!(!name.is_empty());
        }
    }
}
