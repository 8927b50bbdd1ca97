//! Support shared by the test crates (included with `#[path = "../support/mod.rs"]`):
//!
//! - [`device_plugin`]: fixture hosts laid out the way the kernel shows PCI devices, and a
//!   kubelet-side harness speaking v1beta1 over unix sockets (also used by
//!   benches/deviceplugin.rs);
//! - [`check_json`]: finding a check in `cchost check --json`;
//! - [`dcap`]: the stand-in QGS program and polling without asserting on time;
//! - [`sim_opener`]: an `Opener` handing out the FSP simulator by PCI address;
//! - [`systemd`]: a private dbus-daemon and a stand-in for systemd's manager on it.
//!
//! The real-kernel tier has its own harness, tests/vm/harness.rs.
// Each crate uses a different part of it.
#![allow(dead_code)]

pub mod check_json;
pub mod dcap;
pub mod device_plugin;
pub mod sim_opener;
pub mod systemd;
