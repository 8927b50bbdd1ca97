//! Tier 1, read paths on fixture hosts (tests/host/<scenario>, tests/host-captured, and
//! variations built in temporary directories): inventory, check, plan, labels, host
//! configuration (hostcfg), capture, the committed machineconfigs, deploy manifests and
//! dcap/ files, and the `cchost` binary's commands on those hosts. One test binary, one
//! module per subject (docs/testing.md).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod capture;
mod captured_hosts;
#[path = "../support/check_json.rs"]
mod check_json;
mod cli_check;
mod cli_gpu_cc;
mod cli_hostcfg;
mod consumer_selectors;
mod dcap_files;
mod deploy_manifests;
mod fixture_trees;
mod hostcfg_boot;
mod hostcfg_fixtures;
mod inventory_scenarios;
mod labels_cc_mode;
mod labels_mixed;
mod machineconfigs;
mod plan;
mod scenarios;
