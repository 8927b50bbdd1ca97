//! Batch reads of one attribute in every subdirectory of a directory
//! (`/sys/kernel/iommu_groups/*/type`), resolving the directory once.

use std::path::Path;

use nix::fcntl::OFlag;

use super::{HostError, HostRoot};

/// One subdirectory's name and its attribute (`Ok(None)` when the file is missing).
pub type SubdirAttr = (String, Result<Option<String>, HostError>);

impl HostRoot {
    /// For each subdirectory `N` of `dir`: the trimmed content of `dir/N/attr`
    /// (`Ok(None)` when missing). Subdirectories come sorted by name.
    pub fn read_attr_in_subdirs(
        &self,
        dir: impl AsRef<Path>,
        attr: &str,
    ) -> Result<Vec<SubdirAttr>, HostError> {
        let dir = dir.as_ref();
        let names = self.list_dir_opt(dir)?;
        let fd = match self.dir_fd(dir) {
            Ok(fd) => fd,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let host_path = dir.join(&name).join(attr);
            // A real subdirectory (sysfs never has links here) is opened relative to the
            // directory's handle and read from there; anything else goes through full
            // in-root resolution.
            let sub = nix::fcntl::openat(
                &fd,
                name.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            );
            let value = if let Ok(sub) = sub {
                match self.read_small_at(&sub, attr, &host_path) {
                    Ok(s) => Ok(Some(s.trim().to_string())),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                self.read_attr_opt(&host_path)
            };
            out.push((name, value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_each_subdir_and_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("sys/kernel/iommu_groups");
        fs::create_dir_all(g.join("0")).unwrap();
        fs::create_dir_all(g.join("1")).unwrap();
        fs::create_dir_all(g.join("2")).unwrap();
        fs::write(g.join("0/type"), "DMA\n").unwrap();
        fs::write(g.join("1/type"), [0xff]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("x")).unwrap();
        fs::write(outside.path().join("x/type"), "identity\n").unwrap();
        symlink(outside.path().join("x"), g.join("3")).unwrap();
        let outside_file = outside.path().join("x/type");
        symlink(&outside_file, g.join("2/type")).unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let v = host
            .read_attr_in_subdirs("/sys/kernel/iommu_groups", "type")
            .unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].1.as_ref().unwrap().as_deref(), Some("DMA"));
        assert!(matches!(v[1].1, Err(HostError::NotUtf8(_))));
        // Both links are re-rooted: nothing outside the root is read.
        assert_eq!(v[2].1.as_ref().unwrap(), &None);
        assert_eq!(v[3].1.as_ref().unwrap(), &None);
        assert!(
            host.read_attr_in_subdirs("/nothing", "type")
                .unwrap()
                .is_empty()
        );
    }
}
