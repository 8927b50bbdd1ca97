//! Tier 2, a real kernel in QEMU (write paths): the harness in tests/vm/harness.rs boots
//! the host's Debian kernel with a busybox initramfs holding cchost (tests/vm/README.md).
//! One test binary, one module per subject (docs/testing.md).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../vm/harness.rs"]
mod harness;

mod deviceplugin;
mod harness_self_test;
mod host_root;
mod hostcfg;
mod inventory;
mod vfio;
mod vfio_boot;
