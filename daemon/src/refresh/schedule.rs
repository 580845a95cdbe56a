//! When to log in: each broker's cron schedule in its timezone, plus catch-up.
//!
//! Catch-up covers every way a morning can be missed (the daemon was down at the scheduled time,
//! a token was revoked, an account was added late): an active account needs a login when it has
//! no token, its token has expired, or its token was issued before the broker's most recent
//! scheduled time. It runs at start and then every minute. A scheduled run logs in every active
//! account of the broker. A Kite or IIFL token cannot usefully be refreshed *before* its expiry
//! (a login at 05:50 IST yields a Kite token that dies at 06:00), so "ahead of expiry" means: the
//! schedule sits after the expiry instant (kite 08:00 after 06:00; iifl 03:00 after 00:00), and
//! catch-up replaces any token that expired in between.
//!
//! Tokens that expire a fixed time after issue (`Validity::Rolling`, Dhan) follow
//! [`MarketSession`](super::session::MarketSession) instead: catch-up and the scheduled run replace only those that would not
//! last through the next market session, so a fresh token is not minted again (which would kill
//! the one consumers hold) just because the clock passed the broker's scheduled time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use broker_api::wire::Validity;

use super::{Named, RefreshSummary, Refresher, Selection};
use crate::config::{BrokerConfig, Config, ConfigError};
use crate::plugins::Registry;
use crate::vault::{AccountKey, AccountState, BrokerId, Trigger};

/// How often catch-up looks for missing or expired tokens.
const CATCH_UP_EVERY_MS: i64 = 60_000;

/// One broker's schedule.
#[derive(Debug, Clone)]
pub struct BrokerSchedule {
    /// Broker id.
    pub broker: String,
    cron: croner::Cron,
    tz: jiff::tz::TimeZone,
    /// How the broker's tokens expire.
    pub validity: Validity,
}

impl BrokerSchedule {
    fn at(&self, ms: i64) -> Option<jiff::Zoned> {
        jiff::Timestamp::from_millisecond(ms)
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    /// The first scheduled instant strictly after `now_ms`.
    pub fn next_after(&self, now_ms: i64) -> Option<i64> {
        let now = self.at(now_ms)?;
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(|t| t.timestamp().as_millisecond())
    }

    /// The last scheduled instant at or before `now_ms`.
    pub fn last_at_or_before(&self, now_ms: i64) -> Option<i64> {
        let now = self.at(now_ms)?;
        self.cron
            .find_previous_occurrence(&now, true)
            .ok()
            .map(|t| t.timestamp().as_millisecond())
    }
}

/// Parse a 5-field cron expression.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    expr.parse::<croner::Cron>().map_err(|e| e.to_string())
}

/// Refuse a `[brokers.<id>]` schedule that is not a cron expression or a timezone that is not an
/// IANA name. Checked at start.
pub fn check_config(brokers: &BTreeMap<String, BrokerConfig>) -> Result<(), ConfigError> {
    for (id, broker) in brokers {
        let key = |k: &str| format!("brokers.{id}.{k}");
        if let Some(schedule) = &broker.schedule {
            parse_cron(schedule).map_err(|e| ConfigError::invalid(key("schedule"), schedule, e))?;
        }
        if let Some(tz) = &broker.timezone {
            crate::clock::timezone(tz).map_err(|e| ConfigError::invalid(key("timezone"), tz, e))?;
        }
    }
    Ok(())
}

/// The schedules of every loaded, enabled broker: `[brokers.<id>]` values, else the manifest's.
pub fn schedules(plugins: &Registry, config: &Config) -> Vec<BrokerSchedule> {
    plugins
        .all()
        .values()
        .filter_map(|plugin| {
            let broker = config.brokers.get(&plugin.id).cloned().unwrap_or_default();
            if broker.enabled == Some(false) {
                return None;
            }
            let expr = broker.schedule.unwrap_or_else(|| plugin.manifest.schedule.clone());
            let tz = broker.timezone.unwrap_or_else(|| plugin.manifest.timezone.clone());
            // Both were validated (config at start, manifest at load); a failure here is a bug.
            match (parse_cron(&expr), crate::clock::timezone(&tz)) {
                (Ok(cron), Ok(tz)) => Some(BrokerSchedule {
                    broker: plugin.id.clone(),
                    cron,
                    tz,
                    validity: plugin.manifest.validity,
                }),
                _ => {
                    tracing::error!(broker = %plugin.id, %expr, %tz, "unusable schedule; broker not scheduled");
                    None
                }
            }
        })
        .collect()
}

impl Refresher {
    /// Log in every active account whose token is missing, expired, or older than its broker's
    /// last scheduled time. Accounts that are paused, managed externally or need attention are
    /// left alone (and not counted).
    pub async fn catch_up(self: &Arc<Self>) -> RefreshSummary {
        let now = self.plugin_env.clock.now_ms();
        let schedules = schedules(&self.plugins, &self.config);
        let session = self.session();
        let by_webhook: Vec<String> = self
            .plugins
            .all()
            .values()
            .filter(|p| p.manifest.token_webhook)
            .map(|p| p.id.clone())
            .collect();
        let vault = self.vault.clone();
        let due = tokio::task::spawn_blocking(
            move || -> Result<Vec<AccountKey>, crate::vault::VaultError> {
                let mut due = Vec::new();
                for account in vault.list_accounts()? {
                    if account.state() != AccountState::Active {
                        continue;
                    }
                    let Some(schedule) = schedules
                        .iter()
                        .find(|s| s.broker == account.broker.as_str())
                    else {
                        continue;
                    };
                    let key = account.key();
                    let token = vault.get_token(&key)?;
                    let stale = match &token {
                        None => true,
                        Some(token) if schedule.validity == Validity::Rolling => {
                            session.due(now, token.expires_at_ms)
                        }
                        Some(token) => {
                            token.expires_at_ms <= now
                                || schedule
                                    .last_at_or_before(now)
                                    .is_some_and(|last| token.issued_at_ms < last)
                        }
                    };
                    // A broker whose tokens a person approves is asked at its scheduled time,
                    // not whenever a token lapses (Upstox's die at 03:30, which would wake the
                    // person): catch-up asks only when a scheduled time passed with neither a
                    // token nor a request since (the daemon was down then, or the account is new).
                    let stale = stale
                        && (!by_webhook.iter().any(|b| b == account.broker.as_str()) || {
                            let last = schedule.last_at_or_before(now).unwrap_or(i64::MIN);
                            let issued = token.as_ref().map_or(i64::MIN, |t| t.issued_at_ms);
                            let requested = account
                                .pending_approval
                                .map_or(i64::MIN, |p| p.requested_at_ms);
                            last > issued.max(requested)
                        });
                    if stale {
                        due.push(key);
                    }
                }
                Ok(due)
            },
        )
        .await;
        match due {
            Ok(Ok(keys)) if keys.is_empty() => RefreshSummary::default(),
            Ok(Ok(keys)) => {
                tracing::info!(
                    accounts = keys.len(),
                    "catch-up: logging in accounts with missing or stale tokens"
                );
                self.refresh_keys(keys, Trigger::CatchUp, Named::No).await
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "catch-up cannot read the vault");
                RefreshSummary::default()
            }
            Err(_) => RefreshSummary::default(),
        }
    }
}

/// Drives schedules and catch-up from an explicit "now", so tests can move time by hand.
pub struct Scheduler {
    refresher: Arc<Refresher>,
    /// The instant up to which scheduled runs have been handled.
    handled_until_ms: i64,
    next_catch_up_ms: i64,
}

impl Scheduler {
    /// A scheduler whose first tick runs catch-up and then only schedules after `now_ms`.
    pub fn new(refresher: Arc<Refresher>, now_ms: i64) -> Scheduler {
        Scheduler {
            refresher,
            handled_until_ms: now_ms,
            next_catch_up_ms: now_ms,
        }
    }

    /// Run what is due at `now_ms`: each broker whose scheduled time passed since the last tick
    /// (once, however many were missed), then catch-up if its interval has elapsed. The summaries
    /// of the runs that covered any account.
    pub async fn tick(&mut self, now_ms: i64) -> Vec<RefreshSummary> {
        let mut summaries = Vec::new();
        for schedule in schedules(&self.refresher.plugins, &self.refresher.config) {
            if schedule
                .next_after(self.handled_until_ms)
                .is_some_and(|t| t <= now_ms)
            {
                tracing::info!(broker = %schedule.broker, "scheduled refresh");
                let broker = BrokerId::new(schedule.broker.clone()).ok();
                let selection = Selection { user: None, broker };
                let summary = match schedule.validity {
                    Validity::Rolling => self.refresher.refresh_rolling(selection, now_ms).await,
                    _ => self.refresher.refresh(selection, Trigger::Schedule).await,
                };
                // A broker with no account to log in has nothing to report, as for catch-up.
                if summary.total > 0 {
                    summaries.push(summary);
                }
            }
        }
        self.handled_until_ms = self.handled_until_ms.max(now_ms);
        if now_ms >= self.next_catch_up_ms {
            self.next_catch_up_ms = now_ms + CATCH_UP_EVERY_MS;
            let summary = self.refresher.catch_up().await;
            if summary.total > 0 {
                summaries.push(summary);
            }
        }
        summaries
    }

    /// Milliseconds from `now_ms` until the next tick is useful.
    pub fn wait_ms(&self, now_ms: i64) -> u64 {
        let next_schedule = schedules(&self.refresher.plugins, &self.refresher.config)
            .iter()
            .filter_map(|s| s.next_after(self.handled_until_ms))
            .min()
            .unwrap_or(i64::MAX);
        (next_schedule.min(self.next_catch_up_ms) - now_ms).clamp(0, CATCH_UP_EVERY_MS) as u64
    }
}

/// The scheduler task of a serving daemon: tick until `shutdown` resolves.
pub async fn run(refresher: Arc<Refresher>, shutdown: impl Future<Output = ()>) {
    let clock = refresher.plugin_env.clock.clone();
    let mut scheduler = Scheduler::new(refresher, clock.now_ms());
    tokio::pin!(shutdown);
    loop {
        scheduler.tick(clock.now_ms()).await;
        let wait = Duration::from_millis(scheduler.wait_ms(clock.now_ms()).max(250));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return,
        }
    }
}
