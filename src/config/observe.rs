//! `[observe]`: how `cchost run` shows its health (docs/observability.md, docs/config.md).

use serde::{Deserialize, Serialize};

/// Whether `cchost run` raises Kubernetes Events on its Node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeEvents {
    /// When cchost runs in a cluster (`KUBERNETES_SERVICE_HOST` is set) or
    /// `labels.kubeconfig` names one.
    #[default]
    Auto,
    Off,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// `ADDRESS:PORT` of the health endpoint (`/healthz`, `/readyz`); empty: none.
    pub health_listen: String,
    /// `ADDRESS:PORT` of the Prometheus metrics endpoint (`/metrics`); empty: none.
    /// May be the same as `health_listen` (one listener answers both).
    pub metrics_listen: String,
    /// Kubernetes Events on the Node: "auto" or "off".
    pub kube_events: KubeEvents,
}

impl ObserveConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("health_listen", &self.health_listen),
            ("metrics_listen", &self.metrics_listen),
        ] {
            if !v.is_empty() && v.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "observe.{key} = {v:?}: expected ADDRESS:PORT, e.g. \"127.0.0.1:9560\" or \"[::]:9560\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn listen_addresses_are_checked() {
        let c = Config::from_toml(
            "[observe]\nhealth_listen = \"127.0.0.1:9560\"\nmetrics_listen = \"[::]:9561\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.observe.health_listen, "127.0.0.1:9560");
        let e = Config::from_toml(
            "[observe]\nmetrics_listen = \"9561\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("observe.metrics_listen") && e.contains("c.toml"),
            "{e}"
        );
        assert!(Config::default().observe.health_listen.is_empty());
    }
}
