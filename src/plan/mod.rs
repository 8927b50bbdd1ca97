//! Config + facts -> a plan (a list of actions; pure), and applying it.

pub mod facts;

pub use facts::NodeFacts;
