//! Logins a person approves and the broker delivers by webhook (Upstox's approval mode, ABI
//! 1.3): the account waits in `pending_approval` (not a failure: no retry, no backoff, no
//! needs-attention) until a delivery for it is accepted or the request expires.
//!
//! The host's share of a delivery's checks: the hook names an app, a request of that app is
//! pending, the token is not the one stored (a replay; the vault remembers it across restarts,
//! and a token replaced since is dead at the broker, which the strategy's profile call finds).
//! The strategy checks the body and asks
//! the broker about the token ([`wire::TokenDelivery`]); only then does
//! [`Refresher::finish_login`] store it, as the account's one login in flight.

use std::sync::Arc;

use broker_api::wire::{self, ErrorClass};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::assisted::{AssistedAccount, assisted_credentials};
use super::outcome::{Finished, attempt_record};
use super::{AccountResult, Named, Refresher};
use crate::notify::NoticeAccount;
use crate::plugins::PluginError;
use crate::vault::{
    Account, AccountKey, AccountState, Attempt, Outcome, PendingApproval, Trigger, blocking,
};

/// What became of a webhook delivery. Only `NotFound` is visible to the sender as such: every
/// refusal is answered alike, so a forger learns nothing from the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// No such hook (or the broker takes no deliveries).
    NotFound,
    /// Refused or not needed, with why (never the token).
    Ignored(String),
    /// The token of this account is stored.
    Accepted(AccountKey),
}

/// The SHA-256 of a webhook path token or a delivered token, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Refresher {
    /// Before a login: whether an approval request is still pending (then no new request is
    /// sent, unless a person asked for this one account by user and broker), or has expired
    /// (then it is recorded as not given, and the login asks again).
    pub(super) async fn approval_gate(
        &self,
        key: &AccountKey,
        account: &Account,
        trigger: Trigger,
        named: Named,
    ) -> Option<AccountResult> {
        let explicit = named == Named::Account;
        let now = self.plugin_env.clock.now_ms();
        let by_webhook = self
            .plugins
            .get(key.broker.as_str())
            .is_some_and(|p| p.manifest.token_webhook);
        if by_webhook && !explicit {
            // Each request is a prompt on a person's phone, and a new approval kills the token
            // of the last one: while a token is valid (it was given today), nobody is asked.
            let (vault, k) = (self.vault.clone(), key.clone());
            if let Ok(Some(token)) = blocking(move || vault.get_token(&k)).await
                && token.expires_at_ms > now
            {
                return Some(AccountResult::skipped(
                    key,
                    "token_valid",
                    "today's token is stored; no approval request sent",
                ));
            }
        }
        let pending = account.pending_approval?;
        if now < pending.until_ms {
            if explicit {
                tracing::info!(account = %key, "approval pending; a new request was asked for by name");
                return None;
            }
            return Some(AccountResult::skipped(
                key,
                "pending_approval",
                format!(
                    "awaiting the person's approval until {}",
                    crate::clock::iso(pending.until_ms)
                ),
            ));
        }
        self.approval_expired(key, pending, trigger).await;
        None
    }

    /// The request expired unanswered: recorded as `twofa_unavailable` ("approval not given"),
    /// which is not a reason for needs-attention: the next run asks again.
    async fn approval_expired(&self, key: &AccountKey, pending: PendingApproval, trigger: Trigger) {
        let (vault, k) = (self.vault.clone(), key.clone());
        let _ = blocking(move || vault.set_pending_approval(&k, None)).await;
        self.notifier.approval_resolved(key);
        let message = format!(
            "approval not given: the token request expired at {}",
            crate::clock::iso(pending.until_ms)
        );
        tracing::warn!(account = %key, "{message}");
        let record = Attempt {
            time_ms: pending.until_ms,
            outcome: Outcome::Failed,
            error_class: Some(ErrorClass::TwofaUnavailable.as_str().to_owned()),
            message: Some(message),
            ..attempt_record(pending.requested_at_ms, trigger, 1, Default::default())
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Err(e) = blocking(move || vault.append_attempt(&k, &record)).await {
            tracing::error!(error = %e, "cannot record a login attempt");
        }
    }

    /// The strategy sent an approval request: remember it, log the attempt as
    /// `pending_approval`, and tell the person.
    pub(super) async fn await_approval(
        &self,
        key: &AccountKey,
        mut record: Attempt,
        error: &wire::ErrorOutput,
    ) -> AccountResult {
        let takes_deliveries = self
            .plugins
            .get(key.broker.as_str())
            .is_some_and(|p| p.manifest.token_webhook);
        // An expiry already past, or more than a day off, is a broker that changed (say, seconds
        // where milliseconds were): taken as is, it would end the wait at once and the next run
        // would ask the person again, and again.
        let now = self.plugin_env.clock.now_ms();
        let sane = |until: &i64| *until > now + 60_000 && *until <= now + 26 * 3_600_000;
        let Some(until_ms) = error
            .pending_until_ms
            .filter(|u| takes_deliveries && sane(u))
        else {
            // A strategy that cannot deliver, or says not until when: nothing will come.
            let message = format!(
                "the strategy answered pending_approval without a webhook or a plausible \
                 expiry: {}",
                error.message
            );
            return self.give_up(key, ErrorClass::Protocol, &message, 1).await;
        };
        let pending = PendingApproval {
            requested_at_ms: record.time_ms,
            until_ms,
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        // The account is read back for its broker-side id, which the notice names.
        let marked = blocking(move || {
            vault.set_pending_approval(&k, Some(pending))?;
            vault.get_account(&k)
        })
        .await;
        let broker_user_id = match marked {
            Ok(account) => account.map(|a| a.broker_user_id).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the pending approval");
                String::new()
            }
        };
        record.outcome = Outcome::PendingApproval;
        record.error_class = Some(ErrorClass::PendingApproval.as_str().to_owned());
        record.message = Some(error.message.clone());
        let attempt = record.attempt;
        let (vault, k) = (self.vault.clone(), key.clone());
        if let Err(e) = blocking(move || vault.append_attempt(&k, &record)).await {
            tracing::error!(error = %e, "cannot record a login attempt");
        }
        metrics::counter!(
            "tokenbot_refresh_total",
            "broker" => key.broker.as_str().to_owned(),
            "outcome" => "pending_approval",
            "class" => ""
        )
        .increment(1);
        tracing::info!(account = %key, until = %crate::clock::iso(until_ms), "awaiting approval");
        // No link: the person approves in the broker's app or on WhatsApp, where the request is.
        let account = NoticeAccount::new(key.clone(), broker_user_id);
        self.notifier.approval_requested(account, None, until_ms);
        AccountResult {
            attempts: attempt,
            ..AccountResult::skipped(
                key,
                "pending_approval",
                format!(
                    "{}; awaiting approval until {}",
                    error.message,
                    crate::clock::iso(until_ms)
                ),
            )
        }
    }

    /// A token `broker` POSTed to `/webhook/<broker>/<hook>`. Answers once the token is stored
    /// or refused.
    pub async fn deliver_token(
        self: &Arc<Self>,
        broker: &str,
        hook: &str,
        body: &[u8],
    ) -> Delivery {
        let Some(plugin) = self
            .plugins
            .get(broker)
            .filter(|p| p.manifest.token_webhook)
        else {
            return Delivery::NotFound;
        };
        let (vault, b, hash) = (self.vault.clone(), broker.to_owned(), sha256_hex(hook));
        let app = match blocking(move || vault.webhook_app(&b, &hash)).await {
            Ok(Some(app)) => app,
            Ok(None) => return Delivery::NotFound,
            Err(e) => return self.ignored(broker, format!("vault: {e}")),
        };
        let payload: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |k: &str| payload.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let token = text("access_token");
        if token.is_empty() {
            return self.ignored(broker, "not a token delivery".into());
        }
        let token_hash = sha256_hex(token);
        let Some(key) = self.pending_account(broker, &app, text("user_id")).await else {
            return self.ignored(broker, "no approval request of this app is pending".into());
        };
        let (me, k) = (self.clone(), key.clone());
        let body = wire::Sensitive::new(String::from_utf8_lossy(body));
        let login = async move {
            let delivery = me.deliver_now(plugin, &k, body, token_hash).await;
            let result = match &delivery {
                Delivery::Accepted(_) => AccountResult::new(&k, Outcome::Success, 1),
                Delivery::Ignored(why) => AccountResult::skipped(&k, "ignored", why.clone()),
                Delivery::NotFound => AccountResult::skipped(&k, "ignored", "no such hook"),
            };
            (result, delivery)
        };
        let delivery = self
            .run_alone(&key, login)
            .await
            .unwrap_or_else(|| Delivery::Ignored("the delivery's login was aborted".into()));
        if let Delivery::Ignored(why) = &delivery {
            // Debug-quoted: the reason may carry text the sender chose, which must not forge log lines.
            tracing::warn!(account = %key, reason = ?why, "webhook delivery ignored");
        }
        delivery
    }

    fn ignored(&self, broker: &str, why: String) -> Delivery {
        tracing::warn!(broker, reason = ?why, "webhook delivery ignored");
        Delivery::Ignored(why)
    }

    /// The account of `app` (an API key) with a live pending request: the one of `user_id` when
    /// several share the app, else the only one.
    async fn pending_account(&self, broker: &str, app: &str, user_id: &str) -> Option<AccountKey> {
        let now = self.plugin_env.clock.now_ms();
        let (vault, broker, app) = (self.vault.clone(), broker.to_owned(), app.to_owned());
        let candidates = blocking(move || {
            let mut out = Vec::new();
            for a in vault.list_accounts()? {
                let live = a.pending_approval.is_some_and(|p| now < p.until_ms);
                if a.broker.as_str() != broker || !live {
                    continue;
                }
                let key = a.key();
                let same_app = vault.credentials(&key)?.is_some_and(|c| {
                    c.api_key
                        .as_ref()
                        .is_some_and(|k| k.expose_secret().trim() == app)
                });
                if same_app {
                    out.push((key, a.broker_user_id));
                }
            }
            Ok(out)
        })
        .await
        .ok()?;
        match candidates
            .iter()
            .find(|(_, id)| id.eq_ignore_ascii_case(user_id))
        {
            Some((key, _)) => Some(key.clone()),
            None if candidates.len() == 1 => Some(candidates[0].0.clone()),
            None => None,
        }
    }

    /// The account and its pending request, re-read under the account's single flight, if a
    /// delivery may still answer it; else why not.
    async fn awaiting_delivery(
        &self,
        key: &AccountKey,
        started_ms: i64,
        token_hash: &str,
    ) -> Result<(AssistedAccount, PendingApproval), &'static str> {
        let Ok(account) = self.assisted_account(key).await else {
            return Err("the account is gone");
        };
        // Re-read under the account's single flight: a token that arrived meanwhile (the other
        // mode, or this delivery twice at once) has ended the request.
        let Some(pending) = account
            .account()
            .pending_approval
            .filter(|p| started_ms < p.until_ms)
        else {
            return Err("no approval request is pending any more");
        };
        // A token another system now pushes for this account is not overwritten.
        if account.account().state() == AccountState::ManagedExternally {
            return Err("the account's token is managed externally");
        }
        let (vault, k) = (self.vault.clone(), key.clone());
        let stored = blocking(move || vault.get_token(&k)).await.ok().flatten();
        if stored.is_some_and(|t| sha256_hex(t.access_token.expose_secret()) == token_hash) {
            return Err("replayed: this token is the one stored");
        }
        Ok((account, pending))
    }

    /// As the account's login in flight: the strategy checks the delivery; a token it accepts
    /// is stored by [`Refresher::finish_login`].
    async fn deliver_now(
        &self,
        plugin: Arc<crate::plugins::Plugin>,
        key: &AccountKey,
        body: wire::Sensitive,
        token_hash: String,
    ) -> Delivery {
        let started_ms = self.plugin_env.clock.now_ms();
        let (account, pending) = match self.awaiting_delivery(key, started_ms, &token_hash).await {
            Ok(found) => found,
            Err(why) => return Delivery::Ignored(why.into()),
        };
        let broker_config = self.broker_config(&plugin.id);
        let settings = match plugin.settings(&broker_config.settings) {
            Ok(s) => s,
            Err(e) => return Delivery::Ignored(e),
        };
        let request = wire::AssistedFinishRequest {
            v: wire::WIRE_VERSION,
            user_id: key.user.as_str().to_owned(),
            broker_user_id: account.account().broker_user_id.clone(),
            credentials: assisted_credentials(account.credentials()),
            query: Default::default(),
            delivery: Some(wire::TokenDelivery {
                body,
                requested_at_ms: pending.requested_at_ms,
                pending_until_ms: pending.until_ms,
            }),
            redirect_url: self.config.server.callback_url(key.broker.as_str()),
            base_urls: plugin.base_urls(&broker_config.urls),
            settings,
        };
        let limits = self.limits(&plugin);
        let slot = self.login_slot(&limits).await;
        let ctx = self.plugin_call(
            &plugin,
            key.to_string(),
            account.credentials(),
            None,
            &limits,
        );
        let checked = crate::plugins::run_blocking(plugin, ctx, move |p, c| {
            p.assisted_finish_blocking(c, &request)
        })
        .await;
        drop(slot);
        let out = match checked {
            Ok(out) => out,
            // Refused: nothing is recorded against the account, whose request stays pending
            // for the genuine delivery.
            Err(PluginError::Failed(e)) => return Delivery::Ignored(e.message),
            Err(e) => return Delivery::Ignored(e.to_string()),
        };
        let duration = std::time::Duration::from_millis(
            (self.plugin_env.clock.now_ms() - started_ms).max(0) as u64,
        );
        let record = attempt_record(started_ms, Trigger::Assisted, 1, duration);
        match self.finish_login(key, record, Ok(out)).await {
            Finished::Stored { .. } => {
                tracing::info!(account = %key, "approved token delivered by webhook; stored");
                Delivery::Accepted(key.clone())
            }
            Finished::NotStored(e) => Delivery::Ignored(format!("cannot store the token: {e}")),
            Finished::Failed(e) => Delivery::Ignored(e.to_string()),
        }
    }
}
