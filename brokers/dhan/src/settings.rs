//! The operator's `[brokers.dhan]` settings: waits dhan.md infers ([INF]).

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput};

use crate::errors::Waits;

/// Seconds to back off after an HTML 403 (gateway/WAF page; none publicly reported for Dhan).
pub const WAF_RETRY_AFTER_S: &str = "waf_retry_after_s";
/// Seconds to wait after a throttle text that names no duration ("try after ...").
pub const THROTTLE_RETRY_AFTER_S: &str = "throttle_retry_after_s";

/// The settings with their defaults, for the manifest.
pub fn defaults() -> BTreeMap<String, String> {
    BTreeMap::from([
        (WAF_RETRY_AFTER_S.into(), "300".into()),
        (THROTTLE_RETRY_AFTER_S.into(), "125".into()),
    ])
}

/// The effective waits; a bad value fails before any credential is sent.
pub fn waits(map: &BTreeMap<String, String>) -> Result<Waits, ErrorOutput> {
    let defaults = defaults();
    let secs = |name: &str| -> Result<u64, ErrorOutput> {
        map.get(name)
            .or_else(|| defaults.get(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000))
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    format!("dhan: setting `{name}` must be a number of seconds"),
                )
                .before_credentials()
            })
    };
    Ok(Waits {
        waf_ms: secs(WAF_RETRY_AFTER_S)?,
        throttle_ms: secs(THROTTLE_RETRY_AFTER_S)?,
    })
}
