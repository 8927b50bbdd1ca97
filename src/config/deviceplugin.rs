use serde::{Deserialize, Serialize};

/// TODO(owner): fill in this section; document every key in docs/config.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicePluginConfig {}
