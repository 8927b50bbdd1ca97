//! cchost: makes a bare-metal Linux host ready for confidential containers (Kata + CoCo)
//! and keeps it ready.
//!
//! Layers, bottom up (docs/architecture.md; enforced by tests/source_tree/layers.rs):
//! - [`host`], [`config`]: the only door to the host's files; the configuration.
//! - [`inventory`] (with the node facts and the passthrough-device model), [`journal`],
//!   `fixture` (test support, cargo feature `test-support`: fixture host trees laid out
//!   as the kernel lays out /sys).
//! - actuators: [`gpu`], [`hostcfg`], [`cdi`] (each change journaled).
//! - services: [`labels`], [`deviceplugin`], [`dcap`].
//! - [`plan`]: config + facts -> what would change (changes nothing).
//! - [`apply`] (carries a plan out), [`check`] (the readiness tree).
//! - [`observe`]: metrics, health, systemd notification and Kubernetes Events.
//! - [`daemon`] (`cchost run`), [`capture`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apply;
pub mod capture;
pub mod cdi;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dcap;
pub mod deviceplugin;
#[cfg(any(test, feature = "test-support"))]
pub mod fixture;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod host;
pub mod hostcfg;
pub mod inventory;
pub mod journal;
pub mod labels;
pub mod observe;
pub mod plan;
