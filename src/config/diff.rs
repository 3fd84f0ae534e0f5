//! Which keys differ between two configs, and which of them SIGHUP applies
//! live. Everything not on the [`LIVE`] list needs a restart, so a key added
//! later is reported as restart-only until a service learns to reload it.

use toml::Value;

use super::RawConfig;

/// Keys (or whole sections, by prefix) that a SIGHUP applies at once.
pub const LIVE: &[&str] = &[
    "dhcp.per_client_rate",
    "dhcp.per_client_burst",
    "dhcp.global_rate",
    "dhcp.new_lease_rate",
    "dhcp.max_leases_per_port",
    "dhcp.max_client_quotas",
    "dhcp6.per_client_rate",
    "dhcp6.per_client_burst",
    "subnet",
    "subnet6",
    "reservation",
    "gateway.per_client_rate",
    "gateway.per_client_burst",
    "gateway.body_budget",
    "gateway.public_client_metrics",
    "gateway.max_quota_clients",
    "gateway.response_budget",
    "gateway.send_stall_timeout",
    "route",
    "memory",
];

/// One changed key, named as in the file (`gateway.max_body`, `route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub live: bool,
}

/// Whether SIGHUP applies `key` without a restart.
pub fn is_live(key: &str) -> bool {
    LIVE.iter().any(|p| {
        key == *p
            || key
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The keys whose resolved values differ between `old` and `new`, sorted. Arrays of tables (`subnet`, `reservation`, `route`) count as one key.
pub fn changes(old: &RawConfig, new: &RawConfig) -> Vec<Change> {
    let mut keys = Vec::new();
    match (Value::try_from(old), Value::try_from(new)) {
        (Ok(a), Ok(b)) => walk("", Some(&a), Some(&b), &mut keys),
        // Serializing our own shape cannot fail; if it ever did, say so.
        _ => keys.push("(config)".to_owned()),
    }
    keys.into_iter()
        .map(|key| Change {
            live: is_live(&key),
            key,
        })
        .collect()
}

/// Keys that changed and need a restart.
pub fn restart_only(old: &RawConfig, new: &RawConfig) -> Vec<String> {
    changes(old, new)
        .into_iter()
        .filter(|c| !c.live)
        .map(|c| c.key)
        .collect()
}

fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    if let (Some(Value::Table(ta)), Some(Value::Table(tb))) = (a, b) {
        let mut names: Vec<&String> = ta.keys().collect();
        names.extend(tb.keys().filter(|k| !ta.contains_key(*k)));
        for name in names {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            walk(&key, ta.get(name), tb.get(name), out);
        }
    } else if a != b {
        out.push(prefix.to_owned());
    }
}

/// `vpcbox check --diff` output: one line per changed key.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let mut out = String::new();
    for c in changes {
        let how = if c.live {
            "applied by SIGHUP"
        } else {
            "needs a restart"
        };
        out.push_str(&format!("{:<40} {how}\n", c.key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_raw;

    fn raw(text: &str) -> RawConfig {
        parse_raw(text, "test").unwrap()
    }

    #[test]
    fn names_each_changed_key_and_whether_it_is_live() {
        let a = raw("");
        let b = raw(
            "[gateway]\nmax_body = \"2MiB\"\nper_client_rate = \"7/s\"\n\
             [dhcp]\nworkers = 9\n[[route]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:9\"\n",
        );
        let got = changes(&a, &b);
        let keys: Vec<(&str, bool)> = got.iter().map(|c| (c.key.as_str(), c.live)).collect();
        assert!(keys.contains(&("gateway.max_body", false)), "{keys:?}");
        assert!(
            keys.contains(&("gateway.per_client_rate", true)),
            "{keys:?}"
        );
        assert!(keys.contains(&("dhcp.workers", false)), "{keys:?}");
        assert!(keys.contains(&("route", true)), "{keys:?}");
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(
            restart_only(&a, &b),
            vec!["dhcp.workers".to_owned(), "gateway.max_body".to_owned()]
        );
    }

    /// `[[subnet6]]` goes to the store on reload, as `[[subnet]]` does.
    #[test]
    fn subnet6_is_live() {
        let a = raw("");
        let b = raw("[[subnet6]]\nid = \"a6\"\nprefix = \"fd00:1::/64\"\n");
        let keys: Vec<(String, bool)> = changes(&a, &b)
            .into_iter()
            .map(|c| (c.key, c.live))
            .collect();
        assert_eq!(keys, [("subnet6".to_owned(), true)]);
    }

    /// The DHCPv6 server swaps its quotas on reload, as v4's does.
    #[test]
    fn dhcp6_quotas_are_live() {
        let a = raw("[dhcp6]\nper_client_rate = \"10/s\"\n");
        let b = raw("[dhcp6]\nper_client_rate = \"20/s\"\nper_client_burst = 40\n");
        let changed = changes(&a, &b);
        assert!(
            !changed.is_empty() && changed.iter().all(|c| c.live),
            "{changed:?}"
        );
    }

    #[test]
    fn optional_sections_appearing_count_as_changes() {
        let a = raw("");
        let b = raw("[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        assert_eq!(restart_only(&a, &b), vec!["gateway.tls".to_owned()]);
        assert!(changes(&a, &a).is_empty());
        assert!(!is_live("memoryx"));
        assert!(is_live("memory.budget"));
    }
}
