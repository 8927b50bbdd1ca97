//! Running the host's own tools (modprobe, bootloader tools) against the host root.
//!
//! On the live host the tool runs as is; under another root (a DaemonSet's `/host`) it
//! runs through `chroot`, so the host's own modprobe reads the host's own
//! /lib/modules and modprobe.d (NVIDIA's managers do the same: `chroot /host modprobe`).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{HostError, HostRoot};

/// The result of a host tool that ran to completion.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for ToolOutput {
    fn from(o: Output) -> Self {
        ToolOutput {
            success: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl HostRoot {
    /// Builds a command that runs `program` as the host would (chrooted into a non-`/`
    /// root). The program is looked up on the host's PATH.
    pub fn host_command<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut cmd = if self.is_live() {
            Command::new(program)
        } else {
            let mut c = Command::new("chroot");
            c.arg(self.root()).arg(program);
            c
        };
        cmd.args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a host tool and collects its output. Failing to start it is an error; a
    /// non-zero exit is reported in the output for the caller to judge.
    pub fn run_host_tool<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> Result<ToolOutput, HostError> {
        let out = self
            .host_command(program, args)
            .output()
            .map_err(|e| HostError::io(PathBuf::from(program), e))?;
        Ok(out.into())
    }

    /// Loads a kernel module with the host's modprobe.
    pub fn modprobe(&self, module: &str) -> Result<(), HostError> {
        if module.is_empty()
            || !module
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(HostError::malformed(
                PathBuf::from("modprobe"),
                format!("not a module name: {module:?}"),
            ));
        }
        let out = self.run_host_tool("modprobe", &[module])?;
        if out.success {
            tracing::info!(module, "loaded kernel module");
            Ok(())
        } else {
            Err(HostError::malformed(
                PathBuf::from("modprobe"),
                format!(
                    "modprobe {module} failed (exit {:?}): {}",
                    out.code,
                    out.stderr.trim()
                ),
            ))
        }
    }
}
