//! Where a plain host keeps its kernel arguments, and how to change them
//! (docs/facts/cpu-tee.md#kernel-args). Detection order (first match wins):
//!
//! 1. rpm-ostree: `/run/ostree-booted` and the `rpm-ostree` tool (`rpm-ostree kargs`);
//! 2. grubby: BLS entries in /boot/loader/entries and the `grubby` tool;
//! 3. kernel-install: `/etc/kernel/cmdline` (plus the BLS entries it made, if any);
//! 4. BLS entries alone: their `options` lines are edited;
//! 5. GRUB defaults: `/etc/default/grub` (+ grub.d drop-ins), then `update-grub`,
//!    `grub2-mkconfig` or `grub-mkconfig`.
//!
//! Reading gives a [`BootConfig`]; [`BootConfig::change`] turns an [`ArgEdit`] into
//! concrete steps (file rewrites with their previous contents, tool calls with their
//! inverse), so each step can be journaled before it runs. cchost never reboots.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{ArgEdit, split};
use super::{bls, grubfile};
use crate::config::MechanismChoice;
use crate::host::exec::ToolOutput;
use crate::host::{HostError, HostRoot};

pub(crate) const OSTREE_BOOTED: &str = "/run/ostree-booted";
pub(crate) const KERNEL_CMDLINE: &str = "/etc/kernel/cmdline";
pub const DEFAULT_GRUB: &str = "/etc/default/grub";
pub(crate) const DEFAULT_GRUB_D: &str = "/etc/default/grub.d";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    RpmOstree,
    Grubby,
    KernelCmdline,
    Bls,
    Grub,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::RpmOstree => "rpm-ostree",
            Mechanism::Grubby => "grubby",
            Mechanism::KernelCmdline => "kernel-cmdline",
            Mechanism::Bls => "bls",
            Mechanism::Grub => "grub",
        }
    }
}

/// Running the host's tools; tests substitute a recorder.
pub trait HostTools {
    /// The tool is on the host's PATH.
    fn has(&self, program: &str) -> bool;
    fn run(&self, program: &str, args: &[String]) -> Result<ToolOutput, HostError>;
}

const HOST_PATH: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

impl HostTools for HostRoot {
    fn has(&self, program: &str) -> bool {
        HOST_PATH
            .iter()
            .any(|d| self.exists(Path::new(d).join(program)))
    }

    fn run(&self, program: &str, args: &[String]) -> Result<ToolOutput, HostError> {
        self.run_host_tool(program, args)
    }
}

/// A host tool invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub program: String,
    pub args: Vec<String>,
}

impl std::fmt::Display for ToolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.program)?;
        for a in &self.args {
            if a.contains(' ') {
                write!(f, " '{a}'")?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// One file's rewrite; `before` = None means the file did not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileEdit {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: String,
}

/// A step of a boot-configuration change, with what undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootStep {
    /// Rewrite files, then run `then` (e.g. update-grub). Undo: write back `before`,
    /// then run `then` again.
    EditFiles {
        files: Vec<FileEdit>,
        then: Option<ToolCall>,
    },
    /// Run a tool; `undo` reverses it.
    Tool { call: ToolCall, undo: ToolCall },
}

/// The boot configuration as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootConfig {
    pub mechanism: Mechanism,
    /// Why this mechanism was chosen.
    pub evidence: String,
    /// The argument sets the next boot may use: (where, tokens). All must satisfy the edit.
    pub sets: Vec<(String, Vec<String>)>,
    /// File contents read (host path -> text), for file-editing mechanisms.
    #[serde(skip)]
    files: Vec<(PathBuf, String)>,
    #[serde(skip)]
    regen: Option<ToolCall>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("kernel.mechanism = {wanted:?}, but {missing}")]
    NotAvailable { wanted: String, missing: String },
    #[error("{tool} failed (exit {code:?}): {stderr}")]
    Tool {
        tool: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error(
        "{}: edited after cchost changed it, and the edits touch what cchost changed; \
         undo will not overwrite them (nothing was changed). Take cchost's change out by hand, \
         then run `cchost undo` again",
        path.display()
    )]
    EditedSince { path: PathBuf },
}

fn bls_entries(host: &HostRoot) -> Result<Vec<(PathBuf, String)>, HostError> {
    let mut out = Vec::new();
    for name in host.list_dir_opt(bls::ENTRIES_DIR)? {
        if name.ends_with(".conf") && !name.starts_with('.') {
            let p = Path::new(bls::ENTRIES_DIR).join(&name);
            out.push((p.clone(), host.read_string(&p)?));
        }
    }
    Ok(out)
}

fn grub_files(host: &HostRoot) -> Result<Vec<(PathBuf, String)>, HostError> {
    let mut out = Vec::new();
    if let Some(t) = host.read_string_opt(DEFAULT_GRUB)? {
        out.push((PathBuf::from(DEFAULT_GRUB), t));
    }
    for name in host.list_dir_opt(DEFAULT_GRUB_D)? {
        if name.ends_with(".cfg") {
            let p = Path::new(DEFAULT_GRUB_D).join(&name);
            out.push((p.clone(), host.read_string(&p)?));
        }
    }
    Ok(out)
}

fn grub_regen(tools: &dyn HostTools, host: &HostRoot) -> Option<ToolCall> {
    let call = |p: &str, a: &[&str]| ToolCall {
        program: p.to_string(),
        args: a.iter().map(|s| s.to_string()).collect(),
    };
    if tools.has("update-grub") {
        Some(call("update-grub", &[]))
    } else if tools.has("grub2-mkconfig") {
        let out = if host.exists("/boot/grub2") {
            "/boot/grub2/grub.cfg"
        } else {
            "/boot/grub/grub.cfg"
        };
        Some(call("grub2-mkconfig", &["-o", out]))
    } else if tools.has("grub-mkconfig") {
        Some(call("grub-mkconfig", &["-o", "/boot/grub/grub.cfg"]))
    } else {
        None
    }
}

/// Reads the boot configuration with the configured (or detected) mechanism.
/// `Ok(None)`: no known mechanism on this host (or `mechanism = "none"`).
pub fn read(
    host: &HostRoot,
    tools: &dyn HostTools,
    choice: MechanismChoice,
) -> Result<Option<BootConfig>, BootError> {
    let want = |m: Mechanism| choice == MechanismChoice::Auto || choice_of(m) == choice;
    let not_avail = |missing: &str| BootError::NotAvailable {
        wanted: format!("{choice:?}").to_lowercase(),
        missing: missing.to_string(),
    };
    if choice == MechanismChoice::None {
        return Ok(None);
    }
    if want(Mechanism::RpmOstree) {
        if host.exists(OSTREE_BOOTED) && tools.has("rpm-ostree") {
            let out = tools.run("rpm-ostree", &["kargs".to_string()])?;
            if !out.success {
                return Err(tool_err("rpm-ostree kargs", &out));
            }
            return Ok(Some(BootConfig {
                mechanism: Mechanism::RpmOstree,
                evidence: format!("{OSTREE_BOOTED} exists (an ostree-booted system)"),
                sets: vec![("rpm-ostree kargs".to_string(), split(out.stdout.trim()))],
                files: Vec::new(),
                regen: None,
            }));
        } else if choice == MechanismChoice::RpmOstree {
            return Err(not_avail(
                "this host is not ostree-booted or has no rpm-ostree",
            ));
        }
    }
    let entries = bls_entries(host)?;
    let entry_sets = |entries: &[(PathBuf, String)]| -> Vec<(String, Vec<String>)> {
        entries
            .iter()
            .map(|(p, t)| (p.display().to_string(), bls::options(t)))
            .collect()
    };
    if want(Mechanism::Grubby) {
        if !entries.is_empty() && tools.has("grubby") {
            return Ok(Some(BootConfig {
                mechanism: Mechanism::Grubby,
                evidence: format!("BLS entries in {} and grubby installed", bls::ENTRIES_DIR),
                sets: entry_sets(&entries),
                files: Vec::new(),
                regen: None,
            }));
        } else if choice == MechanismChoice::Grubby {
            return Err(not_avail("no BLS entries or no grubby tool"));
        }
    }
    if want(Mechanism::KernelCmdline) {
        if let Some(text) = host.read_string_opt(KERNEL_CMDLINE)? {
            let mut sets = vec![(KERNEL_CMDLINE.to_string(), split(text.trim()))];
            sets.extend(entry_sets(&entries));
            let mut files = vec![(PathBuf::from(KERNEL_CMDLINE), text)];
            files.extend(entries);
            return Ok(Some(BootConfig {
                mechanism: Mechanism::KernelCmdline,
                evidence: format!("{KERNEL_CMDLINE} exists (kernel-install)"),
                sets,
                files,
                regen: None,
            }));
        } else if choice == MechanismChoice::KernelCmdline {
            return Err(not_avail(&format!("{KERNEL_CMDLINE} does not exist")));
        }
    }
    if want(Mechanism::Bls) {
        if !entries.is_empty() {
            return Ok(Some(BootConfig {
                mechanism: Mechanism::Bls,
                evidence: format!("BLS entries in {} (no grubby)", bls::ENTRIES_DIR),
                sets: entry_sets(&entries),
                files: entries,
                regen: None,
            }));
        } else if choice == MechanismChoice::Bls {
            return Err(not_avail(&format!("no entries in {}", bls::ENTRIES_DIR)));
        }
    }
    let files = grub_files(host)?;
    if files
        .first()
        .is_some_and(|(p, _)| p == Path::new(DEFAULT_GRUB))
    {
        let regen = grub_regen(tools, host).ok_or_else(|| {
            not_avail(
                "found /etc/default/grub but none of update-grub, grub2-mkconfig, grub-mkconfig",
            )
        })?;
        let named: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.display().to_string(), t.clone()))
            .collect();
        let args = grubfile::effective_args(&named).map_err(|message| BootError::Format {
            path: DEFAULT_GRUB.to_string(),
            message,
        })?;
        return Ok(Some(BootConfig {
            mechanism: Mechanism::Grub,
            evidence: format!("{DEFAULT_GRUB} exists; grub.cfg is regenerated with `{regen}`"),
            sets: vec![("GRUB_CMDLINE_LINUX(+_DEFAULT)".to_string(), args)],
            files,
            regen: Some(regen),
        }));
    } else if choice == MechanismChoice::Grub {
        return Err(not_avail("/etc/default/grub does not exist"));
    }
    Ok(None)
}

fn choice_of(m: Mechanism) -> MechanismChoice {
    match m {
        Mechanism::RpmOstree => MechanismChoice::RpmOstree,
        Mechanism::Grubby => MechanismChoice::Grubby,
        Mechanism::KernelCmdline => MechanismChoice::KernelCmdline,
        Mechanism::Bls => MechanismChoice::Bls,
        Mechanism::Grub => MechanismChoice::Grub,
    }
}

fn tool_err(tool: &str, out: &ToolOutput) -> BootError {
    BootError::Tool {
        tool: tool.to_string(),
        code: out.code,
        stderr: out.stderr.trim().to_string(),
    }
}

impl BootConfig {
    /// The next boot already gets what the edit asks for.
    pub fn satisfied(&self, edit: &ArgEdit) -> bool {
        self.sets.iter().all(|(_, t)| edit.satisfied_by(t))
    }

    /// Tokens the edit would take out and add, over all sets (deduplicated, in order).
    pub fn diff(&self, edit: &ArgEdit) -> (Vec<String>, Vec<String>) {
        let mut removed: Vec<String> = Vec::new();
        let mut added: Vec<String> = Vec::new();
        for (_, t) in &self.sets {
            let (r, a) = edit.diff(t);
            for x in r {
                if !removed.contains(&x) {
                    removed.push(x);
                }
            }
            for x in a {
                if !added.contains(&x) {
                    added.push(x);
                }
            }
        }
        (removed, added)
    }

    /// The steps that make the next boot satisfy `edit` (empty when it already does).
    pub fn change(&self, edit: &ArgEdit) -> Result<Vec<BootStep>, BootError> {
        if self.satisfied(edit) {
            return Ok(Vec::new());
        }
        let (removed, added) = self.diff(edit);
        let step = match self.mechanism {
            Mechanism::RpmOstree => {
                let mut args = vec!["kargs".to_string()];
                let mut undo = vec!["kargs".to_string()];
                for r in &removed {
                    args.push(format!("--delete-if-present={r}"));
                    undo.push(format!("--append-if-missing={r}"));
                }
                for a in &added {
                    args.push(format!("--append-if-missing={a}"));
                    undo.push(format!("--delete-if-present={a}"));
                }
                BootStep::Tool {
                    call: ToolCall {
                        program: "rpm-ostree".into(),
                        args,
                    },
                    undo: ToolCall {
                        program: "rpm-ostree".into(),
                        args: undo,
                    },
                }
            }
            Mechanism::Grubby => {
                let grubby = |add: &[String], remove: &[String]| {
                    let mut args = vec!["--update-kernel=ALL".to_string()];
                    if !add.is_empty() {
                        args.push(format!("--args={}", add.join(" ")));
                    }
                    if !remove.is_empty() {
                        args.push(format!("--remove-args={}", remove.join(" ")));
                    }
                    ToolCall {
                        program: "grubby".into(),
                        args,
                    }
                };
                BootStep::Tool {
                    call: grubby(&added, &removed),
                    undo: grubby(&removed, &added),
                }
            }
            Mechanism::KernelCmdline | Mechanism::Bls | Mechanism::Grub => {
                let new_texts: Vec<String> = if self.mechanism == Mechanism::Grub {
                    let named: Vec<(String, String)> = self
                        .files
                        .iter()
                        .map(|(p, t)| (p.display().to_string(), t.clone()))
                        .collect();
                    grubfile::edit_files(&named, edit).map_err(|message| BootError::Format {
                        path: DEFAULT_GRUB.to_string(),
                        message,
                    })?
                } else {
                    self.files
                        .iter()
                        .map(|(p, t)| {
                            if p == Path::new(KERNEL_CMDLINE) {
                                let toks = edit.apply(&split(t.trim()));
                                format!("{}\n", toks.join(" "))
                            } else {
                                bls::edit_entry(t, edit)
                            }
                        })
                        .collect()
                };
                let files = self
                    .files
                    .iter()
                    .zip(new_texts)
                    .filter(|((_, old), new)| old != new)
                    .map(|((p, old), new)| FileEdit {
                        path: p.clone(),
                        before: Some(old.clone()),
                        after: new,
                    })
                    .collect();
                BootStep::EditFiles {
                    files,
                    then: self.regen.clone(),
                }
            }
        };
        Ok(vec![step])
    }
}

/// Runs one step.
pub fn run_step(host: &HostRoot, tools: &dyn HostTools, step: &BootStep) -> Result<(), BootError> {
    match step {
        BootStep::EditFiles { files, then } => {
            for f in files {
                let mode = host.mode_of(&f.path).unwrap_or(0o644);
                host.write_atomic(&f.path, f.after.as_bytes(), mode)?;
            }
            if let Some(t) = then {
                run_tool(tools, t)?;
            }
        }
        BootStep::Tool { call, .. } => run_tool(tools, call)?,
    }
    Ok(())
}

/// Undoes one step (files back to their previous content, the inverse tool call).
pub fn undo_step(host: &HostRoot, tools: &dyn HostTools, step: &BootStep) -> Result<(), BootError> {
    match step {
        BootStep::EditFiles { files, then } => {
            // Work out every file first: a later operator edit that cannot be kept
            // refuses the whole undo before anything is written.
            let mut writes = Vec::new();
            for f in files {
                let current = host.read_string_opt(&f.path)?;
                let put = match (&f.before, current) {
                    (None, None) => None,
                    (Some(b), None) => Some(b.clone()),
                    (None, Some(c)) if c == f.after => None,
                    (None, Some(_)) => {
                        return Err(BootError::EditedSince {
                            path: f.path.clone(),
                        });
                    }
                    (Some(b), Some(c)) => {
                        Some(crate::journal::take_back(b, &f.after, &c).ok_or_else(|| {
                            BootError::EditedSince {
                                path: f.path.clone(),
                            }
                        })?)
                    }
                };
                writes.push((f, put));
            }
            for (f, put) in writes {
                let mode = host.mode_of(&f.path).unwrap_or(0o644);
                match put {
                    Some(text) => host.write_atomic(&f.path, text.as_bytes(), mode)?,
                    None => host.remove_file(&f.path)?,
                }
            }
            if let Some(t) = then {
                run_tool(tools, t)?;
            }
        }
        BootStep::Tool { undo, .. } => run_tool(tools, undo)?,
    }
    Ok(())
}

fn run_tool(tools: &dyn HostTools, call: &ToolCall) -> Result<(), BootError> {
    let out = tools.run(&call.program, &call.args)?;
    if out.success {
        tracing::info!(tool = %call, "boot configuration updated");
        Ok(())
    } else {
        Err(tool_err(&call.to_string(), &out))
    }
}
