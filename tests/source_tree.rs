//! Rules about the source tree itself, checked on every test run:
//!
//! - [`layers`]: no module imports a module of a higher layer (docs/architecture.md).
//!
//! They read the files under src/ as text; none links the crate.

#[path = "source_tree/layers.rs"]
mod layers;
