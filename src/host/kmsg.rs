//! The kernel log, from `/dev/kmsg`.
//!
//! Some facts live only there (the TDX module's initialisation result, the SEV firmware
//! API version, why SNP was turned off). On a live host `/dev/kmsg` is a character
//! device: each `read(2)` returns exactly one record, and a non-blocking reader gets
//! `EAGAIN` at the end of the buffer. Fixture trees and captures cannot hold device
//! nodes, so there `/dev/kmsg` is a regular file holding the same records, one per
//! line (`6,123,456,-;message`), and it is read as text.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use serde::{Deserialize, Serialize};

use super::{HostError, HostRoot, MAX_READ_BYTES};

pub const KMSG: &str = "/dev/kmsg";

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgRecord {
    /// Syslog level (0 = emergency … 7 = debug).
    pub level: u8,
    pub seq: u64,
    /// Microseconds since boot.
    pub ts_usec: u64,
    pub message: String,
}

/// Where the records came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KmsgSource {
    /// The live `/dev/kmsg` character device.
    Device,
    /// A regular file in the same format (fixture or capture).
    File,
}

/// The kernel log as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLog {
    pub source: KmsgSource,
    pub records: Vec<KmsgRecord>,
    /// Lines that were not records (a capture edited by hand); kept for messages.
    pub skipped: usize,
    /// The oldest records left out to keep the newest [`MAX_READ_BYTES`] of the log.
    pub dropped: usize,
}

/// Records, keeping only the newest `limit` bytes of them (each record counted with
/// its line end): a log over the limit loses its oldest records, not all of them.
struct NewestRecords {
    records: std::collections::VecDeque<(KmsgRecord, u64)>,
    bytes: u64,
    limit: u64,
    dropped: usize,
}

impl NewestRecords {
    fn new(limit: u64) -> Self {
        NewestRecords {
            records: std::collections::VecDeque::new(),
            bytes: 0,
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, r: KmsgRecord, size: u64) {
        self.records.push_back((r, size));
        self.bytes += size;
        while self.bytes > self.limit {
            let Some((_, n)) = self.records.pop_front() else {
                break;
            };
            self.bytes -= n;
            self.dropped += 1;
        }
    }

    fn into_parts(self) -> (Vec<KmsgRecord>, usize) {
        (
            self.records.into_iter().map(|(r, _)| r).collect(),
            self.dropped,
        )
    }
}

/// Parses one record: `prefix;message` where prefix is
/// `level+facility,seq,timestamp,flags[,…]`. Continuation lines (` KEY=value`) are
/// not records and give `None`.
pub fn parse_record(line: &str) -> Option<KmsgRecord> {
    if line.starts_with(' ') {
        return None;
    }
    let (prefix, message) = line.split_once(';')?;
    let mut fields = prefix.split(',');
    let prio: u32 = fields.next()?.trim().parse().ok()?;
    let seq: u64 = fields.next()?.trim().parse().ok()?;
    let ts_usec: u64 = fields.next()?.trim().parse().ok()?;
    Some(KmsgRecord {
        level: (prio & 7) as u8,
        seq,
        ts_usec,
        // The kernel escapes non-printable bytes as \xNN; the message is one line.
        message: message.trim_end_matches('\n').to_string(),
    })
}

/// Major and minor number of `/dev/kmsg` (the `mem` driver's minor 11,
/// Documentation/admin-guide/devices.txt).
const KMSG_DEVICE: (u32, u32) = (1, 11);

/// At most this much is read from the kmsg device in one call: four times the largest
/// ring buffer the kernel allows (CONFIG_LOG_BUF_SHIFT <= 25, init/Kconfig), so a log
/// being written faster than it is read cannot keep the reader going forever.
const MAX_DEVICE_READ_BYTES: u64 = 4 << 25;

impl HostRoot {
    /// Reads the whole kernel log (bounded by [`MAX_READ_BYTES`] in total).
    pub fn kernel_log(&self) -> Result<KernelLog, HostError> {
        let path = Path::new(KMSG);
        self.record(path, super::Access::Read);
        // One open, inside the root (open.rs), non-blocking (a FIFO planted there must
        // not wait for a writer); what it is decides how it is read.
        let file = std::fs::File::from(self.open_in_root(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
        )?);
        let meta = file.metadata().map_err(|e| HostError::io(path, e))?;
        if meta.file_type().is_char_device() {
            // Only the kernel log itself, character device 1:11
            // (Documentation/admin-guide/devices.txt): any other device planted here
            // (/dev/zero, a tty) would be read forever or block.
            let rdev = meta.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if (major, minor) != KMSG_DEVICE {
                return Err(HostError::malformed(
                    path,
                    format!(
                        "character device {major}:{minor} is not the kernel log \
                         (/dev/kmsg is {}:{}); refusing to read it",
                        KMSG_DEVICE.0, KMSG_DEVICE.1
                    ),
                ));
            }
            return read_kmsg_device(file, path);
        }
        if !meta.is_file() {
            return Err(HostError::UnexpectedKind {
                path: path.to_path_buf(),
                found: super::kind_of(&meta.file_type()),
            });
        }
        let (text, mut dropped) = read_newest_text(file, path, MAX_READ_BYTES)?;
        let mut newest = NewestRecords::new(MAX_READ_BYTES);
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_record(line) {
                Some(r) => newest.push(r, line.len() as u64 + 1),
                None if line.starts_with(' ') => {}
                None => skipped += 1,
            }
        }
        let (records, more) = newest.into_parts();
        dropped += more;
        Ok(KernelLog {
            source: KmsgSource::File,
            records,
            skipped,
            dropped,
        })
    }
}

/// The records of the kmsg device, opened non-blocking: one record per `read(2)`, and
/// `EAGAIN` once the reader has caught up (Documentation/ABI/testing/dev-kmsg).
fn read_kmsg_device(mut f: std::fs::File, path: &Path) -> Result<KernelLog, HostError> {
    // One record per read; a buffer smaller than the record gives EINVAL. The
    // kernel's upper bound for a formatted record is 8 KiB (CONSOLE_EXT_LOG_MAX).
    let mut buf = vec![0u8; 16 * 1024];
    let mut newest = NewestRecords::new(MAX_READ_BYTES);
    let mut skipped = 0;
    let mut total: u64 = 0;
    loop {
        if total >= MAX_DEVICE_READ_BYTES {
            break;
        }
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                let text = String::from_utf8_lossy(&buf[..n]);
                match text.lines().next().and_then(parse_record) {
                    Some(r) => newest.push(r, n as u64),
                    None => skipped += 1,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while we read; the next read goes on
            // from the oldest one still there.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HostError::io(path, e)),
        }
    }
    let (records, dropped) = newest.into_parts();
    Ok(KernelLog {
        source: KmsgSource::Device,
        records,
        skipped,
        dropped,
    })
}

/// A kmsg file as UTF-8 text, at most its last `limit` bytes (from the first whole
/// line in them), and whether anything before was left out (1 if so: the number of
/// records in the part not read is not known).
fn read_newest_text(
    mut f: std::fs::File,
    path: &Path,
    limit: u64,
) -> Result<(String, usize), HostError> {
    use std::io::{Seek, SeekFrom};
    let len = f.metadata().map_err(|e| HostError::io(path, e))?.len();
    let start = len.saturating_sub(limit);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| HostError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| HostError::io(path, e))?;
    let mut dropped = 0;
    if start > 0 {
        // The first line is cut (or starts exactly at the cut): skip it whole.
        let first_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_end);
        dropped = 1;
    }
    let text = String::from_utf8(bytes).map_err(|_| HostError::NotUtf8(path.to_path_buf()))?;
    Ok((text, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_skips_continuations() {
        let r = parse_record("6,1234,5678901,-;virt/tdx: module initialized").unwrap();
        assert_eq!(r.level, 6);
        assert_eq!(r.seq, 1234);
        assert_eq!(r.ts_usec, 5678901);
        assert_eq!(r.message, "virt/tdx: module initialized");
        // facility 3 (daemon) level 4 -> prio 28
        assert_eq!(parse_record("28,1,2,c;x").unwrap().level, 4);
        // Messages may contain ';'.
        assert_eq!(parse_record("6,1,2,-;a;b").unwrap().message, "a;b");
        assert!(parse_record(" SUBSYSTEM=pci").is_none());
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("x,1,2,-;m").is_none());
    }

    #[test]
    fn regular_file_is_read_as_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(
            dir.path().join("dev/kmsg"),
            "6,1,10,-;first\n SUBSYSTEM=acpi\n4,2,20,-;second\nnot a record\n",
        )
        .unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let log = host.kernel_log().unwrap();
        assert_eq!(log.source, KmsgSource::File);
        assert_eq!(log.records.len(), 2);
        assert_eq!(log.records[1].message, "second");
        assert_eq!(log.skipped, 1);
    }

    /// Issue 14.10: a log over the read limit used to be dropped whole; the newest
    /// records are kept.
    #[test]
    fn a_log_over_the_limit_keeps_its_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        let mut text = String::new();
        let mut seq = 0;
        while text.len() as u64 <= MAX_READ_BYTES + 4096 {
            seq += 1;
            text.push_str(&format!("6,{seq},{seq},-;{}\n", "x".repeat(100)));
        }
        text.push_str("6,999999999,1,-;virt/tdx: module initialized\n");
        std::fs::write(dir.path().join("dev/kmsg"), &text).unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let log = host.kernel_log().unwrap();
        assert!(log.dropped > 0);
        assert_eq!(
            log.records.last().unwrap().message,
            "virt/tdx: module initialized"
        );
        assert!(log.records.len() > 1000);
        assert!(log.records.first().unwrap().seq > 1);
        let mut n = NewestRecords::new(10);
        for i in 0..5 {
            let r = parse_record(&format!("6,{i},0,-;m")).unwrap();
            n.push(r, 4);
        }
        let (kept, dropped) = n.into_parts();
        assert_eq!((kept.len(), dropped), (2, 3));
        assert_eq!(kept[0].seq, 3);
    }

    #[test]
    fn missing_kmsg_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        assert!(host.kernel_log().unwrap_err().is_not_found());
    }

    #[test]
    fn non_utf8_kmsg_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/kmsg"), [0xff, 0xfe, b'\n']).unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let err = host.kernel_log().unwrap_err();
        assert!(matches!(err, HostError::NotUtf8(_)), "{err}");
    }

    /// Live: holds on any Linux machine where the test may open /dev/kmsg (root, or
    /// dmesg_restrict=0); elsewhere it checks that the error names the path.
    #[test]
    fn live_kmsg_reads_until_eagain() {
        match HostRoot::live().kernel_log() {
            Ok(log) => {
                assert_eq!(log.source, KmsgSource::Device);
                let seqs: Vec<u64> = log.records.iter().map(|r| r.seq).collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence increases");
            }
            Err(e) => assert!(e.to_string().contains("/dev/kmsg"), "{e}"),
        }
    }
}
