//! A Hopper GPU's `resource0` on a fixture host, as a plain file holding the three
//! registers a mode query reads (BOOT_0, boot complete, the CC register, at their BAR0
//! offsets: docs/facts/gpu.md#cc-registers). The query then goes through the product's
//! real path, the mmap of `resource0`, rather than through the simulator's `Bar0`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::gpu::cc::regs;
use crate::host::HostRoot;

/// A GH100 chip ID (any plausible BOOT_0 value; the client rejects only all-ones and
/// the fault patterns).
pub const GH100_BOOT_0: u32 = 0x1800_00a1;

/// Writes `boot0`, `boot_complete` and the CC register `cc` into the `resource0` of the
/// PCI function `address` under `host`, growing the file to cover the CC register.
pub fn write_registers(
    host: &HostRoot,
    address: &str,
    boot0: u32,
    boot_complete: u32,
    cc: u32,
) -> io::Result<()> {
    let path = host
        .resolve(
            Path::new("/sys/bus/pci/devices")
                .join(address)
                .join("resource0"),
        )
        .map_err(io::Error::other)?;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(u64::from(regs::CC_HOPPER) + 4096)?;
    for (offset, value) in [
        (regs::BOOT_0, boot0),
        (regs::BOOT_COMPLETE_GH100, boot_complete),
        (regs::CC_HOPPER, cc),
    ] {
        f.write_all_at(&value.to_le_bytes(), u64::from(offset))?;
    }
    Ok(())
}

/// A booted GH100 whose CC register reads `cc` (1: on, 0: off).
pub fn write_booted(host: &HostRoot, address: &str, cc: u32) -> io::Result<()> {
    write_registers(host, address, GH100_BOOT_0, regs::BOOT_COMPLETE_DONE, cc)
}
