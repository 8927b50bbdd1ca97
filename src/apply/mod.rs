//! Acting on a decision of [`crate::plan`]: each host change through its actuator
//! (`hostcfg`, `gpu::vfio`), written to the journal with what restores it before it is
//! made.
//!
//! - [`node`]: the node plan (kernel arguments, modules).
//! - [`vfio`]: a `gpu bind` / `gpu unbind` plan.
//! - [`services`]: stopping NVIDIA's host daemons that hold the GPUs before a bind.

pub mod node;
pub mod services;
pub mod vfio;
