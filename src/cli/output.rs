//! What the commands print, and how: stdout through [`out!`]/[`outln!`] (a reader that
//! went away, `cchost gpu list | head -1`, ends the output quietly instead of a panic),
//! errors on stderr as text or, with `--log-format json`, as one JSON line like the logs.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::LogFormat;

/// Set once stdout's reader has gone: later output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Writes to stdout. A closed pipe (EPIPE) is not an error: the output is simply cut
/// short, as `head` asked, and the command's work and exit code stand. Any other
/// write error (a full disk behind a redirect) is returned.
pub fn write_out(args: fmt::Arguments<'_>, newline: bool) -> std::io::Result<()> {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        r => r,
    }
}

/// `print!` that never panics: returns the error from the enclosing function.
macro_rules! out {
    ($($arg:tt)*) => {
        if let Err(e) = $crate::cli::output::write_out(format_args!($($arg)*), false) {
            return Err(e.into());
        }
    };
}

/// `println!` that never panics: returns the error from the enclosing function.
macro_rules! outln {
    () => {
        if let Err(e) = $crate::cli::output::write_out(format_args!(""), true) {
            return Err(e.into());
        }
    };
    ($($arg:tt)*) => {
        if let Err(e) = $crate::cli::output::write_out(format_args!($($arg)*), true) {
            return Err(e.into());
        }
    };
}

pub(crate) use {out, outln};

/// Remembers the log format for [`error`].
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Reports an error on stderr: `error: …` as text, or one JSON line shaped like the
/// JSON logs (`timestamp`, `level`, `fields.message`, `target`).
pub fn error(message: &str) {
    let line = match FORMAT.get() {
        Some(LogFormat::Json) => serde_json::json!({
            "timestamp": rfc3339_now(),
            "level": "ERROR",
            "fields": { "message": message },
            "target": "cchost",
        })
        .to_string(),
        _ => format!("error: {message}"),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The current UTC time as RFC 3339 with microseconds (what tracing-subscriber writes).
fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level
    // Date Algorithms", days_from_civil inverse).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_has_the_rfc3339_shape() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 27, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}
