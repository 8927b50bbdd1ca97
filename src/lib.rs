//! cchost: makes a bare-metal Linux host ready for confidential containers (Kata + CoCo)
//! and keeps it ready.
//!
//! Layers, bottom up (see docs/architecture.md):
//! - [`host`]: `HostRoot`, the only door to the host's files.
//! - [`inventory`]: what the host is (pure model, with evidence).
//! - [`check`]: the readiness tree built from the inventory.
//! - [`plan`]: config + inventory -> a list of actions (pure).
//! - actuators: [`gpu`], [`hostcfg`], [`cdi`], [`journal`] (each idempotent, journaled).
//! - services: [`deviceplugin`], [`labels`], [`dcap`], run by [`daemon`].
//! - [`observe`]: metrics, health, systemd notification and Kubernetes Events.
//! - [`fixture`]: test support, fixture host trees laid out as the kernel lays out /sys.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod capture;
pub mod cdi;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dcap;
pub mod deviceplugin;
pub mod fixture;
pub mod gpu;
pub mod host;
pub mod hostcfg;
pub mod inventory;
pub mod journal;
pub mod labels;
pub mod observe;
pub mod plan;
