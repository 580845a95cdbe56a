//! Accounts, users and valid tokens, counted for `/health/detailed` and `/metrics`, at most once
//! a second.

use super::ApiState;
use super::error::ApiError;
use crate::vault::blocking;

/// Token figures at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenCounts {
    /// Accounts.
    pub accounts: usize,
    /// Distinct users.
    pub users: usize,
    /// Tokens valid now.
    pub valid: usize,
    /// Tokens valid now that expire within the hour.
    pub expiring_within_hour: usize,
}

/// How long counted figures are served before they are counted again.
const COUNTS_FRESH_MS: i64 = 1_000;

/// The last [`TokenCounts`] and when they were counted (the daemon's clock, Unix ms).
#[derive(Debug, Default)]
pub struct CountsCache(tokio::sync::Mutex<Option<(i64, TokenCounts)>>);

/// Accounts, users and tokens, counted at most once a second: counting decrypts every token (a
/// few ms for 10,000 accounts), and `/health/detailed` and `/metrics` may be asked for as often
/// as anyone likes. Callers meanwhile wait for the one count in progress and share it.
pub async fn token_counts(api: &ApiState) -> Result<TokenCounts, ApiError> {
    let mut cached = api.counts.0.lock().await;
    let now = api.now_ms();
    if let Some((at, counts)) = *cached
        && (at..at + COUNTS_FRESH_MS).contains(&now)
    {
        return Ok(counts);
    }
    let counts = match count_tokens(api, now).await {
        Ok(counts) => counts,
        // Cut off from the vault's database: the figures last counted (none: zeros), which the
        // daemon's `degraded` flag qualifies, rather than no health figures when they matter.
        Err(_) if api.app.vault.is_degraded() => {
            return Ok(cached.map(|(_, c)| c).unwrap_or_default());
        }
        Err(e) => return Err(e),
    };
    *cached = Some((now, counts));
    Ok(counts)
}

/// The mirror's backlog (the outbox's length); while cut off from the vault's database, the
/// length its delivery task last read.
pub async fn backlog(api: &ApiState) -> Result<u64, ApiError> {
    let vault = api.app.vault.clone();
    match blocking(move || vault.outbox_len()).await {
        Ok(n) => Ok(n),
        Err(_) if api.app.vault.is_degraded() => {
            Ok(api.app.mirror.as_ref().map_or(0, |m| m.status().backlog))
        }
        Err(e) => Err(e.into()),
    }
}

/// Count accounts, users and tokens valid at `now`.
async fn count_tokens(api: &ApiState, now: i64) -> Result<TokenCounts, ApiError> {
    let vault = api.app.vault.clone();
    Ok(blocking(move || {
        let accounts = vault.list_accounts()?;
        let mut counts = TokenCounts {
            accounts: accounts.len(),
            ..TokenCounts::default()
        };
        let mut last_user = None;
        for account in &accounts {
            if last_user != Some(&account.user) {
                counts.users += 1;
                last_user = Some(&account.user);
            }
            if let Some(token) = vault.get_token(&account.key())?
                && super::views::is_valid_at(&token, now)
            {
                counts.valid += 1;
                if token.expires_at_ms <= now + 3_600_000 {
                    counts.expiring_within_hour += 1;
                }
            }
        }
        Ok(counts)
    })
    .await?)
}
