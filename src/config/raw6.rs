//! The TOML shape of `[dhcp6]` and `[[subnet6]]` (DHCPv6): strings as
//! written, defaults filled in, unknown keys refused. Validated in
//! [`super::dhcp6`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dhcp6 {
    pub enabled: bool,
    pub listen: String,
    pub interfaces: Vec<String>,
    pub per_client_rate: String,
    pub per_client_burst: u32,
    pub rapid_commit: bool,
    pub sol_max_rt: String,
    pub inf_max_rt: String,
}

impl Default for Dhcp6 {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "[::]:547".into(),
            interfaces: Vec::new(),
            per_client_rate: "10/s".into(),
            per_client_burst: 20,
            rapid_commit: false,
            sol_max_rt: "1h".into(),
            inf_max_rt: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet6 {
    pub id: String,
    pub prefix: String,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub pd_pools: Vec<PdPool>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default = "default_preferred")]
    pub preferred_lifetime: String,
    #[serde(default = "default_valid")]
    pub valid_lifetime: String,
    #[serde(default)]
    pub relays: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdPool {
    pub prefix: String,
    pub delegated_len: u8,
}

fn default_preferred() -> String {
    "30m".into()
}

fn default_valid() -> String {
    "1h".into()
}
