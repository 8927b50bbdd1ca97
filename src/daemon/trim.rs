//! Hands back, once start-up is over, the pages of cchost's own executable that only
//! start-up used.
//!
//! Starting `cchost run` executes code that never runs again (argument and config
//! parsing, journal recovery, the first inventory, logging set-up), and every page
//! fault on a file mapping maps the surrounding pages too (the kernel's fault-around,
//! 64 KiB), so after start about half of the 13 MiB of machine code stays mapped
//! although the idle daemon uses a fraction of it (docs/performance.md, "Idle memory").
//!
//! Only the executable's **read-only** `PT_LOAD` segments (code, read-only data) are
//! touched: their pages are exact copies of the file, so dropping them loses nothing and
//! a later access reads them back in. Writable segments (`.data`, the RELRO segment whose
//! pointers the loader relocated) are never touched, and neither are shared libraries,
//! whose pages other processes share (dropping them would shrink our RSS and free
//! nothing). `MADV_PAGEOUT` (Linux 5.4) reclaims the pages; whatever it leaves mapped
//! (an older kernel, or a file the caller may not page out) is unmapped with
//! `MADV_DONTNEED`, which keeps it in the page cache as reclaimable cache.
//!
//! **Why it is kept (issue 12.7), and when it goes.** It saves ~4 MiB of resident
//! memory in a daemon that runs on every GPU node (docs/performance.md, "Idle memory"),
//! no crate offers it, and it is small, read-only-segment-only and best-effort (a
//! failure changes nothing but the figure). Remove it when a re-measurement shows it
//! saves under 1 MiB (a smaller binary, or start-up code moved out), or when a code
//! page faulted back in after it shows up in the Allocate latency figures.

use std::ffi::c_void;

/// One read-only range of the executable: page-aligned start and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    len: usize,
}

/// The executable's read-only `PT_LOAD` segments, each shrunk to the whole pages it
/// covers alone (a page shared with a neighbouring segment is left as it is).
fn readonly_segments() -> Vec<Range> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid dl_phdr_info for the duration of the
        // call; `data` is the `&mut Vec<Range>` handed to dl_iterate_phdr below.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Range>)) };
        let page = page_size();
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers of this object.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for ph in phdrs {
            if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
                continue;
            }
            let begin = info.dlpi_addr as usize + ph.p_vaddr as usize;
            let end = begin + ph.p_memsz as usize;
            let start = begin.div_ceil(page) * page;
            let stop = end / page * page;
            if stop > start {
                out.push(Range {
                    start,
                    len: stop - start,
                });
            }
        }
        // The first object is the executable itself; stop there.
        1
    }
    let mut out: Vec<Range> = Vec::new();
    // SAFETY: the callback only reads the headers it is given and writes to `out`,
    // which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), &mut out as *mut Vec<Range> as *mut c_void);
    }
    out
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// What [`trim_executable`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Bytes of read-only executable mappings advised.
    pub bytes: usize,
    /// Did `MADV_PAGEOUT` work (else only `MADV_DONTNEED` did)?
    pub paged_out: bool,
}

/// Drops the resident pages of the executable's read-only segments. Safe to call at
/// any time: code that runs afterwards (this function's own included) faults its pages
/// back in.
pub fn trim_executable() -> Trimmed {
    let mut t = Trimmed::default();
    for r in readonly_segments() {
        let addr = r.start as *mut c_void;
        // SAFETY: [start, start+len) lies inside a read-only file mapping of this
        // executable, page-aligned; both advices only drop clean pages that the kernel
        // reads back from the file on the next access.
        unsafe {
            if libc::madvise(addr, r.len, libc::MADV_PAGEOUT) == 0 {
                t.paged_out = true;
            }
            if libc::madvise(addr, r.len, libc::MADV_DONTNEED) == 0 {
                t.bytes += r.len;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_file_kib() -> u64 {
        // The test process's own status, not the host's: no HostRoot involved.
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find(|l| l.starts_with("RssFile:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn finds_the_code_segment_and_leaves_writable_ones() {
        let segs = readonly_segments();
        let here = finds_the_code_segment_and_leaves_writable_ones as *const () as usize;
        assert!(
            segs.iter()
                .any(|r| (r.start..r.start + r.len).contains(&here)),
            "{segs:?} does not hold {here:#x}"
        );
        // A writable static is in no range.
        static mut COUNTER: u64 = 0;
        let w = &raw const COUNTER as usize;
        assert!(!segs.iter().any(|r| (r.start..r.start + r.len).contains(&w)));
    }

    #[test]
    fn trimming_drops_resident_executable_pages_and_the_code_still_runs() {
        let before = rss_file_kib();
        let t = trim_executable();
        let after = rss_file_kib();
        assert!(t.bytes > 0);
        // The test binary is tens of MiB; after a trim only the pages touched since
        // (this test, the test harness) are back.
        assert!(after < before, "RssFile {before} KiB -> {after} KiB");
        // Code (and read-only data) still work after the trim.
        assert_eq!(format!("{:?}", vec![1, 2, 3]), "[1, 2, 3]");
    }
}
