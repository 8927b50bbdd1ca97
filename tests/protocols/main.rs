//! Tier 3, real protocols: the device plugin against a kubelet-side harness over unix
//! sockets, CDI against the upstream schema, DCAP (QGS, PCCS, systemd, the supervisor),
//! the GPU firmware mailbox against the register-level FSP simulator, the kube label,
//! event and watch clients against kube's tower-test mock, and the `cchost run` daemon
//! (health, recovery, CC mode on start), stopping NVIDIA's host daemons over a private
//! bus. One test binary, one module per subject, one
//! support tree (tests/support/) (docs/testing.md).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod cc_label;
mod daemon_health;
mod dcap_cli;
mod dcap_pccs;
mod dcap_qgs;
mod dcap_supervisor;
mod dcap_systemd;
mod deviceplugin_cdi;
mod deviceplugin_kubelet;
mod deviceplugin_run;
mod deviceplugin_unreadable;
mod gpu_cc_journal;
mod gpu_cc_mmap;
mod gpu_cc_sim;
mod gpu_services;
mod labels_kube;
mod node_events;
mod own_node;
mod run_cc_modes;
mod run_cc_on_start;
mod run_recovery;
