//! Failures a person must look at: the account is marked as needing attention, and the
//! configured webhook is told, with the link to log in by hand.

use std::time::Duration;

use broker_api::wire::ErrorClass;

use super::{AccountResult, Refresher};
use crate::vault::{AccountKey, Attention, Trigger, Vault, VaultError, blocking};

/// Clear the attention that a login by `trigger`, which produced a token, resolves. Blocking.
pub(super) fn clear_resolved(
    vault: &Vault,
    key: &AccountKey,
    trigger: Trigger,
) -> Result<(), VaultError> {
    // Headless logins never run on an account needing attention: they leave it as they found it.
    if trigger != Trigger::Assisted {
        return Ok(());
    }
    // A person logging in shows the broker lets a person in, not that the stored password or
    // TOTP secret is right: only the classes that says fixes are cleared.
    let resolved = vault.get_account(key)?.is_some_and(|a| {
        a.attention
            .as_ref()
            .is_some_and(Attention::resolved_by_assisted_login)
    });
    if resolved {
        vault.clear_attention(key)?;
    }
    Ok(())
}

impl Refresher {
    /// A failure a person must look at: mark the account, tell the webhook, and stop.
    pub(super) async fn give_up(
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
            since_ms: self.plugin_env.clock.now_ms(),
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

    /// Tell `[refresh] webhook_url` that a person must approve a token request (event
    /// `approval_requested`), with the daemon's assisted-login link for brokers that also take a
    /// browser login, and when the request expires. Never a secret or a token.
    pub(super) fn announce_approval(&self, key: &AccountKey, message: &str, until_ms: i64) {
        let Some(url) = self.config.refresh.webhook_url.clone() else {
            return;
        };
        let (user, broker) = (key.user.as_str(), key.broker.as_str());
        let link = self.config.server.public_url.as_ref().and_then(|base| {
            base.join(&format!("api/login/{broker}/{user}/url"))
                .ok()
                .map(|u| u.to_string())
        });
        let event = serde_json::json!({
            "event": "approval_requested",
            "user_id": user,
            "broker": broker,
            "message": message,
            "assisted_login_url": link,
            "expires_at": crate::clock::iso(until_ms),
        });
        tokio::spawn(async move {
            let sent = reqwest::Client::new()
                .post(url.clone())
                .header("content-type", "application/json")
                .body(event.to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                tracing::warn!(error = %e.without_url(), host = ?url.host_str(), "webhook did not take the event");
            }
        });
    }
}
