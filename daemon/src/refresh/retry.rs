//! The retry policy: after a failed attempt, try again (after a backoff), stop with the failure,
//! or stop and ask a person to look (`attention`).

use std::ops::ControlFlow;
use std::time::Duration;

use broker_api::wire;

use super::outcome::{Finished, LoginFailure};
use super::{AccountResult, Refresher};
use crate::plugins::PluginError;
use crate::vault::{AccountKey, Attempt, Outcome};

impl Refresher {
    /// Record one attempt's outcome ([`Refresher::finish_login`]) and decide: done with a
    /// result, or (after the backoff) try again.
    pub(super) async fn settle(
        &self,
        key: &AccountKey,
        record: Attempt,
        result: Result<wire::LoginOutput, PluginError>,
        may_retry: bool,
    ) -> ControlFlow<AccountResult> {
        let attempt = record.attempt;
        // Not a failure: the broker waits for a person (`approval`).
        if let Err(PluginError::Failed(e)) = &result
            && e.class == wire::ErrorClass::PendingApproval
        {
            return ControlFlow::Break(self.await_approval(key, record, e).await);
        }
        let error = match self.finish_login(key, record, result).await {
            Finished::Stored { .. } => {
                return ControlFlow::Break(AccountResult::new(key, Outcome::Success, attempt));
            }
            Finished::NotStored(e) => {
                let result = AccountResult::failed(key, "internal", e.to_string(), attempt);
                return ControlFlow::Break(result);
            }
            Finished::Failed(error) => error,
        };
        let LoginFailure {
            class,
            message,
            retry_after_ms,
            credentials_sent,
        } = LoginFailure::of(&error);
        // A password is sent at most once per refresh: once a login may have sent it, only the
        // strategy's own retries of later steps remain, never a new login.
        if may_retry
            && !credentials_sent
            && class.is_retryable()
            && attempt < self.config.refresh.max_attempts
        {
            (self.sleep)(self.backoff(attempt, retry_after_ms)).await;
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

    /// The wait before attempt `attempt + 1`: exponential from `backoff_initial_ms` up to
    /// `backoff_max_ms`, with jitter, and never shorter than the broker asked.
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
}
