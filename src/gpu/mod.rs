//! TODO(owner): see the issue for this module.
pub mod cc;
