//! The CC mode an operator asks for ([`RequestedMode`]: `cc.mode_on_start`,
//! `cc.default_mode`, `[[cc.modes]] mode`, docs/config.md) as the switches take it: the
//! one place that maps the configuration's vocabulary onto [`NodeMode`] and
//! [`TargetMode`].

use super::TargetMode;
use super::node_mode::NodeMode;
use crate::config::RequestedMode;

impl NodeMode {
    /// The node mode `m` asks for; `None` for `keep` (the GPUs are left as they are).
    pub fn requested(m: RequestedMode) -> Option<NodeMode> {
        Some(match m {
            RequestedMode::Keep => return None,
            RequestedMode::On => NodeMode::Cc(TargetMode::On),
            RequestedMode::Off => NodeMode::Cc(TargetMode::Off),
            RequestedMode::Devtools => NodeMode::Cc(TargetMode::Devtools),
            RequestedMode::Ppcie => NodeMode::Ppcie,
        })
    }
}

impl TargetMode {
    /// The GPU CC mode `m` asks for; `None` for `keep`, and for `ppcie`, which is no CC
    /// mode of one GPU but a board-wide setting ([`NodeMode::Ppcie`]). The configuration
    /// refuses `ppcie` at load where only a GPU's CC mode fits (`cc.mode_on_start`,
    /// `[[cc.modes]]`).
    pub fn requested(m: RequestedMode) -> Option<TargetMode> {
        match NodeMode::requested(m)? {
            NodeMode::Cc(t) => Some(t),
            NodeMode::Ppcie => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RequestedMode; 5] = [
        RequestedMode::Keep,
        RequestedMode::On,
        RequestedMode::Off,
        RequestedMode::Devtools,
        RequestedMode::Ppcie,
    ];

    #[test]
    fn keep_is_no_mode_and_the_others_keep_their_name() {
        for m in ALL {
            match NodeMode::requested(m) {
                None => assert_eq!(m, RequestedMode::Keep),
                Some(n) => assert_eq!(n.as_str(), m.as_str()),
            }
        }
        assert_eq!(
            NodeMode::requested(RequestedMode::Ppcie),
            Some(NodeMode::Ppcie)
        );
    }

    #[test]
    fn mode_on_start_maps_to_a_target_or_to_nothing() {
        assert_eq!(TargetMode::requested(RequestedMode::Keep), None);
        assert_eq!(
            TargetMode::requested(RequestedMode::On),
            Some(TargetMode::On)
        );
        assert_eq!(
            TargetMode::requested(RequestedMode::Off),
            Some(TargetMode::Off)
        );
        assert_eq!(
            TargetMode::requested(RequestedMode::Devtools),
            Some(TargetMode::Devtools)
        );
        assert_eq!(TargetMode::requested(RequestedMode::Ppcie), None);
    }
}
