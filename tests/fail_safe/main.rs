//! Issue 13 "Fail safe": cchost run as an attacker or a careless operator would, on
//! copies of the fixture hosts. One test binary, one module per failure class.

mod support;

mod fifo;
mod not_a_host;
