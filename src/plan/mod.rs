//! Deciding: config + facts -> what cchost would change. Nothing here changes the host
//! (`apply` carries the plans out).
//!
//! - [`build`]: the node plan (kernel arguments, modules, the labels `cchost run` keeps).
//! - [`vfio`]: which devices a `gpu bind` / `gpu unbind` moves, and the refusals.

pub mod build;
pub mod render;
pub mod vfio;

pub use build::{Action, Plan, PlanInputs, build, gather};
