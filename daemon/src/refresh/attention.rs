//! Failures a person must look at: the account is marked as needing attention, and the person
//! is told (`notify`), with the link to log in by hand.

use broker_api::wire::ErrorClass;

use super::{AccountResult, Refresher};
use crate::notify::NoticeAccount;
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
    /// A failure a person must look at: mark the account, tell the person, and stop.
    pub(super) async fn give_up(
        &self,
        key: &AccountKey,
        class: ErrorClass,
        message: &str,
        attempts: u32,
    ) -> AccountResult {
        let attention = Attention {
            class: class.as_str().to_owned(),
            message: message.to_owned(),
            since_ms: self.plugin_env.clock.now_ms(),
        };
        let (vault, k) = (self.vault.clone(), key.clone());
        // The account is read back for its broker-side id, which the notice names.
        let marked = blocking(move || {
            vault.set_attention(&k, attention)?;
            vault.get_account(&k)
        })
        .await;
        // The person is told even if the mark could not be written: they are needed either way.
        let broker_user_id = match marked {
            Ok(account) => account.map(|a| a.broker_user_id).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot mark the account as needing attention");
                String::new()
            }
        };
        let account = NoticeAccount::new(key.clone(), broker_user_id);
        self.notifier.needs_attention(account, class, message);
        AccountResult::failed(key, class.as_str(), message, attempts)
    }
}
