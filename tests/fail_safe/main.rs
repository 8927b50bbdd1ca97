//! Issue 13 "Fail safe": cchost run as an attacker or a careless operator would, on
//! copies of the fixture hosts. One test binary, one module per failure class.

mod support;

mod concurrency;
mod dcap_configure;
mod fifo;
mod not_a_host;
mod output;
mod readonly;
mod remedies;
