//! What lets a login start: the account's single flight (one login at a time per account, every
//! trigger included) and the global and per-broker limits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AccountResult, Named, Refresher};
use crate::plugins::Plugin;
use crate::vault::{AccountKey, AccountLease, Trigger, blocking};

/// How often a login waiting for another daemon's login of the same account asks again.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// Concurrency and request-rate limits of one broker, shared by all its logins.
pub(super) struct BrokerLimits {
    pub(super) logins: Arc<Semaphore>,
    pub(super) requests: Arc<governor::DefaultDirectRateLimiter>,
}

/// The result of the login in flight for an account, awaited by every trigger that joins it.
pub(super) type SharedResult = Shared<BoxFuture<'static, AccountResult>>;

/// A login slot: one under the global cap and one under its broker's. Dropped when the strategy
/// call returns, so backoff sleeps hold no slot.
pub(super) struct LoginSlot {
    _global: Result<OwnedSemaphorePermit, tokio::sync::AcquireError>,
    _broker: Result<OwnedSemaphorePermit, tokio::sync::AcquireError>,
}

impl Refresher {
    /// Wait until no login is in flight, whoever started it (the scheduler, the API, a caller
    /// that has gone away), for at most `timeout`. Whether all finished.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all_done = async {
            loop {
                let running: Vec<SharedResult> = self.inflight.lock().values().cloned().collect();
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
        named: Named,
    ) -> AccountResult {
        let shared = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let (me, task_key) = (self.clone(), key.clone());
                    let login = async move {
                        let result = me.login_account(&task_key, trigger, named).await;
                        me.after_refresh(&task_key, &result).await;
                        result
                    };
                    self.start_login(&mut inflight, key, login.boxed())
                }
            }
        };
        shared.await
    }

    /// Run `login` as the account's one login in flight, once any login already running for it
    /// (whoever started it) is over: it has its own answer from the broker to finish, so it
    /// cannot join another's result, but triggers arriving meanwhile join its result instead of
    /// sending the password. `None` if its task was aborted.
    pub(super) async fn run_alone<T: Send + 'static>(
        self: &Arc<Self>,
        key: &AccountKey,
        login: impl Future<Output = (AccountResult, T)> + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (me, lease_key) = (self.clone(), key.clone());
        let login = async move {
            // Across the daemons sharing the vault too: a login of the account running on
            // another one ends first. Without the lease, nothing runs (`None`).
            let lease = match me.account_lease(&lease_key, false).await {
                Ok(lease) => lease,
                Err(skipped) => return skipped,
            };
            let (result, detail) = login.await;
            drop(lease);
            let _ = answer.send(detail);
            result
        }
        .boxed();
        loop {
            let running = {
                let mut inflight = self.inflight.lock();
                match inflight.get(key) {
                    Some(running) => running.clone(),
                    None => {
                        // Its result reaches this caller through `answered`.
                        drop(self.start_login(&mut inflight, key.clone(), login));
                        break;
                    }
                }
            };
            running.await;
        }
        answered.await.ok()
    }

    /// Spawn `login` and enter it as the account's login in flight (`inflight` is the locked
    /// map). The task removes its entry when done.
    fn start_login(
        self: &Arc<Self>,
        inflight: &mut HashMap<AccountKey, SharedResult>,
        key: AccountKey,
        login: BoxFuture<'static, AccountResult>,
    ) -> SharedResult {
        let (me, task_key) = (self.clone(), key.clone());
        let task = tokio::spawn(async move {
            let result = login.await;
            me.inflight.lock().remove(&task_key);
            result
        });
        let failed_key = key.clone();
        let shared = async move {
            task.await.unwrap_or_else(|_| {
                AccountResult::failed(&failed_key, "internal", "the login task was aborted", 0)
            })
        }
        .boxed()
        .shared();
        inflight.insert(key, shared.clone());
        shared
    }

    /// The account's lease across the daemons sharing the vault (always free on a vault file).
    /// While another daemon holds it, wait for its login to end, for as long as a whole login
    /// may take; if it made an attempt meanwhile, its result is this login's too, as a trigger
    /// joins a login in flight in one daemon.
    ///
    /// Without `join` (a login that has its own answer from the broker to finish: an assisted
    /// callback, an approval delivery), it waits for the lease and never takes another's result.
    pub(super) async fn account_lease(
        &self,
        key: &AccountKey,
        join: bool,
    ) -> Result<AccountLease, AccountResult> {
        let since_ms = self.plugin_env.clock.now_ms();
        let refresh = &self.config.refresh;
        let patience = Duration::from_secs(refresh.login_timeout_secs)
            .saturating_mul(refresh.max_attempts.max(1))
            .saturating_add(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + patience;
        let mut waited = false;
        loop {
            let (vault, k) = (self.vault.clone(), key.clone());
            match blocking(move || vault.lease(&k)).await {
                Ok(Some(lease)) => {
                    if join
                        && waited
                        && let Some(theirs) = self.login_elsewhere(key, since_ms).await
                    {
                        return Err(theirs);
                    }
                    return Ok(lease);
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    waited = true;
                    tokio::time::sleep(LEASE_POLL).await;
                }
                Ok(None) => {
                    return Err(AccountResult::skipped(
                        key,
                        "in_flight_elsewhere",
                        "another daemon sharing the vault is still logging this account in",
                    ));
                }
                Err(e) => {
                    return Err(AccountResult::skipped(
                        key,
                        "vault_unavailable",
                        e.to_string(),
                    ));
                }
            }
        }
    }

    /// The result of the last attempt, if another daemon made it since `since_ms`.
    async fn login_elsewhere(&self, key: &AccountKey, since_ms: i64) -> Option<AccountResult> {
        let (vault, k) = (self.vault.clone(), key.clone());
        let last = blocking(move || vault.attempts(&k, 1))
            .await
            .ok()?
            .into_iter()
            .next()?;
        let ended_ms = last.attempt.time_ms + last.attempt.duration_ms as i64;
        if ended_ms < since_ms {
            return None;
        }
        let attempt = last.attempt;
        Some(AccountResult {
            error_class: attempt.error_class,
            message: Some(match attempt.message {
                Some(theirs) => format!("logged in by another daemon sharing the vault: {theirs}"),
                None => "logged in by another daemon sharing the vault".into(),
            }),
            ..AccountResult::new(key, attempt.outcome, 0)
        })
    }

    /// Wait for a login slot under the global cap and the broker's.
    pub(super) async fn login_slot(&self, limits: &BrokerLimits) -> LoginSlot {
        LoginSlot {
            _global: self.global.clone().acquire_owned().await,
            _broker: limits.logins.clone().acquire_owned().await,
        }
    }

    /// The limits of `plugin`'s broker, built on first use.
    pub(super) fn limits(&self, plugin: &Plugin) -> Arc<BrokerLimits> {
        let mut brokers = self.brokers.lock();
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
                // One request per 1/rate seconds, no burst, with a small margin for network
                // jitter: a broker never sees more than `rate` requests in any second.
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
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use tokio::sync::oneshot;

    use super::*;
    use crate::config::{Config, PluginsConfig};
    use crate::plugins::{CallLimits, PluginEnv, Registry};
    use crate::vault::{
        Argon2Params, Engine, KeyMaterial, MasterKey, Outcome, Vault, VaultOptions,
    };

    fn refresher(dir: &std::path::Path) -> Arc<Refresher> {
        let options = VaultOptions {
            argon2: Argon2Params {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            },
            ..VaultOptions::default()
        };
        let key = KeyMaterial::Key(MasterKey::from_bytes([7; 32]));
        let vault = Vault::create(dir.join("vault.redb"), Engine::Redb, &key, options).unwrap();
        let plugins = Registry::load(&PluginsConfig {
            dir: dir.join("plugins"),
            sha256_allowlist: vec![],
        });
        let clock = Arc::new(crate::clock::ManualClock::new(0));
        Arc::new(Refresher::new(
            Arc::new(vault),
            Arc::new(plugins),
            Arc::new(PluginEnv::new(clock, CallLimits::default())),
            Arc::new(Config::default()),
        ))
    }

    /// The assisted callback once finished its login beside a scheduled one for the same
    /// account: it must wait for the login in flight, and a trigger arriving meanwhile must join
    /// it rather than send the password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_run_alone_waits_for_the_one_in_flight_and_later_triggers_join_it() {
        let dir = tempfile::tempdir().unwrap();
        let refresher = refresher(dir.path());
        let key = AccountKey::parse("u1", "kite").unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release_first, first_released) = oneshot::channel::<()>();
        let first = {
            let (order, task_key) = (order.clone(), key.clone());
            let login = async move {
                first_released.await.ok();
                order.lock().push("first");
                AccountResult::failed(&task_key, "network", "first", 1)
            };
            let mut inflight = refresher.inflight.lock();
            refresher.start_login(&mut inflight, key.clone(), login.boxed())
        };
        let (release_alone, alone_released) = oneshot::channel::<()>();
        let alone = {
            let (order, key, me) = (order.clone(), key.clone(), refresher.clone());
            let login = {
                let key = key.clone();
                async move {
                    order.lock().push("alone");
                    alone_released.await.ok();
                    (AccountResult::new(&key, Outcome::Success, 1), "detail")
                }
            };
            tokio::spawn(async move { me.run_alone(&key, login).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(order.lock().is_empty(), "it waits for the first");
        release_first.send(()).unwrap();
        assert_eq!(first.await.message.as_deref(), Some("first"));
        while order.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The account does not exist: a login of its own would fail with `not_found`.
        let joined = tokio::spawn({
            let (me, key) = (refresher.clone(), key.clone());
            async move { me.refresh_account(key, Trigger::Api, Named::Account).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        release_alone.send(()).unwrap();
        assert_eq!(alone.await.unwrap(), Some("detail"));
        assert_eq!(joined.await.unwrap().outcome, Outcome::Success);
        assert_eq!(*order.lock(), ["first", "alone"]);
        assert!(refresher.drain(Duration::from_secs(1)).await);
    }
}
