//! Node labels and extended resources: computed purely from the node facts
//! ([`compute`]), then written by a backend (Server-Side Apply on the Node, a NodeFeature
//! object, or an NFD local feature file). See docs/labels.md.

pub mod cc_mode;
pub mod compute;
pub mod duties;

pub use compute::{NodeLabels, compute};
pub mod cluster;
pub mod nfdfile;
pub mod node_watch;
pub mod own_node;
pub mod service;

pub use service::{FactSource, LabelerContext, inventory_facts, run_labeler};
