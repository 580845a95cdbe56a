//! The shortest time between two logins of one account that its broker tolerates (Dhan mints at
//! most one token per account every 2 minutes): the strategy's `min_login_interval_ms`, or
//! `[brokers.<id>] min_login_interval_secs`. A refresh asked for inside it answers at once,
//! without contacting the broker: `skipped` while the account holds a valid token, else
//! `rate_limited` with the time it may retry.
//!
//! The last login is the later of the last attempt in the account's attempt log (every attempt is
//! logged with its start time, so the interval holds across a restart; a login in flight is
//! joined by single flight, never started again) and the stored token's issue time (an assisted
//! login's too).

use super::{AccountResult, Refresher};
use crate::clock::iso;
use crate::plugins::Plugin;
use crate::vault::{AccountKey, blocking};

impl Refresher {
    /// The account's minimum login interval, in ms (0: none).
    pub(super) fn min_login_interval_ms(&self, plugin: &Plugin, broker: &str) -> u64 {
        match self.broker_config(broker).min_login_interval_secs {
            Some(secs) => secs.saturating_mul(1000),
            None => plugin.manifest.min_login_interval_ms,
        }
    }

    /// The answer to a login asked for inside the interval, or `None` when it may go ahead.
    pub(super) async fn too_soon(
        &self,
        key: &AccountKey,
        plugin: &Plugin,
    ) -> Option<AccountResult> {
        let interval = self.min_login_interval_ms(plugin, key.broker.as_str());
        if interval == 0 {
            return None;
        }
        let (vault, k) = (self.vault.clone(), key.clone());
        // A vault that cannot be read here fails the login in `plan_login` already.
        let (token, logged) = blocking(move || {
            let token = vault.get_token(&k)?;
            let last = vault.attempts(&k, 1)?.first().map(|e| e.attempt.time_ms);
            Ok((token, last))
        })
        .await
        .unwrap_or_default();
        let last = logged.max(token.as_ref().map(|t| t.issued_at_ms))?;
        let now = self.plugin_env.clock.now_ms();
        let may_retry_at = last.saturating_add(i64::try_from(interval).unwrap_or(i64::MAX));
        if now >= may_retry_at {
            return None;
        }
        let why = format!(
            "the last login was at {}; broker {} allows one login per account every {} s",
            iso(last),
            key.broker,
            interval / 1000
        );
        Some(match token.filter(|t| t.expires_at_ms > now) {
            Some(token) => AccountResult::skipped(
                key,
                "min_login_interval",
                format!(
                    "{why}; the token stays valid until {}",
                    iso(token.expires_at_ms)
                ),
            ),
            None => AccountResult {
                retry_at: Some(iso(may_retry_at).into()),
                ..AccountResult::failed(
                    key,
                    "rate_limited",
                    format!(
                        "{why}; the broker was not contacted; retry at {}",
                        iso(may_retry_at)
                    ),
                    0,
                )
            },
        })
    }
}
