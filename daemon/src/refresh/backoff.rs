//! What keeps retryable failures (`broker_unavailable`, `network`, `rate_limited`) from turning
//! into a login every minute: a per-account backoff kept in the vault, and a per-broker circuit
//! breaker. Both hold scheduled and catch-up logins only; a refresh someone asks for by name is
//! never held by them.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{AccountResult, Refresher};
use crate::config::RefreshConfig;
use crate::vault::{Account, AccountKey, Backoff, Outcome, blocking};

/// Default `[brokers.<id>] breaker_threshold`.
pub const BREAKER_THRESHOLD: u32 = 5;
/// Default `[brokers.<id>] breaker_cooldown_secs`.
pub const BREAKER_COOLDOWN_SECS: u64 = 300;

/// The backoff after one more refresh that ended in a retryable failure: from
/// `retry_after_failure_secs`, doubling up to `retry_after_failure_max_secs`, plus a jitter of
/// up to a tenth that only ever lengthens the wait.
pub fn next_backoff(previous: Option<Backoff>, now_ms: i64, config: &RefreshConfig) -> Backoff {
    let failures = previous.map_or(0, |b| b.failures).saturating_add(1);
    let base_ms = config
        .retry_after_failure_secs
        .saturating_mul(1000)
        .saturating_mul(1u64 << (failures - 1).min(20))
        .min(config.retry_after_failure_max_secs.saturating_mul(1000));
    let jitter_ms = getrandom::u64().unwrap_or(0) % (base_ms / 10 + 1);
    Backoff {
        failures,
        until_ms: now_ms.saturating_add_unsigned(base_ms + jitter_ms),
    }
}

/// One broker's breaker.
#[derive(Debug, Default)]
struct Breaker {
    /// Accounts whose refreshes ended in `broker_unavailable` since the broker last answered one
    /// of them well.
    failing: HashSet<AccountKey>,
    /// Scheduled and catch-up logins of this broker wait until then, Unix ms.
    open_until_ms: i64,
}

/// What `/health/detailed` and `/metrics` show of one broker's breaker.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerView {
    /// Whether logins are paused now.
    pub open: bool,
    /// Until when, Unix ms (0: never opened).
    pub open_until_ms: i64,
    /// Distinct accounts in the current run of `broker_unavailable` results.
    pub failing_accounts: usize,
}

/// The per-broker breakers. Touched by every finished login, read by the scheduler's gate and
/// the health routes; held for a few instructions at a time.
#[derive(Debug, Default)]
pub struct Breakers {
    by_broker: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Until when the broker's breaker holds scheduled logins, if it does at `now_ms`.
    pub fn open_until(&self, broker: &str, now_ms: i64) -> Option<i64> {
        let breakers = self.by_broker.lock();
        breakers
            .get(broker)
            .map(|b| b.open_until_ms)
            .filter(|&until| until > now_ms)
    }

    /// A refresh of `key` ended: `unavailable` if in `broker_unavailable`, `success` if a token
    /// was stored. Opens the breaker when `threshold` distinct accounts failed in a row.
    pub fn record(
        &self,
        key: &AccountKey,
        unavailable: bool,
        success: bool,
        now_ms: i64,
        threshold: u32,
        cooldown_secs: u64,
    ) {
        if !unavailable && !success {
            return;
        }
        let mut breakers = self.by_broker.lock();
        let breaker = breakers.entry(key.broker.as_str().to_owned()).or_default();
        if success {
            breaker.failing.clear();
            return;
        }
        breaker.failing.insert(key.clone());
        if breaker.failing.len() >= threshold.max(1) as usize {
            breaker.failing.clear();
            breaker.open_until_ms = now_ms.saturating_add_unsigned(cooldown_secs * 1000);
            tracing::warn!(
                broker = key.broker.as_str(),
                cooldown_secs,
                "{threshold} accounts in a row found the broker unavailable: its scheduled and \
                 catch-up logins pause"
            );
        }
    }

    /// Every broker's breaker as shown to operators.
    pub fn views(&self, now_ms: i64) -> BTreeMap<String, BreakerView> {
        let breakers = self.by_broker.lock();
        breakers
            .iter()
            .map(|(broker, b)| {
                (
                    broker.clone(),
                    BreakerView {
                        open: b.open_until_ms > now_ms,
                        open_until_ms: b.open_until_ms,
                        failing_accounts: b.failing.len(),
                    },
                )
            })
            .collect()
    }
}

impl Refresher {
    /// Why a scheduled or catch-up login of this account waits: its backoff after retryable
    /// failures, or its broker's open breaker.
    pub(super) fn held(&self, key: &AccountKey, account: &Account) -> Option<AccountResult> {
        let now = self.plugin_env.clock.now_ms();
        if let Some(b) = account.backoff.filter(|b| b.until_ms > now) {
            return Some(AccountResult::skipped(
                key,
                "backing_off",
                format!(
                    "{} refreshes in a row ended in a retryable failure; scheduled logins wait \
                     until {}",
                    b.failures,
                    crate::clock::iso(b.until_ms)
                ),
            ));
        }
        let until = self.breakers.open_until(key.broker.as_str(), now)?;
        Some(AccountResult::skipped(
            key,
            "breaker_open",
            format!(
                "the broker was unavailable to several accounts in a row; scheduled logins wait \
                 until {}",
                crate::clock::iso(until)
            ),
        ))
    }

    /// After a refresh's last attempt: its broker's breaker.
    pub(super) async fn after_refresh(&self, key: &AccountKey, result: &AccountResult) {
        let now = self.plugin_env.clock.now_ms();
        let class = result.error_class.as_deref();
        let broker = self.broker_config(key.broker.as_str());
        self.breakers.record(
            key,
            class == Some("broker_unavailable") && result.attempts > 0,
            result.outcome == Outcome::Success,
            now,
            broker.breaker_threshold.unwrap_or(BREAKER_THRESHOLD),
            broker
                .breaker_cooldown_secs
                .unwrap_or(BREAKER_COOLDOWN_SECS),
        );
    }

    /// A refresh that contacted the broker ended in a retryable failure: scheduled and catch-up
    /// logins of the account wait longer (`next_backoff`).
    pub(super) async fn back_off(&self, key: &AccountKey) {
        let now = self.plugin_env.clock.now_ms();
        let (vault, k, config) = (self.vault.clone(), key.clone(), self.config.clone());
        let stored = blocking(move || {
            let previous = vault.get_account(&k)?.and_then(|a| a.backoff);
            let next = next_backoff(previous, now, &config.refresh);
            vault.set_backoff(&k, Some(next))
        })
        .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot record the account's backoff");
        }
    }

    /// The per-broker breakers, as shown to operators.
    pub fn breakers(&self) -> std::collections::BTreeMap<String, BreakerView> {
        self.breakers.views(self.plugin_env.clock.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_and_jitter_only_lengthens_it() {
        let config = RefreshConfig::default();
        let mut backoff = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let next = next_backoff(backoff, 0, &config);
            waits.push(next.until_ms);
            backoff = Some(next);
        }
        for (wait, base) in waits.iter().zip([120, 240, 480, 960, 1800, 1800, 1800]) {
            let base = base * 1000;
            assert!(*wait >= base && *wait <= base + base / 10, "{waits:?}");
        }
        assert_eq!(backoff.unwrap().failures, 7);
    }

    #[test]
    fn the_breaker_opens_on_distinct_accounts_and_a_success_resets_the_run() {
        let breakers = Breakers::default();
        let key = |n: u32| AccountKey::parse(&format!("u{n}"), "kite").unwrap();
        for n in 0..4 {
            breakers.record(&key(n), true, false, 0, 5, 300);
            breakers.record(&key(n), true, false, 0, 5, 300);
        }
        assert_eq!(
            breakers.open_until("kite", 0),
            None,
            "four distinct accounts"
        );
        breakers.record(&key(9), false, true, 0, 5, 300);
        breakers.record(&key(4), true, false, 0, 5, 300);
        assert_eq!(
            breakers.open_until("kite", 0),
            None,
            "the success restarted the run"
        );
        for n in 5..9 {
            breakers.record(&key(n), true, false, 1_000, 5, 300);
        }
        assert_eq!(breakers.open_until("kite", 1_000), Some(301_000));
        assert_eq!(breakers.open_until("kite", 301_000), None);
        assert_eq!(breakers.open_until("iifl", 1_000), None);
    }
}
