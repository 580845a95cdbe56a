//! What a refresh reports: one result per account, and the counts the IIFL job's API returned.

use serde::{Deserialize, Serialize};

use crate::vault::{AccountKey, BrokerId, Outcome, Trigger};

/// The outcome of one account's refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountResult {
    /// Platform user id.
    pub user_id: String,
    /// Broker id.
    pub broker: String,
    /// `success`, `failed` or `skipped`.
    pub outcome: Outcome,
    /// Error class of the last attempt, when failed (or why skipped: e.g. `needs_attention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Human text; never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Login attempts made.
    pub attempts: u32,
    /// When a login may be asked for again, for a `rate_limited` answer given without contacting
    /// the broker (its minimum login interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Box<str>>,
}

impl AccountResult {
    pub(super) fn new(key: &AccountKey, outcome: Outcome, attempts: u32) -> AccountResult {
        AccountResult {
            user_id: key.user.as_str().to_owned(),
            broker: key.broker.as_str().to_owned(),
            outcome,
            error_class: None,
            message: None,
            attempts,
            retry_at: None,
        }
    }

    pub(super) fn skipped(
        key: &AccountKey,
        class: &str,
        message: impl Into<String>,
    ) -> AccountResult {
        AccountResult {
            error_class: Some(class.to_owned()),
            message: Some(message.into()),
            ..AccountResult::new(key, Outcome::Skipped, 0)
        }
    }

    pub(super) fn failed(
        key: &AccountKey,
        class: &str,
        message: impl Into<String>,
        attempts: u32,
    ) -> AccountResult {
        AccountResult {
            error_class: Some(class.to_owned()),
            message: Some(message.into()),
            ..AccountResult::new(key, Outcome::Failed, attempts)
        }
    }
}

/// The summary of a refresh: the IIFL job's `successful / failed / skipped / total`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshSummary {
    /// Accounts that got a new token.
    pub successful: usize,
    /// Accounts whose login failed.
    pub failed: usize,
    /// Accounts not attempted (paused, managed externally, needing attention).
    pub skipped: usize,
    /// All accounts covered.
    pub total: usize,
    /// One entry per account, in a stable order (user, then broker).
    pub results: Vec<AccountResult>,
}

impl RefreshSummary {
    /// Count the outcomes of `results`.
    pub fn from_results(results: Vec<AccountResult>) -> RefreshSummary {
        let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
        RefreshSummary {
            successful: count(Outcome::Success),
            failed: count(Outcome::Failed),
            skipped: count(Outcome::Skipped),
            total: results.len(),
            results,
        }
    }
}

/// How far a refresh has got, updated as each account finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Accounts finished so far (any outcome).
    pub done: usize,
    /// Accounts the refresh covers.
    pub total: usize,
    /// Finished with a new token.
    pub successful: usize,
    /// Finished with a failed login.
    pub failed: usize,
    /// Not attempted.
    pub skipped: usize,
}

impl Progress {
    pub(super) fn add(&mut self, result: &AccountResult) {
        self.done += 1;
        match result.outcome {
            Outcome::Success => self.successful += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::PendingApproval => {}
        }
    }
}

/// A finished refresh of every account, or of every account at one broker: what the console's
/// overview shows as the last refresh-all.
#[derive(Debug, Clone)]
pub struct LastRun {
    /// The broker it covered; `None` for every broker.
    pub broker: Option<BrokerId>,
    /// What started it (the schedule, the API, the console, the CLI).
    pub trigger: Trigger,
    /// When it started and finished (Unix ms, the refresher's clock).
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Its counts.
    pub progress: Progress,
}
