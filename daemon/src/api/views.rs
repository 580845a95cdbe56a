//! Response bodies shared by several routes, and by the CLI, which prints the API's JSON so that
//! scripts see one shape either way; and the rule of which token a token read answers. Times are
//! RFC 3339 UTC with milliseconds (`2025-03-10T02:30:05.000Z`, as JavaScript's `Date.toJSON`
//! writes them). None holds a secret except [`TokenView`], the one body that carries an access
//! token.

use std::sync::Arc;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use crate::vault::blocking;
use crate::vault::{
    Account, AccountKey, AccountState, BrokerId, LoggedAttempt, Token, UserId, VaultError,
};

pub use crate::clock::iso;

/// Whether `token` still works at `now_ms`.
pub fn is_valid_at(token: &Token, now_ms: i64) -> bool {
    token.expires_at_ms > now_ms
}

/// What a token read of one user finds (see [`valid_token`]).
#[derive(Debug)]
pub enum ValidToken<'a> {
    /// No account (at the named broker) holds a token valid now.
    None,
    /// The one account holding a token valid now, and that token.
    One(&'a Account, &'a Token),
    /// Accounts at these brokers hold tokens valid now, and no broker was named: the reader must
    /// say which.
    Several(Vec<&'a BrokerId>),
}

/// The rule of `GET /api/tokens/{userId}` and `tokenbot token get`: among a user's accounts with
/// their tokens (at `broker` only, when named), the one whose token is valid at `now_ms`.
pub fn valid_token<'a>(
    accounts: &'a [(Account, Option<Token>)],
    broker: Option<&BrokerId>,
    now_ms: i64,
) -> ValidToken<'a> {
    let mut valid: Vec<(&Account, &Token)> = accounts
        .iter()
        .filter(|(a, _)| broker.is_none_or(|b| &a.broker == b))
        .filter_map(|(a, t)| {
            t.as_ref()
                .filter(|t| is_valid_at(t, now_ms))
                .map(|t| (a, t))
        })
        .collect();
    match valid.len() {
        0 => ValidToken::None,
        1 => {
            let (account, token) = valid.remove(0);
            ValidToken::One(account, token)
        }
        _ => ValidToken::Several(valid.iter().map(|(a, _)| &a.broker).collect()),
    }
}

// Also what `tokenbot token get` prints. Its doc comment is its description in `/openapi.json`,
// kept word for word: the cache it names is `api::tokens::BodyCache`.
/// A token handed to the trading backend. The only body that carries a secret. Borrows from the
/// vault's record: serialised once into the [`BodyCache`], with no copy of the strings.
#[derive(Serialize, ToSchema)]
#[schema(as = TokenOut)]
pub struct TokenView<'a> {
    /// The platform's user id.
    pub user_id: &'a str,
    /// Broker id.
    pub broker: &'a str,
    /// The user's id at the broker.
    pub broker_user_id: &'a str,
    /// The broker's access token.
    pub access_token: &'a str,
    /// When it was issued.
    pub issued_at: String,
    /// When it stops working.
    pub expires_at: String,
    /// What else the broker issued that consumers need, by name (Angel One's `feed_token`, Kotak
    /// Neo's `sid`, ...): only the extras the broker's strategy declares as served; absent when
    /// there are none. Refresh tokens are never served.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Option<Object>)]
    pub extras: serde_json::Map<String, serde_json::Value>,
}

impl<'a> TokenView<'a> {
    /// The view of `account`'s `token`.
    pub fn new(account: &'a Account, token: &'a Token) -> TokenView<'a> {
        let extras = match token.served_extras.expose_value() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        TokenView {
            extras,
            user_id: account.user.as_str(),
            broker: account.broker.as_str(),
            broker_user_id: &account.broker_user_id,
            access_token: token.access_token.expose_secret(),
            issued_at: iso(token.issued_at_ms),
            expires_at: iso(token.expires_at_ms),
        }
    }
}

/// Why an account waits for an operator.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AttentionOut)]
pub struct AttentionView {
    /// Login error class, e.g. `invalid_credentials`.
    pub class: String,
    /// What the broker said (never a secret).
    pub message: String,
    /// Since when.
    pub since: String,
}

/// An account without its secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// The platform's user id.
    pub user_id: String,
    /// Broker id, e.g. `kite`.
    pub broker: String,
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// Logged in on the broker's schedule.
    pub auto_refresh: bool,
    /// Logged in by another system; never logged in here.
    pub managed_externally: bool,
    /// `active`, `paused`, `managed_externally`, `needs_attention`, or `awaiting_approval` (an
    /// active account whose broker waits for a person to approve a token request).
    pub state: String,
    /// Set in state `awaiting_approval`: until when the person may approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<String>,
    /// Set in state `needs_attention`.
    pub attention: Option<AttentionView>,
    /// Whether a token valid now is stored.
    pub has_token: bool,
    /// When the stored token was issued (the last successful login), if one is stored.
    pub last_login_at: Option<String>,
    /// When the stored token expires (or expired), if one is stored.
    pub token_expires_at: Option<String>,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

impl AccountView {
    /// The view of `account` with its (optional) token, at `now_ms`.
    pub fn new(account: &Account, token: Option<&Token>, now_ms: i64) -> AccountView {
        // An expired request is over, whether or not a login has recorded it yet.
        let pending_until = (account.pending_approval)
            .map(|p| p.until_ms)
            .filter(|until| now_ms < *until);
        AccountView {
            user_id: account.user.as_str().to_owned(),
            broker: account.broker.as_str().to_owned(),
            broker_user_id: account.broker_user_id.clone(),
            auto_refresh: account.auto_refresh,
            managed_externally: account.managed_externally,
            state: match (account.state(), pending_until) {
                (AccountState::Active, Some(_)) => "awaiting_approval".to_owned(),
                (state, _) => state.as_str().to_owned(),
            },
            pending_until: pending_until.map(iso),
            attention: account.attention.as_ref().map(|a| AttentionView {
                class: a.class.clone(),
                message: a.message.clone(),
                since: iso(a.since_ms),
            }),
            has_token: token.is_some_and(|t| is_valid_at(t, now_ms)),
            last_login_at: token.map(|t| iso(t.issued_at_ms)),
            token_expires_at: token.map(|t| iso(t.expires_at_ms)),
            created_at: iso(account.created_at_ms),
            updated_at: iso(account.updated_at_ms),
        }
    }
}

/// The views of `user`'s accounts (every user's when `None`), optionally at one broker only.
pub async fn account_views(
    api: &Arc<ApiState>,
    user: Option<UserId>,
    broker: Option<BrokerId>,
) -> Result<Vec<AccountView>, ApiError> {
    let vault = api.app.vault.clone();
    let now = api.now_ms();
    let rows = blocking(move || {
        let rows: Vec<(Account, Option<Token>)> = match &user {
            Some(user) => vault.user_tokens(user)?.as_ref().clone(),
            None => {
                let mut rows = Vec::new();
                for account in vault.list_accounts()? {
                    let token = vault.get_token(&account.key())?;
                    rows.push((account, token));
                }
                rows
            }
        };
        Ok::<_, VaultError>(
            rows.into_iter()
                .filter(|(a, _)| broker.as_ref().is_none_or(|b| &a.broker == b))
                .collect::<Vec<_>>(),
        )
    })
    .await?;
    Ok(rows
        .iter()
        .map(|(a, t)| AccountView::new(a, t.as_ref(), now))
        .collect())
}

/// The view of one account, or 404.
pub async fn account_view(api: &Arc<ApiState>, key: AccountKey) -> Result<AccountView, ApiError> {
    let vault = api.app.vault.clone();
    let now = api.now_ms();
    let (account, token) = blocking(move || {
        let account = vault
            .get_account(&key)?
            .ok_or_else(|| VaultError::NoSuchAccount(key.clone()))?;
        let token = vault.get_token(&key)?;
        Ok((account, token))
    })
    .await?;
    Ok(AccountView::new(&account, token.as_ref(), now))
}

// Also what `tokenbot logs` prints for each attempt. The doc comments of views are their
// descriptions in `/openapi.json`.
/// One login attempt as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AttemptOut)]
pub struct AttemptView {
    /// Broker id.
    pub broker: String,
    /// When it started.
    pub time: String,
    /// `schedule`, `catch-up`, `manual`, `api` or `assisted`.
    pub trigger: String,
    /// 1 for a refresh's first try, 2 for its first retry, ...
    pub attempt: u32,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `success`, `failed` or `skipped`.
    pub outcome: String,
    /// Login error class when it failed.
    pub error_class: Option<String>,
    /// What happened (never a secret).
    pub message: Option<String>,
}

impl From<&LoggedAttempt> for AttemptView {
    fn from(a: &LoggedAttempt) -> AttemptView {
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        AttemptView {
            broker: a.account.broker.as_str().to_owned(),
            time: iso(a.attempt.time_ms),
            trigger: name(serde_json::to_value(a.attempt.trigger).unwrap_or_default()),
            attempt: a.attempt.attempt,
            duration_ms: a.attempt.duration_ms,
            outcome: name(serde_json::to_value(a.attempt.outcome).unwrap_or_default()),
            error_class: a.attempt.error_class.clone(),
            message: a.attempt.message.clone(),
        }
    }
}

/// A user's recent attempts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LogsOut)]
pub struct AttemptLogView {
    /// The user.
    pub user_id: String,
    /// Newest first (the same shape as `tokenbot logs` prints).
    pub attempts: Vec<AttemptView>,
}

/// A removed account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeletedOut)]
pub struct DeletedView {
    /// The user.
    pub user_id: String,
    /// The broker.
    pub broker: String,
    /// Always true.
    pub deleted: bool,
}

/// The summary of a refresh (the schema of `refresh::RefreshSummary`, which is what is sent).
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = RefreshSummary)]
pub struct RefreshSummaryDoc {
    /// Accounts that got a new token.
    pub successful: usize,
    /// Accounts whose login failed.
    pub failed: usize,
    /// Accounts not attempted (paused, managed externally, needing attention).
    pub skipped: usize,
    /// All accounts covered.
    pub total: usize,
    /// One entry per account, by user then broker.
    pub results: Vec<AccountResultDoc>,
}

/// The outcome of one account's refresh.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = AccountResult)]
pub struct AccountResultDoc {
    /// The platform's user id.
    pub user_id: String,
    /// Broker id.
    pub broker: String,
    /// `success`, `failed` or `skipped`.
    #[schema(pattern = "^(success|failed|skipped)$")]
    pub outcome: String,
    /// Error class of the last attempt when failed, or why skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// What happened (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Login attempts made.
    pub attempts: u32,
}
