//! Taking back one change from a text file that may have been edited since: the restore
//! of `cchost undo` must never destroy an operator's later work.

/// What putting `before` back over a file cchost changed to `after` gives, now that the
/// file holds `current`:
///
/// - `current == after`: nobody touched it; the result is `before`.
/// - `current == before`: already put back (an interrupted undo); `before`.
/// - otherwise a merge, only where it is provably right: the three texts have the same
///   number of lines, and every line cchost changed still reads as cchost left it. Then
///   exactly those lines get their old text back and every other line keeps the
///   operator's edit.
///
/// `None` means the edits overlap or moved lines: the caller must refuse.
pub fn take_back(before: &str, after: &str, current: &str) -> Option<String> {
    if current == after || current == before {
        return Some(before.to_string());
    }
    let b: Vec<&str> = before.split_inclusive('\n').collect();
    let a: Vec<&str> = after.split_inclusive('\n').collect();
    let c: Vec<&str> = current.split_inclusive('\n').collect();
    if b.len() != a.len() || a.len() != c.len() {
        return None;
    }
    let mut out = String::with_capacity(current.len());
    for i in 0..c.len() {
        if b[i] != a[i] {
            if c[i] != a[i] {
                return None;
            }
            out.push_str(b[i]);
        } else {
            out.push_str(c[i]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"quiet\"\n";
    const AFTER: &str = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"quiet intel_iommu=on\"\n";

    #[test]
    fn untouched_and_already_restored_give_the_original() {
        assert_eq!(take_back(BEFORE, AFTER, AFTER).as_deref(), Some(BEFORE));
        assert_eq!(take_back(BEFORE, AFTER, BEFORE).as_deref(), Some(BEFORE));
    }

    #[test]
    fn an_edit_elsewhere_is_kept() {
        let current = "GRUB_TIMEOUT=10\nGRUB_CMDLINE_LINUX=\"quiet intel_iommu=on\"\n";
        assert_eq!(
            take_back(BEFORE, AFTER, current).as_deref(),
            Some("GRUB_TIMEOUT=10\nGRUB_CMDLINE_LINUX=\"quiet\"\n")
        );
    }

    #[test]
    fn an_edit_of_the_same_line_or_a_new_line_is_refused() {
        let same = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"quiet intel_iommu=on nosmt\"\n";
        assert_eq!(take_back(BEFORE, AFTER, same), None);
        let added = format!("{AFTER}GRUB_DISABLE_OS_PROBER=true\n");
        assert_eq!(take_back(BEFORE, AFTER, &added), None);
    }
}
