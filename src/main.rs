//! The cchost binary: argument parsing, logging, and the exit code. All work happens in
//! the library; see `cli/` for one file per command.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
