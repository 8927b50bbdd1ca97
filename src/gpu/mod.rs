//! GPU actuators: who uses a device, binding to vfio, and (module `cc`) CC mode.

pub mod cc;
pub mod usage;
pub mod vfio;
