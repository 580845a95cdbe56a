//! Assisted (browser) login, the refresher's side: the broker's login URL for an account, and
//! the finish from the broker's callback, run as the account's one login in flight, within its
//! broker's limits, and recorded by [`Refresher::finish_login`] like every other login. The HTTP
//! handlers (`api::login`) only translate.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker_api::wire::{self, Sensitive};
use secrecy::ExposeSecret;

use super::outcome::{Finished, LoginFailure, attempt_record};
use super::{AccountResult, Refresher};
use crate::plugins::{Plugin, PluginError};
use crate::vault::{Account, AccountKey, Credentials, Outcome, Trigger, VaultError, blocking};

/// The account an assisted login is for, and its credentials (no `Debug`: it holds secrets).
pub struct AssistedAccount {
    account: Account,
    credentials: Credentials,
}

impl AssistedAccount {
    pub(super) fn account(&self) -> &Account {
        &self.account
    }

    pub(super) fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// A finished assisted login (never the token).
#[derive(Debug, Clone)]
pub struct AssistedLogin {
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// When the new token expires (Unix ms).
    pub expires_at_ms: i64,
}

/// Why an assisted login could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum AssistedError {
    /// The account could not be read, or its token not stored.
    #[error(transparent)]
    Store(#[from] VaultError),
    /// A configured setting is unknown to the strategy.
    #[error("{0}")]
    Configuration(String),
    /// The strategy failed, or the broker refused the login.
    #[error(transparent)]
    Broker(PluginError),
}

pub(super) fn assisted_credentials(c: &Credentials) -> wire::Credentials {
    wire::Credentials {
        // Assisted login never sends the password: the person types it at the broker.
        password: None,
        api_key: c.api_key.as_ref().map(|k| k.expose_secret().to_owned()),
        api_secret: c
            .api_secret
            .as_ref()
            .map(|s| Sensitive::new(s.expose_secret())),
        // Fields a strategy declares may be needed to build the login URL (e.g. a mobile number);
        // a PIN, like the password, is typed by the person and never sent.
        extra: super::login::extras(c)
            .into_iter()
            .filter(|(name, _)| name != "pin")
            .collect(),
    }
}

/// A broker that logged someone else in gave no token for this account.
fn same_broker_user(
    out: wire::LoginOutput,
    broker_user_id: &str,
) -> Result<wire::LoginOutput, PluginError> {
    if !out.broker_user_id.is_empty() && !out.broker_user_id.eq_ignore_ascii_case(broker_user_id) {
        return Err(PluginError::Failed(wire::ErrorOutput::new(
            wire::ErrorClass::InvalidCredentials,
            format!(
                "the broker logged in {} but this account is {}",
                out.broker_user_id, broker_user_id
            ),
        )));
    }
    Ok(out)
}

impl Refresher {
    /// The account and its credentials (none stored reads as empty); `NoSuchAccount` if absent.
    pub async fn assisted_account(&self, key: &AccountKey) -> Result<AssistedAccount, VaultError> {
        let (vault, key) = (self.vault.clone(), key.clone());
        blocking(move || {
            let account = vault
                .get_account(&key)?
                .ok_or_else(|| VaultError::NoSuchAccount(key.clone()))?;
            let credentials = vault.credentials(&key)?.unwrap_or_default();
            Ok(AssistedAccount {
                account,
                credentials,
            })
        })
        .await
    }

    /// The broker's login page for `key`, bound to `state`, whose redirect leads to
    /// `redirect_url`.
    pub async fn assisted_url(
        &self,
        plugin: Arc<Plugin>,
        key: &AccountKey,
        account: &AssistedAccount,
        state: String,
        redirect_url: String,
    ) -> Result<String, AssistedError> {
        let broker_config = self.broker_config(&plugin.id);
        let request = wire::AssistedUrlRequest {
            v: wire::WIRE_VERSION,
            broker_user_id: account.account.broker_user_id.clone(),
            credentials: assisted_credentials(&account.credentials),
            state,
            redirect_url,
            base_urls: plugin.base_urls(&broker_config.urls),
            settings: plugin
                .settings(&broker_config.settings)
                .map_err(AssistedError::Configuration)?,
        };
        let limits = self.limits(&plugin);
        let ctx = self.plugin_call(
            &plugin,
            key.to_string(),
            &account.credentials,
            None,
            &limits,
        );
        let out = crate::plugins::run_blocking(plugin, ctx, move |p, c| {
            p.assisted_url_blocking(c, &request)
        })
        .await
        .map_err(AssistedError::Broker)?;
        Ok(out.url)
    }

    /// Finish an assisted login with the broker's callback `query`, as the account's one login
    /// in flight, and store its token like any other login's.
    pub async fn finish_assisted(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        key: &AccountKey,
        query: BTreeMap<String, String>,
    ) -> Result<AssistedLogin, AssistedError> {
        // With a broker that also delivers tokens by webhook, a delivery may be stored while
        // this callback waits for the account's turn; the token it had then tells.
        let generation = if plugin.manifest.token_webhook {
            self.token_generation(key).await
        } else {
            None
        };
        let (me, task_key) = (self.clone(), key.clone());
        let login = async move {
            let finished = if plugin.manifest.token_webhook
                && me.token_generation(&task_key).await != generation
            {
                // The first token wins: a second login would kill it at the broker.
                Err(AssistedError::Broker(PluginError::Failed(
                    wire::ErrorOutput::new(
                        wire::ErrorClass::Protocol,
                        "another login stored this account's token while this one waited; \
                     this one was not finished",
                    ),
                )))
            } else {
                me.finish_assisted_now(plugin, &task_key, query).await
            };
            let result = match &finished {
                Ok(_) => AccountResult::new(&task_key, Outcome::Success, 1),
                Err(AssistedError::Broker(e)) => {
                    let failure = LoginFailure::of(e);
                    AccountResult::failed(&task_key, failure.class.as_str(), failure.message, 1)
                }
                Err(e) => AccountResult::failed(&task_key, "internal", e.to_string(), 1),
            };
            (result, finished)
        };
        // Spawned, waiting included: a callback whose browser goes away has already used up the
        // state and the broker's single-use input, so the login must finish (and be logged) anyway.
        let (me, key) = (self.clone(), key.clone());
        tokio::spawn(async move { me.run_alone(&key, login).await })
            .await
            .ok()
            .flatten()
            .unwrap_or(Err(AssistedError::Store(VaultError::Aborted)))
    }

    /// The generation of the account's stored token, if any (`None` also when unreadable).
    async fn token_generation(&self, key: &AccountKey) -> Option<u64> {
        let (vault, k) = (self.vault.clone(), key.clone());
        blocking(move || vault.get_token(&k))
            .await
            .ok()
            .flatten()
            .map(|t| t.generation)
    }

    async fn finish_assisted_now(
        &self,
        plugin: Arc<Plugin>,
        key: &AccountKey,
        query: BTreeMap<String, String>,
    ) -> Result<AssistedLogin, AssistedError> {
        let started_ms = self.plugin_env.clock.now_ms();
        let AssistedAccount {
            account,
            credentials,
        } = self.assisted_account(key).await?;
        let broker_config = self.broker_config(&plugin.id);
        let request = wire::AssistedFinishRequest {
            v: wire::WIRE_VERSION,
            user_id: key.user.as_str().to_owned(),
            broker_user_id: account.broker_user_id.clone(),
            credentials: assisted_credentials(&credentials),
            query,
            delivery: None,
            redirect_url: self.config.server.callback_url(key.broker.as_str()),
            base_urls: plugin.base_urls(&broker_config.urls),
            settings: plugin
                .settings(&broker_config.settings)
                .map_err(AssistedError::Configuration)?,
        };
        let limits = self.limits(&plugin);
        // The slot first: the call's deadline starts when it is built, and a wait for a slot
        // must not eat the time the broker's single-use callback input has left.
        let slot = self.login_slot(&limits).await;
        let ctx = self.plugin_call(&plugin, key.to_string(), &credentials, None, &limits);
        let (result, duration) = self
            .timed_call(key, plugin, ctx, move |p, c| {
                p.assisted_finish_blocking(c, &request)
            })
            .await;
        drop(slot);
        let result = result.and_then(|out| same_broker_user(out, &account.broker_user_id));
        let record = attempt_record(started_ms, Trigger::Assisted, 1, duration);
        match self.finish_login(key, record, result).await {
            Finished::Stored { expires_at_ms } => {
                tracing::info!(account = %key, "assisted login finished; token stored");
                Ok(AssistedLogin {
                    broker_user_id: account.broker_user_id,
                    expires_at_ms,
                })
            }
            Finished::NotStored(e) => Err(e.into()),
            Finished::Failed(e) => Err(AssistedError::Broker(e)),
        }
    }
}
