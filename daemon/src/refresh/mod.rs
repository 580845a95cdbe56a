//! The refresher: logs accounts in, one login at a time per account, within global and per-broker
//! concurrency caps and per-broker request rates, retrying only what is safe to retry, and
//! recording every attempt.
//!
//! Retry policy (from the error class a strategy returns): `rate_limited`, `broker_unavailable`
//! and `network` back off exponentially with jitter, up to `[refresh] max_attempts`. Every other
//! class puts the account in `needs_attention`, and it is not logged in again until its
//! credentials change: retrying a wrong password locks real accounts. (`twofa_rejected` already
//! had its one retry on a fresh TOTP step inside the strategy, without resending the password.)

pub mod backoff;
pub mod schedule;
mod summary;

pub use summary::{AccountResult, RefreshSummary};

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_api::wire::{self, ErrorClass, LoginRequest, Sensitive};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{BrokerConfig, Config};
use crate::plugins::{CallError, CallTarget, Plugin, Registry, Services, run_blocking};
use crate::vault::{
    AccountKey, AccountState, Attempt, Attention, BrokerId, NewToken, Outcome, SecretJson, Trigger,
    UserId, Vault, VaultError,
};

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

    /// Whether a person asked for these accounts by name (then paused accounts are logged in too).
    pub fn is_explicit(&self) -> bool {
        self.user.is_some()
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

/// Concurrency and request-rate limits of one broker, shared by all its logins.
struct BrokerLimits {
    logins: Arc<Semaphore>,
    requests: Arc<governor::DefaultDirectRateLimiter>,
}

type SharedResult = Shared<BoxFuture<'static, AccountResult>>;

/// Runs logins. One per daemon; shared by the scheduler, the API and the CLI.
pub struct Refresher {
    vault: Arc<Vault>,
    plugins: Arc<Registry>,
    services: Arc<Services>,
    config: Arc<Config>,
    /// Single flight: the login in flight per account. A second trigger for the same account
    /// awaits the first one's result instead of logging in again. The login runs in its own task
    /// and removes its entry when done, so a caller that goes away cancels nothing.
    inflight: Mutex<HashMap<AccountKey, SharedResult>>,
    /// Per-broker circuit breakers over `broker_unavailable` results (`backoff`).
    breakers: backoff::Breakers,
    /// Caps logins in flight across all brokers (`[refresh] concurrency`).
    global: Arc<Semaphore>,
    /// Per-broker limits, built on first use from `[brokers.<id>]` or the strategy's manifest.
    brokers: Mutex<HashMap<String, Arc<BrokerLimits>>>,
    sleep: SleepFn,
    /// Called after each token is stored (wakes the Postgres mirror).
    on_token: Option<Arc<dyn Fn() + Send + Sync>>,
    attempts: AtomicU64,
    successes: AtomicU64,
    attempt_ms: AtomicU64,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

/// Why a vault call made from async code failed.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("a vault task was aborted".to_owned()),
    }
}

fn secret(s: &Option<SecretString>) -> Option<Sensitive> {
    s.as_ref().map(|s| Sensitive::new(s.expose_secret()))
}

impl Refresher {
    /// A refresher that waits with `tokio::time::sleep`.
    pub fn new(
        vault: Arc<Vault>,
        plugins: Arc<Registry>,
        services: Arc<Services>,
        config: Arc<Config>,
    ) -> Refresher {
        Refresher::with_sleep(
            vault,
            plugins,
            services,
            config,
            Arc::new(|d| tokio::time::sleep(d).boxed()),
        )
    }

    /// A refresher with an injected wait between attempts.
    pub fn with_sleep(
        vault: Arc<Vault>,
        plugins: Arc<Registry>,
        services: Arc<Services>,
        config: Arc<Config>,
        sleep: SleepFn,
    ) -> Refresher {
        Refresher {
            global: Arc::new(Semaphore::new(config.refresh.concurrency as usize)),
            vault,
            plugins,
            services,
            config,
            inflight: Mutex::default(),
            breakers: backoff::Breakers::default(),
            brokers: Mutex::default(),
            sleep,
            on_token: None,
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            attempt_ms: AtomicU64::new(0),
        }
    }

    /// Call `f` after every token this refresher stores.
    pub fn on_token(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Refresher {
        self.on_token = Some(f);
        self
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
        match self.select(&selection).await {
            Ok(keys) => {
                self.refresh_keys(keys, trigger, selection.is_explicit())
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot list accounts");
                RefreshSummary::default()
            }
        }
    }

    /// The accounts a selection covers, sorted by user then broker.
    pub async fn select(&self, selection: &Selection) -> Result<Vec<AccountKey>, String> {
        let (vault, user) = (self.vault.clone(), selection.user.clone());
        let accounts = blocking(move || match &user {
            Some(user) => vault.user_accounts(user),
            None => vault.list_accounts(),
        })
        .await?;
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
        explicit: bool,
    ) -> RefreshSummary {
        let runs = keys
            .into_iter()
            .map(|key| self.refresh_account(key, trigger, explicit));
        RefreshSummary::from_results(futures::future::join_all(runs).await)
    }

    /// Wait until no login is in flight, whoever started it (the scheduler, the API, a caller
    /// that has gone away), for at most `timeout`. Whether all finished.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all_done = async {
            loop {
                let running: Vec<SharedResult> = self
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                if running.is_empty() {
                    return;
                }
                futures::future::join_all(running).await;
                // The tasks remove their entries right after their results are ready.
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(timeout, all_done).await.is_ok()
    }

    /// Log in one account, joining a login already in flight for it.
    pub async fn refresh_account(
        self: &Arc<Self>,
        key: AccountKey,
        trigger: Trigger,
        explicit: bool,
    ) -> AccountResult {
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let me = self.clone();
                    let task_key = key.clone();
                    let task = tokio::spawn(async move {
                        let result = me.login_account(&task_key, trigger, explicit).await;
                        me.after_refresh(&task_key, &result).await;
                        me.inflight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&task_key);
                        result
                    });
                    let failed_key = key.clone();
                    let shared = async move {
                        task.await.unwrap_or_else(|_| {
                            AccountResult::failed(
                                &failed_key,
                                "internal",
                                "the login task was aborted",
                                0,
                            )
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    fn limits(&self, plugin: &Plugin) -> Arc<BrokerLimits> {
        let mut brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        brokers
            .entry(plugin.id.clone())
            .or_insert_with(|| {
                let config = self.broker_config(&plugin.id);
                let logins = config
                    .concurrency
                    .unwrap_or(plugin.manifest.max_concurrency)
                    .max(1);
                let rate = config
                    .rate_limit_per_sec
                    .unwrap_or(plugin.manifest.rate_limit_per_sec);
                // One request per 1/rate seconds, no burst, with 2% to spare for network jitter:
                // a broker never sees more than `rate` requests in any second.
                let period = Duration::from_secs_f64(1.02 / rate.max(0.001));
                let quota = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
                    .expect("a positive period");
                Arc::new(BrokerLimits {
                    logins: Arc::new(Semaphore::new(logins as usize)),
                    requests: Arc::new(governor::RateLimiter::direct(quota)),
                })
            })
            .clone()
    }

    fn backoff(&self, attempt: u32, retry_after_ms: Option<u64>) -> Duration {
        let r = &self.config.refresh;
        let base = r
            .backoff_initial_ms
            .saturating_mul(1u64 << (attempt - 1).min(20))
            .min(r.backoff_max_ms);
        // Equal jitter: at least half the base, so delays still grow with each attempt.
        let jitter = getrandom::u64().unwrap_or(0) % (base / 2 + 1);
        Duration::from_millis((base - base / 2 + jitter).max(retry_after_ms.unwrap_or(0)))
    }

    async fn login_account(
        self: &Arc<Self>,
        key: &AccountKey,
        trigger: Trigger,
        explicit: bool,
    ) -> AccountResult {
        let (vault, k) = (self.vault.clone(), key.clone());
        let account = match blocking(move || vault.get_account(&k)).await {
            Ok(Some(account)) => account,
            Ok(None) => return AccountResult::failed(key, "not_found", "no such account", 0),
            Err(e) => return AccountResult::failed(key, "internal", e, 0),
        };
        match account.state() {
            AccountState::ManagedExternally => {
                return AccountResult::skipped(key, "managed_externally", "managed externally");
            }
            AccountState::NeedsAttention => {
                let class = account
                    .attention
                    .as_ref()
                    .map(|a| a.class.clone())
                    .unwrap_or_default();
                return AccountResult::skipped(
                    key,
                    "needs_attention",
                    format!("needs attention after {class}; update its credentials to retry"),
                );
            }
            AccountState::Paused if !explicit => {
                return AccountResult::skipped(key, "paused", "auto-refresh is off");
            }
            _ => {}
        }
        if !explicit && let Some(held) = self.held(key, &account) {
            return held;
        }
        let Some(plugin) = self.plugins.get(key.broker.as_str()) else {
            return AccountResult::failed(
                key,
                "protocol",
                format!("no strategy for broker {}", key.broker.as_str()),
                0,
            );
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        let credentials = match blocking(move || vault.credentials(&k)).await {
            Ok(Some(c)) => c,
            Ok(None) => return AccountResult::failed(key, "not_found", "no such account", 0),
            Err(e) => return AccountResult::failed(key, "internal", e, 0),
        };
        let totp_secret = match &credentials.totp_secret {
            Some(s) => match crate::plugins::totp::parse_secret(s.expose_secret()) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    return self
                        .give_up(key, ErrorClass::TwofaUnavailable, &e.to_string(), 0)
                        .await;
                }
            },
            None => None,
        };
        let account_label = format!("{}/{}", key.user.as_str(), key.broker.as_str());
        self.seed_totp_guard(key, &account_label).await;
        let broker_config = self.broker_config(key.broker.as_str());
        let settings = match plugin.settings(&broker_config.settings) {
            Ok(settings) => settings,
            Err(message) => return AccountResult::failed(key, "protocol", message, 0),
        };
        let limits = self.limits(&plugin);
        let mut attempt = 0;
        let login_timeout_ms = self.config.refresh.login_timeout_secs.saturating_mul(1000);
        loop {
            attempt += 1;
            // The code is asked for after the password was sent. If this account's next unused
            // TOTP step is still ahead, wait for it here, holding no login slot, so that the
            // login gets its code without waiting; if it is further ahead than a whole login may
            // take, do not send the password at all.
            let now_ms = self.services.clock.now_ms();
            let totp_wait = if totp_secret.is_some() {
                self.services.steps.wait_ms(&account_label, now_ms)
            } else {
                0
            };
            if totp_wait > login_timeout_ms {
                let message = format!(
                    "the account's next unused TOTP step starts in {totp_wait} ms, later than \
                     login_timeout_secs allows; the broker was not contacted"
                );
                let result = Err(CallError::Failed(wire::ErrorOutput::new(
                    ErrorClass::Network,
                    message,
                )));
                let record = attempt_record(now_ms, trigger, attempt, Duration::ZERO);
                // Not retried now: backing off until the step is in reach would hold the caller
                // for up to 30 s per attempt. The next refresh finds the step closer.
                match self.settle(key, record, result, false).await {
                    ControlFlow::Break(done) => return done,
                    ControlFlow::Continue(()) => continue,
                }
            }
            if totp_wait > 0 {
                self.services.clock.wait_ms(totp_wait).await;
            }
            let permits = (
                self.global.clone().acquire_owned().await,
                limits.logins.clone().acquire_owned().await,
            );
            let request = LoginRequest {
                v: wire::WIRE_VERSION,
                user_id: key.user.as_str().to_owned(),
                broker_user_id: account.broker_user_id.clone(),
                credentials: wire::Credentials {
                    password: secret(&credentials.password),
                    api_key: credentials
                        .api_key
                        .as_ref()
                        .map(|k| k.expose_secret().to_owned()),
                    api_secret: secret(&credentials.api_secret),
                },
                base_urls: plugin.base_urls(&broker_config.urls),
                settings: settings.clone(),
                attempt,
                redirect_url: None,
            };
            let mut secrets: Vec<&str> = Vec::new();
            for s in [
                &credentials.password,
                &credentials.api_secret,
                &credentials.totp_secret,
                &credentials.api_key,
            ]
            .into_iter()
            .flatten()
            {
                secrets.push(s.expose_secret());
            }
            let mut ctx = self.services.context(CallTarget {
                plugin: &plugin,
                account: account_label.clone(),
                configured_urls: &broker_config.urls,
                extra_hosts: &broker_config.allowed_hosts,
                ipv4_only: broker_config.ipv4_only,
                totp_secret: totp_secret.clone(),
                secrets,
            });
            ctx.http.limiter = Some(limits.requests.clone());
            let (vault, k) = (self.vault.clone(), key.clone());
            ctx.step_log = Some(Arc::new(move |step| {
                vault
                    .record_totp_step(&k, step)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }));
            let started_ms = self.services.clock.now_ms();
            let started = Instant::now();
            let result = run_blocking(plugin.clone(), ctx, move |p, c| {
                p.login_blocking(c, &request)
            })
            .await;
            drop(permits);
            let duration = started.elapsed();
            self.attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt_ms
                .fetch_add(duration.as_millis() as u64, Ordering::Relaxed);
            metrics::histogram!("tokenbot_login_duration_seconds", "broker" => key.broker.as_str().to_owned())
                .record(duration.as_secs_f64());
            let record = attempt_record(started_ms, trigger, attempt, duration);
            match self.settle(key, record, result, true).await {
                ControlFlow::Break(done) => return done,
                ControlFlow::Continue(()) => {}
            }
        }
    }

    /// Record one attempt's outcome (attempt log, metrics, the warning) and decide: done with a
    /// result, or (after the backoff) try again.
    async fn settle(
        &self,
        key: &AccountKey,
        mut record: Attempt,
        result: Result<wire::LoginOutput, CallError>,
        may_retry: bool,
    ) -> ControlFlow<AccountResult> {
        let attempt = record.attempt;
        let (class, message, retry_after, credentials_sent) = match result {
            Ok(output) => {
                let stored = self.store_token(key, output).await;
                if let Err(e) = &stored {
                    record.outcome = Outcome::Failed;
                    record.error_class = Some("internal".into());
                    record.message = Some(e.clone());
                }
                self.log_attempt(key, record).await;
                return ControlFlow::Break(match stored {
                    Ok(()) => {
                        self.successes.fetch_add(1, Ordering::Relaxed);
                        count(key, "success", "");
                        AccountResult::new(key, Outcome::Success, attempt)
                    }
                    Err(e) => {
                        count(key, "failed", "internal");
                        AccountResult::failed(key, "internal", e, attempt)
                    }
                });
            }
            Err(CallError::Failed(e)) => (e.class, e.message, e.retry_after_ms, e.credentials_sent),
            // The plugin itself misbehaved: it is a strategy bug, never retried.
            Err(other) => (ErrorClass::Protocol, other.to_string(), None, true),
        };
        record.outcome = Outcome::Failed;
        record.error_class = Some(class.as_str().to_owned());
        record.message = Some(message.clone());
        self.log_attempt(key, record).await;
        count(key, "failed", class.as_str());
        tracing::warn!(
            account = %format!("{}/{}", key.user.as_str(), key.broker.as_str()),
            attempt, class = class.as_str(), error = %message, "login failed"
        );
        // A password is sent at most once per refresh: once a login may have sent it, only the
        // strategy's own retries of later steps remain, never a new login.
        if may_retry
            && !credentials_sent
            && class.is_retryable()
            && attempt < self.config.refresh.max_attempts
        {
            (self.sleep)(self.backoff(attempt, retry_after)).await;
            return ControlFlow::Continue(());
        }
        if class.is_retryable() {
            if may_retry {
                self.back_off(key).await;
            }
            return ControlFlow::Break(AccountResult::failed(
                key,
                class.as_str(),
                message,
                attempt,
            ));
        }
        ControlFlow::Break(self.give_up(key, class, &message, attempt).await)
    }

    /// The TOTP guard lives in memory; an earlier process (the CLI, a daemon before a restart)
    /// may have used this account's current step. Its last attempt says until when it may have:
    /// mark every step up to that instant as used.
    async fn seed_totp_guard(&self, key: &AccountKey, account_label: &str) {
        let (vault, k) = (self.vault.clone(), key.clone());
        // Every step a strategy was handed is recorded before the code left the host.
        if let Ok(Some(step)) =
            blocking(move || Ok(vault.get_account(&k)?.and_then(|a| a.last_totp_step))).await
        {
            self.services.steps.mark_used(account_label, step);
        }
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Ok(Some(last)) =
            blocking(move || vault.attempts(&k, 1).map(|a| a.into_iter().next())).await
        {
            let end_ms = last.attempt.time_ms + last.attempt.duration_ms as i64;
            if end_ms > 0 {
                let step = (end_ms / crate::plugins::totp::STEP_MS) as u64;
                self.services.steps.mark_used(account_label, step);
            }
        }
    }

    /// A failure a person must look at: mark the account, tell the webhook, and stop.
    async fn give_up(
        &self,
        key: &AccountKey,
        class: ErrorClass,
        message: &str,
        attempts: u32,
    ) -> AccountResult {
        self.notify(key, class, message);
        let attention = Attention {
            class: class.as_str().to_owned(),
            message: message.to_owned(),
            since_ms: self.services.clock.now_ms(),
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Err(e) = blocking(move || vault.set_attention(&k, attention)).await {
            tracing::error!(error = %e, "cannot mark the account as needing attention");
        }
        AccountResult::failed(key, class.as_str(), message, attempts)
    }

    /// POST the attention event to `[refresh] webhook_url`, off the refresh's path.
    fn notify(&self, key: &AccountKey, class: ErrorClass, message: &str) {
        let Some(url) = self.config.refresh.webhook_url.clone() else {
            return;
        };
        let (user, broker) = (key.user.as_str(), key.broker.as_str());
        let assisted = self.config.server.public_url.as_ref().and_then(|base| {
            base.join(&format!("api/login/{broker}/{user}/url"))
                .ok()
                .map(|u| u.to_string())
        });
        let event = serde_json::json!({
            "event": "needs_attention",
            "user_id": user,
            "broker": broker,
            "error_class": class.as_str(),
            "message": message,
            "assisted_login_url": assisted,
        });
        tokio::spawn(async move {
            let sent = reqwest::Client::new()
                .post(url.clone())
                .header("content-type", "application/json")
                .body(event.to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), host = ?url.host_str(), "webhook refused the event")
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), host = ?url.host_str(), "webhook unreachable")
                }
            }
        });
    }

    async fn store_token(&self, key: &AccountKey, output: wire::LoginOutput) -> Result<(), String> {
        let token = NewToken {
            access_token: SecretString::from(output.access_token.expose().to_owned()),
            issued_at_ms: output.issued_at_ms,
            expires_at_ms: output.expires_at_ms,
            extras: SecretJson::from_value(&serde_json::Value::Object(
                output.extras.into_iter().collect::<serde_json::Map<_, _>>(),
            )),
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        blocking(move || vault.put_token(&k, &token)).await?;
        if let Some(on_token) = &self.on_token {
            on_token();
        }
        Ok(())
    }

    async fn log_attempt(&self, key: &AccountKey, attempt: Attempt) {
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Err(e) = blocking(move || vault.append_attempt(&k, &attempt)).await {
            tracing::error!(error = %e, "cannot record a login attempt");
        }
    }

    /// Next scheduled run per enabled broker (Unix ms), from the clock's now.
    pub fn next_runs(&self) -> BTreeMap<String, Option<i64>> {
        let now = self.services.clock.now_ms();
        schedule::schedules(&self.plugins, &self.config)
            .into_iter()
            .map(|s| (s.broker.clone(), s.next_after(now)))
            .collect()
    }
}

/// The log record of an attempt, taken as a success until [`Refresher::settle`] learns otherwise.
fn attempt_record(time_ms: i64, trigger: Trigger, attempt: u32, duration: Duration) -> Attempt {
    Attempt {
        time_ms,
        trigger,
        attempt,
        duration_ms: duration.as_millis() as u64,
        outcome: Outcome::Success,
        error_class: None,
        message: None,
    }
}

fn count(key: &AccountKey, outcome: &'static str, class: &str) {
    metrics::counter!(
        "tokenbot_refresh_total",
        "broker" => key.broker.as_str().to_owned(),
        "outcome" => outcome,
        "class" => class.to_owned()
    )
    .increment(1);
}
