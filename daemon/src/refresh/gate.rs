//! What lets a login start: the account's single flight (one login at a time per account, every
//! trigger included) and the global and per-broker limits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AccountResult, Refresher};
use crate::plugins::Plugin;
use crate::vault::{AccountKey, Trigger};

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
                    let (me, task_key) = (self.clone(), key.clone());
                    let login = async move {
                        let result = me.login_account(&task_key, trigger, explicit).await;
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
        let login = login
            .map(move |(result, detail)| {
                let _ = answer.send(detail);
                result
            })
            .boxed();
        loop {
            let running = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
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
            me.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task_key);
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

    /// Wait for a login slot under the global cap and the broker's.
    pub(super) async fn login_slot(&self, limits: &BrokerLimits) -> LoginSlot {
        LoginSlot {
            _global: self.global.clone().acquire_owned().await,
            _broker: limits.logins.clone().acquire_owned().await,
        }
    }

    /// The limits of `plugin`'s broker, built on first use.
    pub(super) fn limits(&self, plugin: &Plugin) -> Arc<BrokerLimits> {
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
