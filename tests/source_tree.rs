//! Rules about the source tree itself, checked on every test run:
//!
//! - [`layers`]: no module imports a module of a higher layer (docs/architecture.md).
//! - [`public_surface`]: an item is `pub` only when something outside the library
//!   names it, or a public signature shows it (issue 12 item 5).
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
#[path = "source_tree/public_surface.rs"]
mod public_surface;
