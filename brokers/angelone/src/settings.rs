//! The operator's `[brokers.angelone]` settings: values angelone.md leaves to us ([INF], [3P]).

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput};

/// `X-ClientLocalIP` (the server does not validate it; angelone.md [INF]).
pub const LOCAL_IP: &str = "client_local_ip";
/// `X-ClientPublicIP`: the deployment's egress IP if known. Never looked up on the internet.
pub const PUBLIC_IP: &str = "client_public_ip";
/// `X-MACAddress`.
pub const MAC_ADDRESS: &str = "mac_address";
/// Seconds to back off after a WAF HTML page (angelone.md [3P]: 300 s).
pub const WAF_RETRY_AFTER_S: &str = "waf_retry_after_s";

/// The settings with their defaults, for the manifest.
pub fn defaults() -> BTreeMap<String, String> {
    BTreeMap::from([
        (LOCAL_IP.into(), "127.0.0.1".into()),
        (PUBLIC_IP.into(), "127.0.0.1".into()),
        (MAC_ADDRESS.into(), "02:00:00:00:00:01".into()),
        (WAF_RETRY_AFTER_S.into(), "300".into()),
    ])
}

/// Effective settings of one call.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `X-ClientLocalIP`.
    pub local_ip: String,
    /// `X-ClientPublicIP`.
    pub public_ip: String,
    /// `X-MACAddress`.
    pub mac_address: String,
    /// Back-off after a WAF page.
    pub waf_retry_after_ms: u64,
}

fn bad(name: &str, why: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("angelone: setting `{name}` {why}"),
    )
    .before_credentials()
}

impl Settings {
    /// Read the effective settings (defaults for absent keys); a bad value fails before any
    /// credential is sent.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Settings, ErrorOutput> {
        let defaults = defaults();
        let get = |name: &str| -> Result<String, ErrorOutput> {
            let v = map
                .get(name)
                .or_else(|| defaults.get(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
                return Err(bad(name, "must be 1-64 visible ASCII characters"));
            }
            Ok(v)
        };
        let waf = get(WAF_RETRY_AFTER_S)?
            .parse::<u64>()
            .map_err(|_| bad(WAF_RETRY_AFTER_S, "must be a number of seconds"))?;
        Ok(Settings {
            local_ip: get(LOCAL_IP)?,
            public_ip: get(PUBLIC_IP)?,
            mac_address: get(MAC_ADDRESS)?,
            waf_retry_after_ms: waf.saturating_mul(1000),
        })
    }
}
