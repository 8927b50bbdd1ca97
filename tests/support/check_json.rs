//! Reading `cchost check --json` (the `cchost.check/v1` tree, docs/check-json.md).

use serde_json::Value;

/// The check `id` anywhere in a list of check nodes (the report's `checks`, or a node's
/// `children`), depth first.
pub fn find_check<'a>(checks: &'a Value, id: &str) -> Option<&'a Value> {
    checks.as_array()?.iter().find_map(|n| {
        if n["id"] == id {
            Some(n)
        } else {
            find_check(&n["children"], id)
        }
    })
}
