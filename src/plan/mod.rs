//! Config + facts -> a plan (a list of actions; pure), and applying it.

pub mod apply;
pub mod build;
pub mod facts;
mod from_inventory;
pub mod render;

pub use build::{Action, Plan, PlanInputs, build, gather};
pub use facts::NodeFacts;
