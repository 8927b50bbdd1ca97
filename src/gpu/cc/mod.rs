//! GPU Confidential Computing mode, natively: the FSP firmware mailbox behind a [`Bar0`]
//! register interface (docs/facts/gpu.md#cc-registers).
//!
//! - [`bar0`]: the register trait; the real implementation wraps a `resource0` mapping.
//! - [`regs`]: the documented register offsets and which chip family uses which.
//! - [`transport`]: the two mailboxes (EMEM queue on Hopper/LS10, MNOC on Blackwell).
//! - [`fsp`]: MCTP/NVDM framing and PRC knob read/write.
//! - [`device`]: one device: boot wait, query, staging knobs, reset.
//! - [`firewall`]: Blackwell's boot-time BAR0 firewall bit in the NVIDIA DVSEC.
//! - [`switch`]: mode changes for many devices at once, each reported on its own.
//! - [`journaled`]: the same switches written to the journal first; undo and recovery.
//! - [`live`]: opening real devices through `HostRoot` (mapping, wake-up, sysfs reset).
//! - [`node_mode`]: one mode for the whole node (the `nvidia.com/cc.mode` label).
//! - [`requested`]: the configuration's requested mode as a node or GPU mode.
//! - [`precheck`]: may this device be switched (driverless or vfio-pci, and unused)?
//! - `sim` (cargo feature `test-support`): a register-level simulator of the FSP that
//!   the same client code drives.

pub mod bar0;
pub mod device;
pub mod error;
pub mod firewall;
pub mod fsp;
pub mod journaled;
pub mod live;
pub mod mode;
pub mod node_mode;
pub mod precheck;
pub mod regs;
pub mod requested;
#[cfg(any(test, feature = "test-support"))]
pub mod sim;
pub mod switch;
pub mod transport;

pub use bar0::{Bar0, Bar0Error};
pub use device::{CcDevice, Reset, ResetError, Timing};
pub use error::CcError;
pub use mode::{CcMode, CcState, Setting, TargetMode, Wanted};
pub use regs::Family;
