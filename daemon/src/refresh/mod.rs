//! The refresher: logs accounts in, one login at a time per account, within global and per-broker
//! concurrency caps and per-broker request rates, retrying only what is safe to retry, and
//! recording every attempt.
//!
//! Retry policy (from the error class a strategy returns): `rate_limited`, `broker_unavailable`
//! and `network` back off exponentially with jitter, up to `[refresh] max_attempts`. Every other
//! class puts the account in `needs_attention`, and it is not logged in again until its
//! credentials change: retrying a wrong password locks real accounts. (`twofa_rejected` already
//! had its one retry on a fresh TOTP step inside the strategy, without resending the password.)

mod approval;
mod assisted;
mod attention;
pub mod backoff;
mod gate;
mod interval;
mod login;
mod outcome;
mod retry;
pub mod schedule;
pub mod session;
mod summary;

pub use approval::{Delivery, sha256_hex};
pub use assisted::{AssistedAccount, AssistedError, AssistedLogin};
pub use summary::{AccountResult, LastRun, Progress, RefreshSummary};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::config::{BrokerConfig, Config};
use crate::notify::Notifier;
use crate::plugins::{PluginEnv, Registry};
use crate::vault::{AccountKey, BrokerId, Trigger, UserId, Vault, blocking};

/// Which accounts a refresh covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this user's accounts.
    pub user: Option<UserId>,
    /// Only accounts at this broker.
    pub broker: Option<BrokerId>,
}

impl Selection {
    /// Every account.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// One account.
    pub fn account(key: AccountKey) -> Selection {
        Selection {
            user: Some(key.user),
            broker: Some(key.broker),
        }
    }

    /// Whether, and how narrowly, a person asked for these accounts by name.
    pub fn named(&self) -> Named {
        match (&self.user, &self.broker) {
            (Some(_), Some(_)) => Named::Account,
            (Some(_), None) => Named::User,
            (None, _) => Named::No,
        }
    }
}

/// Whether, and how narrowly, a person asked for a login by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Nobody: a schedule, catch-up, or a refresh of every account (or of a broker's).
    No,
    /// A user's accounts: a paused account is logged in too, and the limits on routine logins
    /// (minimum interval, breaker) do not hold it.
    User,
    /// One account, by user and broker: as `User`, and an approval request is sent even while
    /// one is pending or today's token is valid. A user's accounts in bulk (the integration
    /// route, a refresh without a broker) do not prompt a person again.
    Account,
}

impl Named {
    /// Whether anyone named the account.
    pub fn any(self) -> bool {
        self != Named::No
    }
}

/// Counters since start, for `/health/detailed`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RefreshStats {
    /// Login attempts made.
    pub attempts: u64,
    /// Attempts that produced a token.
    pub successes: u64,
    /// Mean duration of an attempt, in milliseconds (0 before the first).
    pub avg_execution_ms: u64,
}

/// Waits between attempts. Injectable so tests observe the backoff without waiting for it.
pub type SleepFn = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs logins. One per daemon; shared by the scheduler, the API and the CLI.
pub struct Refresher {
    vault: Arc<Vault>,
    plugins: Arc<Registry>,
    plugin_env: Arc<PluginEnv>,
    config: Arc<Config>,
    /// Single flight: the login in flight per account. A second trigger for the same account
    /// awaits the first one's result instead of logging in again; an assisted login's finish
    /// waits for it, then holds the account's entry itself (`gate`). The login runs in its own
    /// task and removes its entry when done, so a caller that goes away cancels nothing.
    inflight: Mutex<HashMap<AccountKey, gate::SharedResult>>,
    /// Per-broker circuit breakers over `broker_unavailable` results (`backoff`).
    breakers: backoff::Breakers,
    /// Caps logins in flight across all brokers (`[refresh] concurrency`).
    global: Arc<Semaphore>,
    /// Per-broker limits, built on first use from `[brokers.<id>]` or the strategy's manifest.
    brokers: Mutex<HashMap<String, Arc<gate::BrokerLimits>>>,
    sleep: SleepFn,
    /// Called after each token is stored, whatever started the login (wakes the Postgres mirror).
    on_token: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Tells people when an account needs them (`[refresh] webhook_url`, `[notify]`). Here
    /// because the refresher is what finds out; the API and the broker strategies' daemon-side
    /// code reach it through [`Refresher::notifier`].
    notifier: Arc<Notifier>,
    attempts: AtomicU64,
    successes: AtomicU64,
    attempt_ms: AtomicU64,
    /// The last refresh of every account, or of a broker's (`Selection` without a user).
    last_run: Mutex<Option<LastRun>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher that waits with `tokio::time::sleep`.
    pub fn new(
        vault: Arc<Vault>,
        plugins: Arc<Registry>,
        plugin_env: Arc<PluginEnv>,
        config: Arc<Config>,
    ) -> Refresher {
        Refresher::with_sleep(
            vault,
            plugins,
            plugin_env,
            config,
            Arc::new(|d| tokio::time::sleep(d).boxed()),
        )
    }

    /// A refresher with an injected wait between attempts.
    pub fn with_sleep(
        vault: Arc<Vault>,
        plugins: Arc<Registry>,
        plugin_env: Arc<PluginEnv>,
        config: Arc<Config>,
        sleep: SleepFn,
    ) -> Refresher {
        Refresher {
            global: Arc::new(Semaphore::new(config.refresh.concurrency as usize)),
            notifier: Arc::new(Notifier::new(
                &config,
                plugin_env.clock.clone(),
                Some(vault.clone()),
            )),
            vault,
            plugins,
            plugin_env,
            config,
            inflight: Mutex::default(),
            breakers: backoff::Breakers::default(),
            brokers: Mutex::default(),
            sleep,
            on_token: None,
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            attempt_ms: AtomicU64::new(0),
            last_run: Mutex::default(),
        }
    }

    /// Call `f` after every token this refresher stores.
    pub fn on_token(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Refresher {
        self.on_token = Some(f);
        self
    }

    /// The notifier: announce an approval request, an assisted login, a resolved approval.
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The vault this refresher writes to.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// The configuration of `broker`, or defaults.
    fn broker_config(&self, broker: &str) -> BrokerConfig {
        self.config.brokers.get(broker).cloned().unwrap_or_default()
    }

    /// Counters since start.
    pub fn stats(&self) -> RefreshStats {
        let attempts = self.attempts.load(Ordering::Relaxed);
        RefreshStats {
            attempts,
            successes: self.successes.load(Ordering::Relaxed),
            avg_execution_ms: self
                .attempt_ms
                .load(Ordering::Relaxed)
                .checked_div(attempts)
                .unwrap_or(0),
        }
    }

    /// Log in every selected account (concurrently, within the limits) and summarise.
    pub async fn refresh(
        self: &Arc<Self>,
        selection: Selection,
        trigger: Trigger,
    ) -> RefreshSummary {
        self.refresh_observed(selection, trigger, &watch::Sender::default())
            .await
    }

    /// As [`Refresher::refresh`], updating `progress` as each account finishes.
    pub async fn refresh_observed(
        self: &Arc<Self>,
        selection: Selection,
        trigger: Trigger,
        progress: &watch::Sender<Progress>,
    ) -> RefreshSummary {
        let started_ms = self.plugin_env.clock.now_ms();
        match self.select(&selection).await {
            Ok(keys) => {
                let summary = self
                    .refresh_keys_observed(keys, trigger, selection.named(), progress)
                    .await;
                self.record_run(&selection, trigger, started_ms, *progress.borrow());
                summary
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot list accounts");
                RefreshSummary::default()
            }
        }
    }

    /// Remember a run over every account, or every account of a broker, for the console.
    fn record_run(
        &self,
        selection: &Selection,
        trigger: Trigger,
        started_ms: i64,
        progress: Progress,
    ) {
        if selection.user.is_none() {
            *self.last_run.lock() = Some(LastRun {
                broker: selection.broker.clone(),
                trigger,
                started_ms,
                finished_ms: self.plugin_env.clock.now_ms(),
                progress,
            });
        }
    }

    /// The last refresh of every account, or of every account at a broker, since start.
    pub fn last_run(&self) -> Option<LastRun> {
        self.last_run.lock().clone()
    }

    /// The accounts a selection covers, sorted by user then broker.
    pub async fn select(&self, selection: &Selection) -> Result<Vec<AccountKey>, String> {
        let (vault, user) = (self.vault.clone(), selection.user.clone());
        let accounts = blocking(move || match &user {
            Some(user) => vault.user_accounts(user),
            None => vault.list_accounts(),
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut keys: Vec<AccountKey> = accounts
            .iter()
            .map(|a| a.key())
            .filter(|k| selection.broker.as_ref().is_none_or(|b| &k.broker == b))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Log in these accounts and summarise.
    pub async fn refresh_keys(
        self: &Arc<Self>,
        keys: Vec<AccountKey>,
        trigger: Trigger,
        named: Named,
    ) -> RefreshSummary {
        self.refresh_keys_observed(keys, trigger, named, &watch::Sender::default())
            .await
    }

    /// As [`Refresher::refresh_keys`], updating `progress` as each account finishes. The
    /// summary lists the accounts in the order given, whatever order they finish in.
    async fn refresh_keys_observed(
        self: &Arc<Self>,
        keys: Vec<AccountKey>,
        trigger: Trigger,
        named: Named,
        progress: &watch::Sender<Progress>,
    ) -> RefreshSummary {
        let total = keys.len();
        progress.send_replace(Progress {
            total,
            ..Progress::default()
        });
        let mut runs: FuturesUnordered<_> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                self.refresh_account(key, trigger, named)
                    .map(move |result| (i, result))
            })
            .collect();
        let mut results = vec![None; total];
        while let Some((i, result)) = runs.next().await {
            progress.send_modify(|p| p.add(&result));
            results[i] = Some(result);
        }
        RefreshSummary::from_results(results.into_iter().flatten().collect())
    }

    /// Next scheduled run per enabled broker (Unix ms), from the clock's now.
    pub fn next_runs(&self) -> BTreeMap<String, Option<i64>> {
        let now = self.plugin_env.clock.now_ms();
        schedule::schedules(&self.plugins, &self.config)
            .into_iter()
            .map(|s| (s.broker.clone(), s.next_after(now)))
            .collect()
    }
}
