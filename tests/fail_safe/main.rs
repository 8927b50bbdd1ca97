//! Issue 13 "Fail safe": cchost run as an attacker or a careless operator would, on
//! copies of the fixture hosts. One test binary, one module per failure class.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod concurrency;
mod config_paths;
mod dcap_configure;
mod fifo;
mod not_a_host;
mod output;
mod readonly;
mod remedies;
