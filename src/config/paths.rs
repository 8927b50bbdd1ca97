//! Host paths in the config: normalised and confined to the directory each belongs in,
//! so that a config line cannot aim cchost at an arbitrary host file (`/etc/shadow`,
//! `/etc/modules-load.d/../../etc/shadow.conf`).

use std::path::{Component, Path};

/// The path is absolute and already in normal form: no `.` or `..` component, no
/// doubled or trailing `/`, nothing but plain names after the root.
pub(crate) fn normal_absolute(key: &str, path: &Path) -> Result<(), String> {
    let text = path.to_string_lossy();
    let plain = path
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    if !path.is_absolute()
        || !plain
        || text.contains("//")
        || text.contains("/./")
        || text.ends_with("/.")
        || (text.len() > 1 && text.ends_with('/'))
        || text.chars().any(char::is_control)
    {
        return Err(format!(
            "{key} = {text:?}: must be an absolute path in normal form (no `.` or `..`, no `//`, no trailing `/`)"
        ));
    }
    Ok(())
}

/// The path is in normal form and its file sits directly in `dir`; with `suffix`, the
/// file name ends in it (`.conf`).
pub(crate) fn file_in(
    key: &str,
    path: &Path,
    dir: &str,
    suffix: Option<&str>,
) -> Result<(), String> {
    normal_absolute(key, path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let ok_dir = path.parent() == Some(Path::new(dir));
    let ok_name = match (&name, suffix) {
        (Some(n), Some(s)) => n.len() > s.len() && n.ends_with(s) && !n.starts_with('.'),
        (Some(n), None) => !n.starts_with('.'),
        (None, _) => false,
    };
    if !ok_dir || !ok_name {
        let want = match suffix {
            Some(s) => format!("{dir}/<name>{s}"),
            None => format!("{dir}/<name>"),
        };
        return Err(format!(
            "{key} = {:?}: must be a file {want} (cchost writes only there)",
            path.display()
        ));
    }
    Ok(())
}

/// The path is in normal form and lies under one of `dirs` (or is one of them).
pub fn under_one_of(key: &str, path: &Path, dirs: &[&str]) -> Result<(), String> {
    normal_absolute(key, path)?;
    if dirs.iter().any(|d| path.starts_with(d)) {
        return Ok(());
    }
    Err(format!(
        "{key} = {:?}: must be under {}",
        path.display(),
        dirs.join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_is_required() {
        for bad in [
            "etc/x",
            "/etc/../etc/shadow",
            "/etc/./x",
            "/etc//x",
            "/etc/x/",
            "/etc/x\n",
        ] {
            assert!(normal_absolute("k", Path::new(bad)).is_err(), "{bad}");
        }
        normal_absolute("k", Path::new("/etc/qgs.conf")).unwrap();
        normal_absolute("k", Path::new("/")).unwrap();
    }

    #[test]
    fn file_must_sit_in_its_directory() {
        let d = "/etc/modules-load.d";
        file_in(
            "k",
            Path::new("/etc/modules-load.d/cchost.conf"),
            d,
            Some(".conf"),
        )
        .unwrap();
        for bad in [
            "/etc/modules-load.d/../../etc/shadow.conf",
            "/etc/modules-load.d/sub/x.conf",
            "/etc/shadow",
            "/etc/modules-load.d/.conf",
            "/etc/modules-load.d/x.txt",
        ] {
            let e = file_in("k", Path::new(bad), d, Some(".conf")).unwrap_err();
            assert!(e.contains("k = "), "{e}");
        }
    }
}
