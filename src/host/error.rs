use std::path::{Path, PathBuf};

/// Everything that can go wrong at the host door. Every variant names the host path.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}: larger than {limit} bytes; refusing to read it", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: too many levels of symbolic links", .0.display())]
    SymlinkLoop(PathBuf),
    #[error("{}: not a usable host path (must be absolute, with a file name)", .0.display())]
    BadPath(PathBuf),
    #[error("host root {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    #[error("{}: is {}, not the regular file or directory cchost expects; refusing to open it", path.display(), found.describe())]
    UnexpectedKind {
        path: PathBuf,
        found: super::NodeKind,
    },
    #[error(
        "{}: another cchost process holds this lock (gave up after {:.1} s); \
         let it finish, or raise --lock-wait",
        path.display(),
        waited.as_secs_f64()
    )]
    Locked {
        path: PathBuf,
        waited: std::time::Duration,
    },
}

impl HostError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        HostError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn malformed(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        HostError::Malformed {
            path: path.as_ref().to_path_buf(),
            what: what.into(),
        }
    }

    /// True when the file (or a directory on its way) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            HostError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENOTDIR)
            }
            _ => false,
        }
    }

    /// The host path this error is about.
    pub fn path(&self) -> Option<&Path> {
        match self {
            HostError::Io { path, .. }
            | HostError::TooLarge { path, .. }
            | HostError::Malformed { path, .. }
            | HostError::UnexpectedKind { path, .. }
            | HostError::Locked { path, .. } => Some(path),
            HostError::NotUtf8(p)
            | HostError::SymlinkLoop(p)
            | HostError::BadPath(p)
            | HostError::NotADirectory(p) => Some(p),
        }
    }
}
