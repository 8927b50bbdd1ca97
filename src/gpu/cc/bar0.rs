//! `Bar0`: 32-bit register reads and writes at a BAR0 offset.

use crate::host::mmio::{MmioError, MmioMap};

/// A register access that failed. Reads of all-ones are *not* errors here (the caller
/// decides what a value means); these are accesses that could not happen at all.
#[derive(Debug, thiserror::Error)]
pub enum Bar0Error {
    #[error(transparent)]
    Mmio(#[from] MmioError),
    #[error("BAR0 offset {offset:#x} is outside the {len:#x}-byte BAR")]
    OutOfRange { offset: u32, len: u32 },
    #[error("BAR0 offset {offset:#x} is not 4-byte aligned")]
    Unaligned { offset: u32 },
}

/// The register window of one device. `&self` for both directions: real MMIO has no
/// Rust-visible state, and the simulator locks internally, so devices can be shared
/// with the threads that switch them in parallel.
pub trait Bar0: Send + Sync {
    fn read32(&self, offset: u32) -> Result<u32, Bar0Error>;
    fn write32(&self, offset: u32, value: u32) -> Result<(), Bar0Error>;
}

/// BAR0 through an mmap of `resource0` (see [`crate::host::mmio`]).
#[derive(Debug)]
pub struct MmioBar0(pub MmioMap);

impl Bar0 for MmioBar0 {
    fn read32(&self, offset: u32) -> Result<u32, Bar0Error> {
        Ok(self.0.read32(u64::from(offset))?)
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), Bar0Error> {
        Ok(self.0.write32(u64::from(offset), value)?)
    }
}
