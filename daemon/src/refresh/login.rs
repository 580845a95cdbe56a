//! One account's headless login: what may skip it, what its attempts share (strategy,
//! credentials, TOTP secret, settings, limits), and the attempt loop.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use broker_api::wire::{self, ErrorClass, LoginRequest, Sensitive};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::gate::{BrokerLimits, LoginSlot};
use super::outcome::attempt_record;
use super::{AccountResult, Named, Refresher};
use crate::config::BrokerConfig;
use crate::plugins::host::PluginCall;
use crate::plugins::{AccountAccess, Plugin, PluginError};
use crate::vault::{
    Account, AccountKey, AccountLease, AccountState, Attempt, Credentials, Trigger, VaultError,
    blocking,
};

/// What every attempt of one account's login shares.
struct LoginPlan {
    account: Account,
    plugin: Arc<Plugin>,
    credentials: Credentials,
    totp_secret: Option<Zeroizing<Vec<u8>>>,
    broker_config: BrokerConfig,
    settings: BTreeMap<String, String>,
    limits: Arc<BrokerLimits>,
    /// `user/broker`: keys the TOTP step guard and labels plugin logs.
    label: String,
}

fn secret(s: &Option<SecretString>) -> Option<Sensitive> {
    s.as_ref().map(|s| Sensitive::new(s.expose_secret()))
}

/// Every secret of `credentials`, for the redactor of a call acting for the account.
fn secrets(credentials: &Credentials) -> Vec<&str> {
    [
        &credentials.password,
        &credentials.api_secret,
        &credentials.totp_secret,
        &credentials.api_key,
    ]
    .into_iter()
    .flatten()
    .chain(credentials.extra.values())
    .map(|s| s.expose_secret())
    .collect()
}

/// The fields a strategy declared beyond the five, as the wire carries them.
pub(super) fn extras(credentials: &Credentials) -> std::collections::BTreeMap<String, Sensitive> {
    (credentials.extra.iter())
        .map(|(name, value)| (name.clone(), Sensitive::new(value.expose_secret())))
        .collect()
}

impl Refresher {
    /// Log one account in: skip it if it must not be, then attempt until done.
    pub(super) async fn login_account(
        self: &Arc<Self>,
        key: &AccountKey,
        trigger: Trigger,
        named: Named,
    ) -> AccountResult {
        // Held for the whole login; the plan reads the account after taking it, so it sees what
        // another daemon's login just recorded (a wrong password, a new token).
        let lease = match self.account_lease(key, true).await {
            Ok(lease) => Arc::new(lease),
            Err(done) => return done,
        };
        let plan = match self.plan_login(key, trigger, named).await {
            Ok(plan) => plan,
            Err(done) => return done,
        };
        let login_timeout_ms = self.config.refresh.login_timeout_secs.saturating_mul(1000);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The code is asked for after the password was sent. If this account's next unused
            // TOTP step is still ahead, wait for it here, holding no login slot, so that the
            // login gets its code without waiting; if it is further ahead than a whole login may
            // take, do not send the password at all.
            let now_ms = self.plugin_env.clock.now_ms();
            let totp_wait = if plan.totp_secret.is_some() {
                // On the broker's time, as the TOTP callback counts steps.
                let skew = (self.plugin_env.skew).correction_ms(key.broker.as_str(), now_ms);
                self.plugin_env.steps.wait_ms(&plan.label, now_ms + skew)
            } else {
                0
            };
            let settled = if totp_wait > login_timeout_ms {
                let message = format!(
                    "the account's next unused TOTP step starts in {totp_wait} ms, later than \
                     login_timeout_secs allows; the broker was not contacted"
                );
                let result = Err(PluginError::Failed(wire::ErrorOutput::new(
                    ErrorClass::Network,
                    message,
                )));
                let record = attempt_record(now_ms, trigger, attempt, Duration::ZERO);
                // Not retried now: backing off until the step is in reach would hold the caller
                // for most of a TOTP step per attempt. The next refresh finds the step closer.
                self.settle(key, record, result, false).await
            } else {
                if totp_wait > 0 {
                    self.plugin_env.clock.wait_ms(totp_wait).await;
                }
                // Two logins of one account at once is how accounts lock: once the session
                // holding the lease ended, another daemon sharing the vault may have taken it.
                let slot = self.login_slot(&plan.limits).await;
                // Asked of the database after the wait for a slot, which may be long: the
                // session may have ended meanwhile without this process noticing.
                let confirmed = {
                    let lease = lease.clone();
                    blocking(move || Ok(lease.confirm())).await.unwrap_or(false)
                };
                if !confirmed {
                    return AccountResult::skipped(
                        key,
                        "vault_unavailable",
                        "this daemon lost its lease on the account's logins (its database \
                         session ended); another daemon may log it in",
                    );
                }
                let (record, result) = self
                    .attempt(key, &plan, &lease, slot, trigger, attempt)
                    .await;
                self.settle(key, record, result, true).await
            };
            if let ControlFlow::Break(done) = settled {
                return done;
            }
        }
    }

    /// Why this account is not logged in now, if it is not.
    fn skip_reason(
        &self,
        key: &AccountKey,
        account: &Account,
        named: Named,
    ) -> Option<AccountResult> {
        match account.state() {
            AccountState::ManagedExternally => {
                return Some(AccountResult::skipped(
                    key,
                    "managed_externally",
                    "managed externally",
                ));
            }
            AccountState::NeedsAttention => {
                let class = account
                    .attention
                    .as_ref()
                    .map(|a| a.class.clone())
                    .unwrap_or_default();
                return Some(AccountResult::skipped(
                    key,
                    "needs_attention",
                    format!("needs attention after {class}; update its credentials to retry"),
                ));
            }
            AccountState::Paused if !named.any() => {
                return Some(AccountResult::skipped(key, "paused", "auto-refresh is off"));
            }
            _ => {}
        }
        if named.any() {
            return None;
        }
        self.held(key, account)
    }

    /// Gather what the attempts share, or the result that ends the login before any.
    async fn plan_login(
        &self,
        key: &AccountKey,
        trigger: Trigger,
        named: Named,
    ) -> Result<LoginPlan, AccountResult> {
        let (vault, k) = (self.vault.clone(), key.clone());
        let account = found(key, blocking(move || vault.get_account(&k)).await)?;
        if let Some(skipped) = self.skip_reason(key, &account, named) {
            return Err(skipped);
        }
        if let Some(waiting) = self.approval_gate(key, &account, trigger, named).await {
            return Err(waiting);
        }
        let Some(plugin) = self.plugins.get(key.broker.as_str()) else {
            return Err(AccountResult::failed(
                key,
                "protocol",
                format!("no strategy for broker {}", key.broker.as_str()),
                0,
            ));
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        let credentials = found(key, blocking(move || vault.credentials(&k)).await)?;
        let totp_secret = match &credentials.totp_secret {
            Some(s) => match crate::plugins::totp::parse_secret(s.expose_secret()) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    let class = ErrorClass::TwofaUnavailable;
                    return Err(self.give_up(key, class, &e.to_string(), 0).await);
                }
            },
            None => None,
        };
        if let Some(answer) = self.too_soon(key, &plugin).await {
            return Err(answer);
        }
        let label = key.to_string();
        self.seed_totp_guard(key, &label).await;
        let broker_config = self.broker_config(key.broker.as_str());
        let settings = plugin
            .settings(&broker_config.settings)
            .map_err(|message| AccountResult::failed(key, "protocol", message, 0))?;
        Ok(LoginPlan {
            limits: self.limits(&plugin),
            account,
            plugin,
            credentials,
            totp_secret,
            broker_config,
            settings,
            label,
        })
    }

    /// One login attempt, in a login slot: the strategy's result and its log record.
    async fn attempt(
        &self,
        key: &AccountKey,
        plan: &LoginPlan,
        lease: &Arc<AccountLease>,
        slot: LoginSlot,
        trigger: Trigger,
        attempt: u32,
    ) -> (Attempt, Result<wire::LoginOutput, PluginError>) {
        let credentials = &plan.credentials;
        let request = LoginRequest {
            v: wire::WIRE_VERSION,
            user_id: key.user.as_str().to_owned(),
            broker_user_id: plan.account.broker_user_id.clone(),
            credentials: wire::Credentials {
                password: secret(&credentials.password),
                api_key: credentials
                    .api_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned()),
                api_secret: secret(&credentials.api_secret),
                extra: extras(credentials),
            },
            base_urls: plan.plugin.base_urls(&plan.broker_config.urls),
            settings: plan.settings.clone(),
            attempt,
            // Some brokers' headless flows name the app's registered redirect (Fyers).
            redirect_url: self.config.server.callback_url(key.broker.as_str()),
        };
        let mut ctx = self.plugin_call(
            &plan.plugin,
            plan.label.clone(),
            credentials,
            plan.totp_secret.clone(),
            &plan.limits,
        );
        let (vault, k, lease) = (self.vault.clone(), key.clone(), lease.clone());
        ctx.step_log = Some(Arc::new(move |step| {
            if !lease.confirm() {
                return Err(
                    "this daemon's lease on the account's logins ended; another daemon \
                            sharing the vault may be logging it in"
                        .into(),
                );
            }
            vault
                .record_totp_step(&k, step)
                .map(drop)
                .map_err(|e| e.to_string())
        }));
        let started_ms = self.plugin_env.clock.now_ms();
        let (result, duration) = self
            .timed_call(key, plan.plugin.clone(), ctx, move |p, c| {
                p.login_blocking(c, &request)
            })
            .await;
        drop(slot);
        (
            attempt_record(started_ms, trigger, attempt, duration),
            result,
        )
    }

    /// A fresh call context for `plugin` acting for `account` (`user/broker`), under its
    /// broker's request rate.
    pub(super) fn plugin_call(
        &self,
        plugin: &Plugin,
        account: String,
        credentials: &Credentials,
        totp_secret: Option<Zeroizing<Vec<u8>>>,
        limits: &BrokerLimits,
    ) -> PluginCall {
        let broker_config = self.broker_config(&plugin.id);
        let mut ctx = self.plugin_env.call_for(AccountAccess {
            plugin,
            account,
            configured_urls: &broker_config.urls,
            extra_hosts: &broker_config.allowed_hosts,
            ipv4_only: broker_config.ipv4_only,
            totp_secret,
            secrets: secrets(credentials),
        });
        ctx.http.limiter = Some(limits.requests.clone());
        ctx
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
            self.plugin_env.steps.mark_used(account_label, step);
        }
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Ok(Some(last)) =
            blocking(move || vault.attempts(&k, 1).map(|a| a.into_iter().next())).await
        {
            let end_ms = last.attempt.time_ms + last.attempt.duration_ms as i64;
            if end_ms > 0 {
                let step = (end_ms / crate::plugins::totp::STEP_MS) as u64;
                self.plugin_env.steps.mark_used(account_label, step);
            }
        }
    }
}

/// A vault read of the account's record as the result that ends a login: `not_found` when the
/// account is gone, `internal` when the vault failed.
fn found<T>(key: &AccountKey, read: Result<Option<T>, VaultError>) -> Result<T, AccountResult> {
    match read {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(AccountResult::failed(
            key,
            "not_found",
            "no such account",
            0,
        )),
        Err(e) => Err(AccountResult::failed(key, "internal", e.to_string(), 0)),
    }
}
