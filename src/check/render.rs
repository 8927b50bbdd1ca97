//! Text rendering of a check report, readable on an 80-column terminal.

use super::{Node, Report, Status};

pub(crate) const WIDTH: usize = 80;

/// Renders the report as text (no colour; a pager and a log file read it the same).
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let profile = match (report.profile, report.resolved_profile) {
        (super::Profile::Auto, Some(p)) => format!("{} (auto)", name(p)),
        (super::Profile::Auto, None) => "auto (no TEE for this CPU)".to_string(),
        (p, _) => name(p).to_string(),
    };
    out.push_str(&format!("cchost check, profile {profile}\n\n"));
    for n in &report.checks {
        node(&mut out, n, 0, false);
    }
    let s = report.summary;
    out.push('\n');
    out.push_str(&format!(
        "{}: {} passed, {} failed, {} warnings, {} skipped\n",
        if report.ready { "READY" } else { "NOT READY" },
        s.pass,
        s.fail,
        s.warn,
        s.skip
    ));
    if !report.ready {
        out.push_str("Fix first:\n");
        // One line per distinct remedy, with every check it fixes.
        let mut remedies: Vec<(&str, Vec<&str>)> = Vec::new();
        for f in report.findings.iter().filter(|f| f.status == Status::Fail) {
            let r = f.remedy.as_deref().unwrap_or(&f.message);
            match remedies.iter_mut().find(|(x, _)| *x == r) {
                Some((_, ids)) => ids.push(&f.id),
                None => remedies.push((r, vec![&f.id])),
            }
        }
        for (r, ids) in remedies {
            wrap_into(
                &mut out,
                "  - ",
                "    ",
                &format!("{r} ({})", ids.join(", ")),
            );
        }
    }
    out
}

fn name(p: super::Profile) -> &'static str {
    match p {
        super::Profile::Tdx => "tdx",
        super::Profile::Snp => "snp",
        super::Profile::Auto => "auto",
    }
}

fn node(out: &mut String, n: &Node, depth: usize, under_failure: bool) {
    // Deep trees still leave at least 40 columns for text.
    let indent = "  ".repeat(depth.min(10));
    let tag = format!("{indent}[{}] ", n.outcome.status.label());
    let cont = " ".repeat(tag.chars().count());
    let line = if n.outcome.message.is_empty() {
        n.title.clone()
    } else {
        format!("{}: {}", n.title, n.outcome.message)
    };
    wrap_into(out, &tag, &cont, &line);
    if let Some(r) = &n.outcome.remedy
        && matches!(n.outcome.status, Status::Fail | Status::Warn)
    {
        wrap_into(out, &format!("{cont}fix: "), &format!("{cont}     "), r);
    }
    // Below a FAIL the skipped children show what is still to come; below a SKIP
    // (nothing to check) they are noise.
    if n.outcome.status == Status::Skip && !under_failure {
        return;
    }
    let failed = under_failure || n.outcome.status == Status::Fail;
    for c in &n.children {
        node(out, c, depth + 1, failed);
    }
}

/// Word-wraps `text` to [`WIDTH`], the first line after `first`, the others after
/// `rest`. A word longer than a line is kept whole.
pub(crate) fn wrap_into(out: &mut String, first: &str, rest: &str, text: &str) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if !empty && len + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}
