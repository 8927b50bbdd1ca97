//! Host configuration actuators: kernel arguments (profiles, boot-configuration
//! mechanisms, MachineConfig rendering) and kernel modules. See docs/kernel-args.md.

pub mod args;
pub mod bls;
pub mod boot;
pub mod grubfile;
pub mod journaled;
pub mod kata;
pub mod machineconfig;
pub mod modules;
pub mod profile;
pub mod vfio_boot;
