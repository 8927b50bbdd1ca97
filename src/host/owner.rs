//! File ownership and modes on host paths (sockets and directories other services use).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{HostError, HostRoot};

impl HostRoot {
    /// The gid of a group in the host's `/etc/group` (not this process's NSS view: in a
    /// DaemonSet the container's groups are not the host's).
    pub fn host_group_gid(&self, name: &str) -> Result<Option<u32>, HostError> {
        let Some(text) = self.read_string_opt("/etc/group")? else {
            return Ok(None);
        };
        for line in text.lines() {
            let mut f = line.split(':');
            if f.next() == Some(name) {
                let _pw = f.next();
                return Ok(f.next().and_then(|g| g.parse().ok()));
            }
        }
        Ok(None)
    }

    /// Sets the group of a host path (owner unchanged), following a final symlink.
    pub fn chown_group(&self, host_path: impl AsRef<Path>, gid: u32) -> Result<(), HostError> {
        let host_path = host_path.as_ref();
        // fchownat(fd, "", AT_EMPTY_PATH) on a handle resolved inside the root
        // (fchownat(2): an O_PATH descriptor is accepted with AT_EMPTY_PATH).
        let fd = self.node_fd(host_path, true)?;
        nix::unistd::fchownat(
            &fd,
            "",
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| HostError::io(host_path, std::io::Error::from(e)))
    }

    /// Sets the permission bits of a host path.
    pub fn set_mode(&self, host_path: impl AsRef<Path>, mode: u32) -> Result<(), HostError> {
        let host_path = host_path.as_ref();
        // fchmod cannot take an O_PATH handle and fchmodat has no AT_EMPTY_PATH before
        // Linux 6.6 (fchmodat2), so the handle resolved inside the root is reached
        // through its /proc/self/fd entry, the documented way (open(2), O_PATH).
        let fd = self.node_fd(host_path, true)?;
        let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::set_permissions(&via, std::fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::io(host_path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup_reads_the_host_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nqgsd:x:992:\nkvm:x:104:qemu\n",
        )
        .unwrap();
        let h = HostRoot::new(dir.path()).unwrap();
        assert_eq!(h.host_group_gid("qgsd").unwrap(), Some(992));
        assert_eq!(h.host_group_gid("nope").unwrap(), None);
        std::fs::write(dir.path().join("f"), "").unwrap();
        h.set_mode("/f", 0o640).unwrap();
        let m = std::fs::metadata(dir.path().join("f")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
    }
}
