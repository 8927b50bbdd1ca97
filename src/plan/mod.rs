//! Config + facts -> a plan (a list of actions; pure), and applying it.

pub mod build;
pub mod facts;
pub mod render;

pub use build::{Action, Plan, PlanInputs, build, gather};
pub use facts::NodeFacts;
