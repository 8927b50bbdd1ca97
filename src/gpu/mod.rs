//! GPU actuators: who uses a device, binding to vfio, the NVIDIA host daemons that hold
//! GPUs (`services`), and (module `cc`) CC mode.

pub mod cc;
pub mod services;
pub mod usage;
pub mod vfio;
