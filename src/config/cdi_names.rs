//! The CDI name rules (vendor, class, kind, device name) of the CDI specification
//! (cncf-tags/container-device-interface, SPEC.md "Kind" and "Devices",
//! `pkg/parser/parser.go`; docs/facts/k8s.md#cdi-spec). They live in `config` so that resource names in the config are
//! refused when it is loaded without `config` importing `cdi`; [`crate::cdi`] re-exports
//! them.

/// A CDI name that breaks the rules of the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

fn name_chars_ok(s: &str, extra: &[char]) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
}

/// Checks the vendor part of a kind: a DNS-subdomain-like name of letters, digits,
/// `_ - .`, starting with a letter and ending with a letter or digit.
pub fn validate_vendor(vendor: &str) -> Result<(), NameError> {
    check_segment("vendor", vendor, 253, &['.'])
}

/// Checks the class part of a kind (≤ 63 characters; dots need cdiVersion 0.6.0 and
/// are refused here to keep the spec readable by older runtimes).
pub fn validate_class(class: &str) -> Result<(), NameError> {
    check_segment("class", class, 63, &[])
}

fn check_segment(what: &str, s: &str, max: usize, extra: &[char]) -> Result<(), NameError> {
    let first = s.chars().next();
    let last = s.chars().last();
    if s.is_empty() {
        return Err(NameError(format!("empty {what}")));
    }
    if s.len() > max {
        return Err(NameError(format!("{what} longer than {max} characters")));
    }
    if !first.is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(NameError(format!("{what} {s:?} must start with a letter")));
    }
    if !last.is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(NameError(format!(
            "{what} {s:?} must end with a letter or digit"
        )));
    }
    if !name_chars_ok(s, extra) {
        return Err(NameError(format!(
            "{what} {s:?} has a character outside letters, digits, '_', '-'{}",
            if extra.is_empty() { "" } else { ", '.'" }
        )));
    }
    Ok(())
}

/// Checks a kind, `vendor/class`.
pub fn validate_kind(kind: &str) -> Result<(), NameError> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| NameError(format!("{kind:?} is not vendor/class")))?;
    validate_vendor(vendor)?;
    validate_class(class)
}

/// Checks a device name: letters, digits, `_ - . :`, starting and ending alphanumeric.
pub fn validate_device_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError("empty device name".into()));
    }
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !ends_ok(name.chars().next()) || !ends_ok(name.chars().last()) {
        return Err(NameError(format!(
            "device name {name:?} must start and end with a letter or digit"
        )));
    }
    if !name_chars_ok(name, &['.', ':']) {
        return Err(NameError(format!(
            "device name {name:?} has a character outside letters, digits, '_', '-', '.', ':'"
        )));
    }
    Ok(())
}
