//! Collateral freshness: `nextUpdate` in TCB info and QE identity JSON.
//!
//! TCB info and QE identity are valid for about 30 days; PCCS refreshes them daily and
//! QPL caches them for a week, so a stale copy anywhere in the chain makes verifiers fail
//! (docs/facts/dcap.md#collateral-expiry). cchost reads `nextUpdate` and warns well before it passes.

use serde::Serialize;
use serde_json::Value;

/// Where a `nextUpdate` came from and how far away it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// `tcbInfo` or `enclaveIdentity`.
    pub kind: String,
    /// The `id` field when present (`TDX`, `TD_QE`...).
    pub id: Option<String>,
    pub next_update: String,
    /// Seconds from now; negative = already past.
    pub seconds_left: i64,
}

impl Expiry {
    pub(crate) fn days_left(&self) -> f64 {
        self.seconds_left as f64 / 86_400.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no tcbInfo or enclaveIdentity object with a nextUpdate")]
    NoNextUpdate,
    #[error("nextUpdate {0:?} is not an RFC 3339 UTC time")]
    BadTime(String),
}

/// Reads `nextUpdate` from a TCB info (`{"tcbInfo": {...}}`) or QE identity
/// (`{"enclaveIdentity": {...}}`) document. `now` is Unix seconds.
pub fn next_update(json: &[u8], now: i64) -> Result<Expiry, ExpiryError> {
    let v: Value = serde_json::from_slice(json).map_err(|e| ExpiryError::NotJson(e.to_string()))?;
    for kind in ["tcbInfo", "enclaveIdentity"] {
        if let Some(obj) = v.get(kind)
            && let Some(nu) = obj.get("nextUpdate").and_then(Value::as_str)
        {
            let t = parse_rfc3339_utc(nu).ok_or_else(|| ExpiryError::BadTime(nu.to_string()))?;
            return Ok(Expiry {
                kind: kind.to_string(),
                id: obj.get("id").and_then(Value::as_str).map(str::to_string),
                next_update: nu.to_string(),
                seconds_left: t.saturating_sub(now),
            });
        }
    }
    Err(ExpiryError::NoNextUpdate)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or `+00:00`) to Unix seconds. Intel writes UTC only.
///
/// The grammar is RFC 3339 §5.6 (`date-fullyear` is four digits, so years 0000–9999;
/// `date-mday` is bounded by the month and leap year, §5.7 and Appendix C). An impossible
/// date (`2023-02-29`, `2024-04-31`) is refused, never rolled into the next month, and no
/// accepted input can overflow the arithmetic below.
pub fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let y = digits(d.next()?, 4)?;
    let mo = digits(d.next()?, 2)?;
    let da = digits(d.next()?, 2)?;
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&da) {
        return None;
    }
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix('z'))
        .or_else(|| time.strip_suffix("+00:00"))?;
    let (time, frac) = match time.split_once('.') {
        Some((t, f)) => (t, Some(f)),
        None => (time, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut t = time.split(':');
    let h = digits(t.next()?, 2)?;
    let mi = digits(t.next()?, 2)?;
    let se = digits(t.next()?, 2)?;
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Exactly `n` ASCII digits (no sign, no spaces), as RFC 3339's `DIGIT` repetitions.
fn digits(s: &str, n: usize) -> Option<i64> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// RFC 3339 Appendix C: a leap year is divisible by 4, except centuries not divisible by 400.
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
/// Callers pass years 0..=9999, so nothing here can overflow.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(
            parse_rfc3339_utc("2024-06-19T12:30:05.123Z"),
            Some(1_718_800_205)
        );
        assert_eq!(parse_rfc3339_utc("2024-06-19T12:30:05+02:00"), None);
        assert_eq!(parse_rfc3339_utc("2024-13-19T12:30:05Z"), None);
        assert_eq!(parse_rfc3339_utc("garbage"), None);
    }

    /// Issue 14.3: a year past 9999 overflowed `days * 86_400` (a panic with overflow
    /// checks, a wrapped "expired"/"valid for" in release); impossible days rolled over.
    #[test]
    fn huge_years_and_impossible_dates_are_refused() {
        let huge = br#"{"tcbInfo":{"nextUpdate":"926290448384-6-1T0:0:0Z"}}"#;
        assert!(matches!(next_update(huge, 0), Err(ExpiryError::BadTime(_))));
        for bad in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2024-1-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "10000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
        assert!(parse_rfc3339_utc("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339_utc("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339_utc("9999-12-31T23:59:60Z").is_some());
        let far = br#"{"tcbInfo":{"nextUpdate":"9999-12-31T23:59:59Z"}}"#;
        assert!(next_update(far, i64::MIN).unwrap().seconds_left > 0);
    }

    #[test]
    fn reads_tcb_info_and_qe_identity() {
        let now = parse_rfc3339_utc("2024-06-01T00:00:00Z").unwrap();
        let tcb = br#"{"tcbInfo":{"id":"TDX","version":3,"issueDate":"2024-05-20T00:00:00Z","nextUpdate":"2024-06-19T00:00:00Z"},"signature":"00"}"#;
        let e = next_update(tcb, now).unwrap();
        assert_eq!(e.kind, "tcbInfo");
        assert_eq!(e.id.as_deref(), Some("TDX"));
        assert_eq!(e.seconds_left, 18 * 86_400);
        let qe = br#"{"enclaveIdentity":{"id":"TD_QE","nextUpdate":"2024-05-31T00:00:00Z"}}"#;
        assert_eq!(next_update(qe, now).unwrap().seconds_left, -86_400);
        assert_eq!(next_update(b"{}", now), Err(ExpiryError::NoNextUpdate));
        assert!(matches!(
            next_update(b"\x00", now),
            Err(ExpiryError::NotJson(_))
        ));
    }
}
