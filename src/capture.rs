//! `cchost capture DIR`: copies exactly the host files cchost reads into a tree that is
//! itself a valid host root (a bug report, or the seed of a new fixture).
//!
//! The inventory and the readiness check run once on a recording [`HostRoot`]; every
//! path they touched is then copied by walking it component by component in the
//! source, as the resolver does: symlinks met on the way are recreated with the same
//! (relative) target, directories as directories, the final node by how it was used
//! (see [`Access`]). Device nodes become empty regular files (git cannot store nodes),
//! and `/dev/kmsg` keeps only the records the inventory finds relevant. See
//! docs/capture.md for what is included and excluded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::host::kmsg::KMSG;
use crate::host::{Access, HostError, HostRoot, NodeKind};
use crate::inventory::Inventory;
use crate::inventory::kernel_log::is_relevant;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture directory {}: {source}", path.display())]
    Dest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capture directory {} is not empty", .0.display())]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What a capture wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub files: usize,
    pub links: usize,
    pub dirs: usize,
    /// Host paths cchost asked for that were not there (not an error: absence is a fact).
    pub absent: usize,
}

const CMDLINE: &str = "/proc/cmdline";

/// Kernel arguments whose whole value identifies this machine's disks or volumes.
const ID_ARGS: &[&str] = &[
    "rd.luks.uuid",
    "rd.luks.name",
    "luks.uuid",
    "rd.md.uuid",
    "rd.lvm.lv",
    "rd.lvm.vg",
    "cryptdevice",
    "boot_uuid",
];

/// Disk and volume identifiers in a kernel command line replaced by `scrubbed`, the
/// argument names kept (so the capture still says e.g. that `root=` names a UUID):
/// `root=UUID=…`, `resume=PARTUUID=…`, `LABEL=`/`PARTLABEL=` values, and the values of
/// [`ID_ARGS`]. Everything else (what cchost judges) is left as it is.
pub fn scrub_cmdline(text: &str) -> String {
    const TAGS: &[&str] = &["UUID=", "PARTUUID=", "LABEL=", "PARTLABEL=", "ZFS="];
    let scrub = |arg: &str| -> String {
        let Some((key, value)) = arg.split_once('=') else {
            return arg.to_string();
        };
        if ID_ARGS.contains(&key) {
            return format!("{key}=scrubbed");
        }
        for tag in TAGS {
            if let Some(rest) = value.strip_prefix(tag) {
                let _ = rest;
                return format!("{key}={tag}scrubbed");
            }
        }
        // `root=/dev/disk/by-uuid/…` and friends.
        if value.starts_with("/dev/disk/by-") {
            let dir = value.rsplit_once('/').map_or(value, |(d, _)| d);
            return format!("{key}={dir}/scrubbed");
        }
        arg.to_string()
    };
    let mut out: String = text
        .split_whitespace()
        .map(scrub)
        .collect::<Vec<_>>()
        .join(" ");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Linux gives up after 40 links; so does the walk.
const MAX_LINKS: usize = 40;

/// Runs the inventory and the check on `host` with recording on, then copies what they
/// touched into `dest` (created; must be empty). Returns the inventory it saw.
pub fn capture(
    host: &HostRoot,
    config: &Config,
    dest: &Path,
) -> Result<(Inventory, CaptureSummary), CaptureError> {
    prepare_dest(dest)?;
    let rec = host.with_recorder();
    let inv = Inventory::collect(&rec, config);
    let _ = crate::check::Report::new(&inv, config, crate::check::Profile::Auto);
    let mut copier = Copier {
        src: host,
        dest,
        summary: CaptureSummary::default(),
    };
    // Listings first: their entries are stand-ins that later reads fill in.
    let mut paths = rec.recorded();
    paths.sort_by_key(|(p, a)| (*a == Access::Read, p.clone()));
    for (path, access) in paths {
        copier.copy(&path, access)?;
    }
    Ok((inv, copier.summary))
}

fn prepare_dest(dest: &Path) -> Result<(), CaptureError> {
    let io = |source| CaptureError::Dest {
        path: dest.to_path_buf(),
        source,
    };
    fs::create_dir_all(dest).map_err(io)?;
    if fs::read_dir(dest).map_err(io)?.next().is_some() {
        return Err(CaptureError::NotEmpty(dest.to_path_buf()));
    }
    Ok(())
}

struct Copier<'a> {
    src: &'a HostRoot,
    dest: &'a Path,
    summary: CaptureSummary,
}

impl Copier<'_> {
    fn out(&self, host_path: &Path) -> PathBuf {
        let rel = host_path.strip_prefix("/").unwrap_or(host_path);
        self.dest.join(rel)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError {
        let path = path.to_path_buf();
        move |source| CaptureError::Dest { path, source }
    }

    /// Walks `host_path` in the source, recreating every component in the capture.
    fn copy(&mut self, host_path: &Path, access: Access) -> Result<(), CaptureError> {
        let mut pending: Vec<PathBuf> = Vec::new();
        push_components(&mut pending, host_path);
        // `cur` never holds a symlink: links are expanded into `pending`.
        let mut cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            if comp.as_os_str() == ".." {
                cur.pop();
                continue;
            }
            let last = pending.is_empty();
            let candidate = cur.join(&comp);
            let Some(kind) = self.src.kind(&candidate) else {
                self.summary.absent += 1;
                return Ok(());
            };
            match kind {
                NodeKind::Symlink => {
                    let target = self.src.read_link(&candidate)?;
                    self.put_link(&candidate, &target)?;
                    if last && matches!(access, Access::Link | Access::Node) {
                        return Ok(());
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(()); // a loop: the links themselves are the capture
                    }
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                NodeKind::Dir => {
                    self.put_dir(&candidate)?;
                    cur = candidate;
                    if last && access == Access::List {
                        self.copy_listing(&cur)?;
                    }
                }
                other => {
                    if last {
                        self.put_leaf(&candidate, other, access)?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A listed directory's entries: links as links, directories as directories, and
    /// anything else as an empty stand-in (filled in if it is also read).
    fn copy_listing(&mut self, dir: &Path) -> Result<(), CaptureError> {
        for name in self.src.list_dir(dir)? {
            let p = dir.join(&name);
            match self.src.kind(&p) {
                Some(NodeKind::Symlink) => {
                    let target = self.src.read_link(&p)?;
                    self.put_link(&p, &target)?;
                }
                Some(NodeKind::Dir) => self.put_dir(&p)?,
                Some(k) => self.put_leaf(&p, k, Access::Node)?,
                None => {}
            }
        }
        Ok(())
    }

    fn put_dir(&mut self, host_path: &Path) -> Result<(), CaptureError> {
        let out = self.out(host_path);
        if !out.is_dir() {
            fs::create_dir_all(&out).map_err(self.io(&out))?;
            self.summary.dirs += 1;
        }
        Ok(())
    }

    fn put_link(&mut self, host_path: &Path, target: &Path) -> Result<(), CaptureError> {
        let out = self.out(host_path);
        if fs::symlink_metadata(&out).is_ok() {
            return Ok(());
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(self.io(parent))?;
        }
        symlink(target, &out).map_err(self.io(&out))?;
        self.summary.links += 1;
        Ok(())
    }

    fn put_leaf(
        &mut self,
        host_path: &Path,
        kind: NodeKind,
        access: Access,
    ) -> Result<(), CaptureError> {
        let out = self.out(host_path);
        let existed = fs::symlink_metadata(&out).is_ok();
        let contents = if host_path == Path::new(KMSG) {
            match access {
                Access::Read => self.kmsg()?,
                _ if existed => return Ok(()),
                _ => Vec::new(),
            }
        } else if access == Access::Read && kind == NodeKind::File {
            match self.src.read_bytes(host_path) {
                Ok(b) if host_path == Path::new(CMDLINE) => {
                    scrub_cmdline(&String::from_utf8_lossy(&b)).into_bytes()
                }
                Ok(b) => b,
                // Unreadable (too large, a permission): the inventory saw the same
                // error; the capture keeps the file's name only.
                Err(e) => {
                    tracing::warn!(error = %e, "capture: keeping an empty stand-in");
                    Vec::new()
                }
            }
        } else if existed {
            return Ok(()); // a stand-in never overwrites content
        } else {
            Vec::new()
        };
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(self.io(parent))?;
        }
        fs::write(&out, contents).map_err(self.io(&out))?;
        if !existed {
            self.summary.files += 1;
        }
        Ok(())
    }

    /// `/dev/kmsg` reduced to the records the inventory uses, in the device's format.
    fn kmsg(&self) -> Result<Vec<u8>, CaptureError> {
        let log = match self.src.kernel_log() {
            Ok(l) => l,
            Err(_) => return Ok(Vec::new()),
        };
        let mut out = String::new();
        for r in log.records.iter().filter(|r| is_relevant(&r.message)) {
            out.push_str(&format!(
                "{},{},{},-;{}\n",
                r.level, r.seq, r.ts_usec, r.message
            ));
        }
        Ok(out.into_bytes())
    }
}

fn push_components(stack: &mut Vec<PathBuf>, p: &Path) {
    let comps: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}
