//! Rules about the source tree itself, checked on every test run:
//!
//! - [`layers`]: no module imports a module of a higher layer (docs/architecture.md).
//! - [`doc_refs`]: every `docs/….md` a source comment cites exists, with its section,
//!   and nothing cites files outside the repository.
//!
//! They read the repository's files as text; none links the crate.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "source_tree/doc_refs.rs"]
mod doc_refs;
#[path = "source_tree/layers.rs"]
mod layers;
