//! The one path a login's result takes, whatever started the login (the scheduler, the API, the
//! CLI, the assisted callback): the token stored with the attention it resolves cleared and the
//! mirror woken, the attempt logged, the metrics counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use broker_api::wire::{self, ErrorClass};
use secrecy::SecretString;

use super::Refresher;
use crate::plugins::host::PluginCall;
use crate::plugins::{Plugin, PluginError, run_blocking};
use crate::vault::{
    AccountKey, Attempt, NewToken, Outcome, SecretJson, Trigger, VaultError, blocking,
};

/// What became of a login once its result was recorded.
pub(super) enum Finished {
    /// The token is stored.
    Stored {
        /// When it expires (Unix ms).
        expires_at_ms: i64,
    },
    /// The broker gave a token but it could not be stored.
    NotStored(VaultError),
    /// The login failed.
    Failed(PluginError),
}

/// The extras of `extras` that the strategy's manifest lets consumers have. A name containing
/// `refresh` is never among them (the manifest check refuses one; this holds if it did not).
fn served_extras(
    served: &[String],
    extras: &std::collections::BTreeMap<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    (served.iter())
        .filter(|name| !name.to_ascii_lowercase().contains("refresh"))
        .filter_map(|name| Some((name.clone(), extras.get(name)?.clone())))
        .collect()
}

/// A failed login, as the retry policy and the attempt log see it.
pub(super) struct LoginFailure {
    pub(super) class: ErrorClass,
    pub(super) message: String,
    pub(super) retry_after_ms: Option<u64>,
    pub(super) credentials_sent: bool,
}

impl LoginFailure {
    pub(super) fn of(error: &PluginError) -> LoginFailure {
        match error {
            PluginError::Failed(e) => LoginFailure {
                class: e.class,
                message: e.message.clone(),
                retry_after_ms: e.retry_after_ms,
                credentials_sent: e.credentials_sent,
            },
            // The plugin itself misbehaved: it is a strategy bug, never retried.
            other => LoginFailure {
                class: ErrorClass::Protocol,
                message: other.to_string(),
                retry_after_ms: None,
                credentials_sent: true,
            },
        }
    }
}

/// The log record of an attempt, taken as a success until [`Refresher::finish_login`] learns
/// otherwise.
pub(super) fn attempt_record(
    time_ms: i64,
    trigger: Trigger,
    attempt: u32,
    duration: Duration,
) -> Attempt {
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

impl Refresher {
    /// Run one strategy call on the blocking pool, counted in the attempt metrics.
    pub(super) async fn timed_call<T: Send + 'static>(
        &self,
        key: &AccountKey,
        plugin: Arc<Plugin>,
        ctx: PluginCall,
        f: impl FnOnce(&Plugin, &PluginCall) -> Result<T, PluginError> + Send + 'static,
    ) -> (Result<T, PluginError>, Duration) {
        let started = Instant::now();
        let result = run_blocking(plugin, ctx, f).await;
        let duration = started.elapsed();
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.attempt_ms
            .fetch_add(duration.as_millis() as u64, Ordering::Relaxed);
        metrics::histogram!("tokenbot_login_duration_seconds", "broker" => key.broker.as_str().to_owned())
            .record(duration.as_secs_f64());
        (result, duration)
    }

    /// Record what one login attempt produced, whoever started it: store the token (clearing
    /// the attention it resolves, waking the mirror), log the attempt, count it, and warn of a
    /// failure. What to do next is the caller's.
    pub(super) async fn finish_login(
        &self,
        key: &AccountKey,
        mut record: Attempt,
        result: Result<wire::LoginOutput, PluginError>,
    ) -> Finished {
        let error = match result {
            Ok(output) => {
                let expires_at_ms = output.expires_at_ms;
                let stored = self.store_token(key, record.trigger, output).await;
                if let Err(e) = &stored {
                    record.outcome = Outcome::Failed;
                    record.error_class = Some("internal".into());
                    record.message = Some(e.to_string());
                }
                self.log_attempt(key, record).await;
                return match stored {
                    Ok(()) => {
                        self.successes.fetch_add(1, Ordering::Relaxed);
                        count(key, "success", "");
                        Finished::Stored { expires_at_ms }
                    }
                    Err(e) => {
                        count(key, "failed", "internal");
                        Finished::NotStored(e)
                    }
                };
            }
            Err(error) => error,
        };
        let LoginFailure { class, message, .. } = LoginFailure::of(&error);
        let attempt = record.attempt;
        record.outcome = Outcome::Failed;
        record.error_class = Some(class.as_str().to_owned());
        record.message = Some(message.clone());
        self.log_attempt(key, record).await;
        count(key, "failed", class.as_str());
        tracing::warn!(
            account = %key, attempt, class = class.as_str(), error = %message, "login failed"
        );
        Finished::Failed(error)
    }

    async fn store_token(
        &self,
        key: &AccountKey,
        trigger: Trigger,
        output: wire::LoginOutput,
    ) -> Result<(), VaultError> {
        let plugin = self.plugins.get(key.broker.as_str());
        let (served, kept) = plugin.as_ref().map_or((Vec::new(), Vec::new()), |p| {
            (
                p.manifest.served_extras.clone(),
                p.manifest.kept_extras.clone(),
            )
        });
        let access_token = SecretString::from(output.access_token.expose().to_owned());
        let (issued_at_ms, expires_at_ms) = (output.issued_at_ms, output.expires_at_ms);
        let mut extras = output.extras;
        let (vault, k) = (self.vault.clone(), key.clone());
        blocking(move || {
            // Single flight: no other login of this account stores a token between this read
            // and the write below.
            if !kept.is_empty()
                && let Some(previous) = vault.get_token(&k)?
            {
                keep_extras(&mut extras, &previous.extras.expose_value(), &kept);
            }
            let token = NewToken {
                access_token,
                issued_at_ms,
                expires_at_ms,
                served_extras: SecretJson::from_value(&serde_json::Value::Object(served_extras(
                    &served, &extras,
                ))),
                extras: SecretJson::from_value(&serde_json::Value::Object(
                    extras.into_iter().collect::<serde_json::Map<_, _>>(),
                )),
            };
            vault.put_token(&k, &token)?;
            super::attention::clear_resolved(&vault, &k, trigger)
        })
        .await?;
        // Any token ends a pending approval (the vault cleared it with the token): no reminder.
        self.notifier.approval_resolved(key);
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
}

/// Copy into `extras` each of `kept` that it lacks and `previous` (the stored token's extras)
/// holds: an extra the broker mints rarely outlives the daily token it came with.
fn keep_extras(
    extras: &mut std::collections::BTreeMap<String, serde_json::Value>,
    previous: &serde_json::Value,
    kept: &[String],
) {
    for name in kept {
        if !extras.contains_key(name)
            && let Some(value) = previous.get(name)
        {
            extras.insert(name.clone(), value.clone());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_extras_are_served_and_never_a_refresh_token() {
        let extras = [
            ("feed_token", "ft"),
            ("refresh_token", "rt"),
            ("client_name", "n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect();
        let served = ["feed_token", "refresh_token", "absent"].map(String::from);
        let map = served_extras(&served, &extras);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["feed_token"]);
    }
}
