//! Tokens: the service read (`X-API-Key`, audited), a user's refresh and status (JWT), and the
//! attempt log (key or the user's own JWT).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::ApiState;
use super::accounts::{refresh_selection, unknown_broker_in_body};
use super::auth::{Caller, ServiceKey, UserJwt};
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, OptionalJson};
use super::params::{BrokerQuery, broker_id, user_id};
use super::views::{
    AttemptLogView, AttemptView, RefreshSummaryDoc, TokenView, ValidToken, is_valid_at, iso,
    valid_token,
};
use crate::refresh::{RefreshSummary, Selection};
use crate::vault::blocking;
use crate::vault::{AccountKey, AttemptScope, AuditRead, BrokerId, Trigger, UserId, UserTokens};

/// `GET /api/tokens/{userId}?broker=`
#[utoipa::path(
    get,
    path = "/api/tokens/{userId}",
    tag = "tokens",
    params(("userId" = String, Path, description = "The platform's user id"), BrokerQuery),
    responses(
        (status = 200, description = "A token valid now; the read is in the audit log under the key's name", body = TokenView),
        (status = 400, description = "Invalid id, or several valid tokens and no `broker`", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "No valid (unexpired) token", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn read(
    State(api): State<Arc<ApiState>>,
    ServiceKey(key_name): ServiceKey,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Response, ApiError> {
    let user = user_id(user)?;
    let broker = broker_id(q.broker)?;
    let now = api.now_ms();
    // The hot path of the trading backend, run inline: usually the vault's cached record and the
    // body already made from it, at worst two short vault reads (an account prefix scan and one
    // token). A hop to the blocking pool costs two thread wake-ups per request, more than such
    // reads; the audit write, which fsyncs, goes to its own thread. A miss on a PostgreSQL
    // vault is a network round trip (up to a call's timeout), so it goes to the blocking pool.
    let key = (user, broker);
    let vault = &api.app.vault;
    let record = match vault.cached_user_tokens_now(&key.0) {
        Some(record) => record,
        None if vault.engine() == crate::vault::Engine::Postgres => {
            let (vault, user) = (vault.clone(), key.0.clone());
            crate::vault::blocking(move || vault.user_tokens(&user)).await?
        }
        None => vault.user_tokens(&key.0)?,
    };
    let (body, account) = match api.bodies.made_from(&key, &record, now) {
        Some(hit) => hit,
        None => {
            let made = answer(&key.0, key.1.as_ref(), &record, now)?;
            let hit = made.hit();
            api.bodies.put(key, made);
            hit
        }
    };
    api.audit
        .record(AuditRead {
            time_ms: now,
            api_key_name: key_name,
            account,
        })
        .await?;
    // The header map is made once with room for what `layers::finish` adds: growing it there
    // showed in the token-read profile (docs/performance.md).
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.reserve(1 + super::layers::ADDED_HEADERS);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The answer to a token read from the user's record: the one valid token (at `broker`, when
/// named) as a body, or why there is none.
fn answer(
    user: &UserId,
    broker: Option<&BrokerId>,
    record: &Arc<UserTokens>,
    now: i64,
) -> Result<CachedBody, ApiError> {
    match valid_token(record, broker, now) {
        ValidToken::None => Err(ApiError::not_found(
            "no_valid_token",
            format!("no valid token for user {user}"),
        )),
        ValidToken::One(account, token) => {
            let mut body = Zeroizing::new(Vec::with_capacity(512));
            serde_json::to_writer(&mut *body, &TokenView::new(account, token))
                .map_err(|e| ApiError::internal(format!("token body not serialised: {e}")))?;
            Ok(CachedBody {
                record: Arc::downgrade(record),
                until_ms: token.expires_at_ms,
                account: Arc::new(account.key()),
                // Zeroised when the last response holding it is gone.
                body: Bytes::from_owner(body),
            })
        }
        ValidToken::Several(brokers) => Err(ApiError::bad_request(
            "broker_required",
            format!(
                "user {user} has valid tokens at several brokers ({}); say which with ?broker=",
                brokers
                    .iter()
                    .map(|b| b.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Token read bodies by user and `?broker=`, so that repeated reads skip the serialisation (most
/// of the handler's own work, docs/performance.md). An entry is served only while the vault
/// hands out the very record it was made from (the vault makes a new one after every write) and
/// its token has not expired, so it never answers what a fresh read would not. Bodies hold access tokens: zeroised when the entry
/// and the last response sharing it are gone; never logged. Bounded like the vault's cache.
#[derive(Default)]
pub struct BodyCache {
    entries: RwLock<HashMap<BodyKey, CachedBody>>,
}

/// A user, and the broker a read named.
type BodyKey = (UserId, Option<BrokerId>);

/// One cached answer.
struct CachedBody {
    /// The vault record it was made from. Weak: the record's tokens go when the vault drops it,
    /// and the allocation (so its address) stays while this is held, so an address match is
    /// that record.
    record: Weak<UserTokens>,
    /// When its token expires: from then on the answer is another.
    until_ms: i64,
    /// The account it names, for the audit entry.
    account: Arc<AccountKey>,
    body: Bytes,
}

impl CachedBody {
    fn hit(&self) -> (Bytes, Arc<AccountKey>) {
        (self.body.clone(), self.account.clone())
    }
}

/// Entries at most; the cache starts over past this (as the vault's does).
const BODY_CACHE_MAX: usize = 100_000;

impl BodyCache {
    fn read(&self) -> parking_lot::RwLockReadGuard<'_, HashMap<BodyKey, CachedBody>> {
        self.entries.read()
    }

    /// The body for `key` if it was made from `record` (the vault's current one) and is valid
    /// at `now`.
    fn made_from(
        &self,
        key: &BodyKey,
        record: &Arc<UserTokens>,
        now: i64,
    ) -> Option<(Bytes, Arc<AccountKey>)> {
        let entries = self.read();
        let cached = entries.get(key)?;
        (std::ptr::eq(cached.record.as_ptr(), Arc::as_ptr(record)) && now < cached.until_ms)
            .then(|| cached.hit())
    }

    fn put(&self, key: BodyKey, body: CachedBody) {
        let mut entries = self.entries.write();
        if entries.len() >= BODY_CACHE_MAX && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, body);
    }
}

impl std::fmt::Debug for BodyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCache")
            .field("entries", &self.read().len())
            .finish()
    }
}

/// `{"broker"?}`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// Only this broker's account (default: all of the caller's accounts).
    pub broker: Option<String>,
}

/// `POST /api/tokens/refresh`
#[utoipa::path(
    post,
    path = "/api/tokens/refresh",
    tag = "tokens",
    request_body(content = Option<RefreshBody>, description = "Optional; an empty body refreshes every account of the caller"),
    responses(
        (status = 200, description = "The outcome per account", body = RefreshSummaryDoc),
        (status = 400, description = "Malformed JSON or an invalid broker id", body = ErrorBody),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No account (at that broker)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, or an unknown broker", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn refresh_mine(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
    OptionalJson(body): OptionalJson<RefreshBody>,
) -> Result<Json<RefreshSummary>, ApiError> {
    let broker = broker_id(body.broker)?;
    let named = broker.clone();
    refresh_selection(
        &api,
        Selection {
            user: Some(user),
            broker,
        },
        Trigger::Api,
    )
    .await
    .map_err(|e| match &named {
        Some(b) => unknown_broker_in_body(&api, b.as_str(), e),
        None => e,
    })
    .map(Json)
}

/// The state of one of the caller's tokens; never the token itself.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenStatusOut)]
pub struct TokenStatusView {
    /// Broker id.
    pub broker: String,
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// Account state.
    pub state: String,
    /// Whether a token valid now is stored.
    pub valid: bool,
    /// When the stored token was issued.
    pub issued_at: Option<String>,
    /// When it expires (or expired).
    pub expires_at: Option<String>,
    /// The latest login attempt.
    pub last_attempt: Option<AttemptView>,
}

/// The caller's tokens.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokensStatusOut)]
pub struct TokensStatusView {
    /// The user (from the token).
    pub user_id: String,
    /// One entry per broker account.
    pub tokens: Vec<TokenStatusView>,
}

/// `GET /api/tokens/status`
#[utoipa::path(
    get,
    path = "/api/tokens/status",
    tag = "tokens",
    responses(
        (status = 200, description = "The caller's tokens (validity, times, last attempt); never a token", body = TokensStatusView),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn status(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
) -> Result<Json<TokensStatusView>, ApiError> {
    let vault = api.app.vault.clone();
    let now = api.now_ms();
    let u = user.clone();
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for (account, token) in vault.user_tokens(&u)?.iter() {
            let last = vault.attempts(&account.key(), 1)?.into_iter().next();
            rows.push((account.clone(), token.clone(), last));
        }
        Ok(rows)
    })
    .await?;
    let tokens = rows
        .iter()
        .map(|(a, t, last)| TokenStatusView {
            broker: a.broker.as_str().to_owned(),
            broker_user_id: a.broker_user_id.clone(),
            state: a.state().as_str().to_owned(),
            valid: t.as_ref().is_some_and(|t| is_valid_at(t, now)),
            issued_at: t.as_ref().map(|t| iso(t.issued_at_ms)),
            expires_at: t.as_ref().map(|t| iso(t.expires_at_ms)),
            last_attempt: last.as_ref().map(AttemptView::from),
        })
        .collect();
    Ok(Json(TokensStatusView {
        user_id: user.as_str().to_owned(),
        tokens,
    }))
}

/// `?broker=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this broker's attempts.
    pub broker: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

/// `GET /api/tokens/logs/{userId}`
#[utoipa::path(
    get,
    path = "/api/tokens/logs/{userId}",
    tag = "tokens",
    params(("userId" = String, Path, description = "The platform's user id"), LogsQuery),
    responses(
        (status = 200, description = "Recent login attempts, newest first", body = AttemptLogView),
        (status = 400, description = "Invalid user id, `broker` or `limit`", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "A user's token for another user", body = ErrorBody),
        (status = 404, description = "The user has no account (at that broker)", body = ErrorBody),
    ),
    security(("api_key" = []), ("jwt" = []))
)]
pub async fn logs(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<AttemptLogView>, ApiError> {
    let user = user_id(user)?;
    caller.may_act_for(&user)?;
    let broker: Option<BrokerId> = broker_id(q.broker)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let vault = api.app.vault.clone();
    let u = user.clone();
    let attempts = blocking(move || {
        let exists = match &broker {
            Some(b) => vault
                .get_account(&AccountKey::new(u.clone(), b.clone()))?
                .is_some(),
            None => !vault.user_accounts(&u)?.is_empty(),
        };
        if !exists {
            return Ok(None);
        }
        let attempts = match broker {
            Some(b) => vault.attempts(AttemptScope::Account(&AccountKey::new(u, b)), limit)?,
            None => vault.attempts(AttemptScope::User(&u), limit)?,
        };
        Ok(Some(attempts))
    })
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            "no_account",
            format!("user {user} has no such broker account"),
        )
    })?;
    Ok(Json(AttemptLogView {
        user_id: user.as_str().to_owned(),
        attempts: attempts.iter().map(AttemptView::from).collect(),
    }))
}
