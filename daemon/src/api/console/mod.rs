//! The operator console: server-rendered HTML at `/console` (no JavaScript), for people.
//!
//! - Sign-in: `GET /console` without a session answers the sign-in form; `POST /console/sign-in`
//!   takes a service API key (the keys `auth` accepts for service routes). A wrong key counts in
//!   the failed-authentication limit as every other failure does. A good one makes a session
//!   (`session`) and sets `tokenbot_console=<id>; HttpOnly; SameSite=Strict; Path=/console`, plus
//!   `Secure` when `server.public_url` is https.
//! - Pages need the session (a `GET` without one is sent to the sign-in form); every `POST`
//!   needs the session and its CSRF token (hidden field `csrf`), or is refused 403 having
//!   changed nothing. Pages are `Cache-Control: no-store` and carry the API's security headers
//!   (`layers`) plus a Content-Security-Policy.
//! - What the pages show comes from the API's own views and operations: the `/health/detailed`
//!   figures (`status`), the account views (`views`), and the account operations (`accounts`)
//!   that `PATCH`/`DELETE /api/users/{userId}/accounts/{broker}` and the refresh routes use, so
//!   the same rules hold. No page shows a token or a credential: token expiry only.

mod pages;
mod session;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER,
    SET_COOKIE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::accounts::{delete_account, refresh_selection, set_flags, start_assisted};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::status;
use super::views::{AccountView, AttemptView, account_view, account_views};
use crate::refresh::Selection;
use crate::vault::{AccountKey, AttemptScope, BrokerId, Flags, Outcome, Trigger, UserId, blocking};
use pages::{Layout, STATES, ist, ist_or_dash, segment, state_label};
pub use session::Sessions;
use session::{COOKIE, Flash, Signed};

/// Attempts the account page lists.
const RECENT_ATTEMPTS: usize = 20;
/// Only this origin's styles, no scripts, no frames, no plugins.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An HTML answer: `no-store`, CSP.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

/// Render a template, or a plain 500 (logged) when it cannot be.
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "console: a page failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>error</title><p>The page failed to render (see the daemon's log).</p>".into(),
            )
        }
    }
}

/// 303 to `to` (after a form, the browser fetches it with `GET`).
fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn layout(title: &str, signed: Option<&Signed>, flash: Option<Flash>) -> Layout {
    Layout {
        title: title.to_owned(),
        csrf: signed.map(|s| s.csrf.clone()).unwrap_or_default(),
        flash,
    }
}

/// A page saying what went wrong.
fn message(status: StatusCode, signed: Option<&Signed>, heading: &str, text: &str) -> Response {
    render(
        status,
        &pages::Message {
            layout: layout(heading, signed, None),
            heading: heading.to_owned(),
            text: text.to_owned(),
            back: "/console".to_owned(),
        },
    )
}

/// An API error as a page (its status and message; never a secret).
fn error_page(signed: &Signed, e: &ApiError) -> Response {
    let heading = if e.status().is_server_error() {
        "Something failed"
    } else {
        "Refused"
    };
    message(e.status(), Some(signed), heading, e.message())
}

fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    render(
        status,
        &pages::SignIn {
            layout: layout("Sign in", None, None),
            error: error.map(str::to_owned),
        },
    )
}

/// The request's live session.
fn signed_in(api: &ApiState, headers: &HeaderMap) -> Option<Signed> {
    let id = session::cookie_value(headers)?;
    api.console.find(id, api.now_ms())
}

/// The form fields every state-changing form has.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// The session of a `POST` whose CSRF token is right, or the 403 page (nothing changed).
#[allow(clippy::result_large_err)]
fn authorised_post(
    api: &ApiState,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<Signed, Response> {
    let Some(signed) = signed_in(api, headers) else {
        return Err(message(
            StatusCode::FORBIDDEN,
            None,
            "Signed out",
            "Your console session has ended. Sign in again; nothing was changed.",
        ));
    };
    if !api.console.csrf_ok(&signed, csrf) {
        tracing::warn!(key = %signed.key, "console: a form without its CSRF token; refused");
        return Err(message(
            StatusCode::FORBIDDEN,
            Some(&signed),
            "Refused",
            "This form did not come from this console session (its CSRF token is missing or \
             wrong). Nothing was changed; reload the page and try again.",
        ));
    }
    Ok(signed)
}

/// The client's address, as the failed-authentication limit counts it.
pub struct Client(IpAddr);

impl FromRequestParts<Arc<ApiState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(api.auth.client_ip(parts)))
    }
}

/// `GET /console/console.css`
pub async fn stylesheet() -> Response {
    let mut response = include_str!("console.css").into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
}

/// `POST /console/sign-in`
pub async fn sign_in(
    State(api): State<Arc<ApiState>>,
    Client(client): Client,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    // The one form without a session, hence without a CSRF token: a browser that says the form
    // came from another site (`Sec-Fetch-Site`) is refused, so no page elsewhere signs a
    // browser into a session of its own choosing.
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"))
    {
        return message(
            StatusCode::FORBIDDEN,
            None,
            "Refused",
            "Sign in from the console's own page.",
        );
    }
    let Some(name) = api.auth.key_name(form.key.trim()).cloned() else {
        return match api.auth.record_failure(client) {
            None => sign_in_page(
                StatusCode::UNAUTHORIZED,
                Some("That is not a valid API key."),
            ),
            Some(wait) => {
                let mut r = sign_in_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("Too many failed sign-ins from this address; try again later."),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
                r
            }
        };
    };
    let Some(id) = api.console.create(name.clone(), api.now_ms()) else {
        tracing::error!("console: no randomness for a session id");
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "Something failed",
            "No session could be made (see the daemon's log).",
        );
    };
    tracing::info!(key = %name, "console: signed in");
    let secure = if api.hsts { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console{secure}");
    let mut response = see_other("/console");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// `POST /console/sign-out`
pub async fn sign_out(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match authorised_post(&api, &headers, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    api.console.end(&signed);
    tracing::info!(key = %signed.key, "console: signed out");
    let secure = if api.hsts { "; Secure" } else { "" };
    let mut response = see_other("/console");
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// `GET /console`: the overview, or the sign-in form.
pub async fn overview(State(api): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let Some(signed) = signed_in(&api, &headers) else {
        return sign_in_page(StatusCode::OK, None);
    };
    let figures = match status::detailed(&api).await {
        Ok(f) => f,
        Err(e) => return error_page(&signed, &e),
    };
    let views = match account_views(&api, None, None).await {
        Ok(v) => v,
        Err(e) => return error_page(&signed, &e),
    };
    let of = |state: &str| views.iter().filter(|v| v.state == state).count();
    let href = |state: &str| format!("/console/accounts?state={state}");
    let counts = vec![
        pages::Count {
            label: "logged in",
            n: figures.active_tokens,
            href: "/console/accounts".into(),
        },
        pages::Count {
            label: "expiring within the hour",
            n: figures.tokens_expiring_within_hour,
            href: "/console/accounts".into(),
        },
        pages::Count {
            label: "need attention",
            n: of("needs_attention"),
            href: href("needs_attention"),
        },
        pages::Count {
            label: "paused",
            n: of("paused"),
            href: href("paused"),
        },
        pages::Count {
            label: "managed externally",
            n: of("managed_externally"),
            href: href("managed_externally"),
        },
        pages::Count {
            label: "awaiting approval",
            n: of("awaiting_approval"),
            href: href("awaiting_approval"),
        },
    ];
    let brokers: BTreeSet<&String> = figures
        .next_runs
        .keys()
        .chain(figures.breakers.keys())
        .collect();
    let schedules = brokers
        .into_iter()
        .map(|broker| pages::Schedule {
            broker: broker.clone(),
            next_run: ist_or_dash(figures.next_runs.get(broker).cloned().flatten().as_deref()),
            breaker: match figures.breakers.get(broker) {
                None => "closed".to_owned(),
                Some(b) if b.open => format!(
                    "open until {}: scheduled logins pause ({} accounts found the broker down)",
                    ist_or_dash(b.open_until.as_deref()),
                    b.failing_accounts
                ),
                Some(b) => format!("closed ({} accounts failing in a row)", b.failing_accounts),
            },
        })
        .collect();
    let flash = api.console.take_flash(&signed);
    render(
        StatusCode::OK,
        &pages::Overview {
            layout: layout("Overview", Some(&signed), flash),
            counts,
            users: figures.users,
            accounts: figures.accounts,
            attempts: figures.attempts,
            success_rate: figures.success_rate,
            schedules,
            mirror_error_at: figures.mirror.last_error_at.as_deref().map(ist),
            mirror: figures.mirror,
            plugins: figures.plugins,
            plugin_failures: figures.plugin_failures,
            clock_warning: figures.clock_warning,
        },
    )
}

/// The account list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct AccountsQuery {
    broker: Option<String>,
    state: Option<String>,
    q: Option<String>,
}

fn account_href(v: &AccountView) -> String {
    format!(
        "/console/accounts/{}/{}",
        segment(&v.user_id),
        segment(&v.broker)
    )
}

fn reason_of(v: &AccountView) -> Option<pages::Reason> {
    v.attention
        .as_ref()
        .map(|a| pages::reason(&a.class, &a.message, &a.since))
}

/// `GET /console/accounts?broker=&state=&q=`
pub async fn accounts(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> Response {
    let Some(signed) = signed_in(&api, &headers) else {
        return see_other("/console");
    };
    let views = match account_views(&api, None, None).await {
        Ok(v) => v,
        Err(e) => return error_page(&signed, &e),
    };
    let broker = query.broker.unwrap_or_default();
    let state = query.state.unwrap_or_default();
    let q = query.q.unwrap_or_default();
    let needle = q.trim().to_lowercase();
    let mut known: BTreeSet<String> = api.app.plugins.all().keys().cloned().collect();
    known.extend(views.iter().map(|v| v.broker.clone()));
    let total = views.len();
    let mut shown: Vec<&AccountView> = views
        .iter()
        .filter(|v| broker.is_empty() || v.broker == broker)
        .filter(|v| state.is_empty() || v.state == state)
        .filter(|v| needle.is_empty() || v.user_id.to_lowercase().contains(&needle))
        .collect();
    // Needing attention first; then by user and broker, as the views come.
    shown.sort_by_key(|v| v.state != "needs_attention");
    let rows = shown
        .into_iter()
        .map(|v| pages::AccountRow {
            user: v.user_id.clone(),
            broker: v.broker.clone(),
            state: v.state.clone(),
            state_label: state_label(&v.state),
            expires: ist_or_dash(v.token_expires_at.as_deref()),
            reason: reason_of(v),
            href: account_href(v),
        })
        .collect();
    let flash = api.console.take_flash(&signed);
    render(
        StatusCode::OK,
        &pages::Accounts {
            layout: layout("Accounts", Some(&signed), flash),
            brokers: known
                .into_iter()
                .map(|b| pages::Choice {
                    selected: b == broker,
                    label: b.clone(),
                    value: b,
                })
                .collect(),
            states: STATES
                .iter()
                .map(|(value, label)| pages::Choice {
                    value: (*value).to_owned(),
                    label: (*label).to_owned(),
                    selected: *value == state,
                })
                .collect(),
            q,
            rows,
            total,
        },
    )
}

/// The account a console path names, or the 400 page.
#[allow(clippy::result_large_err)]
fn path_key(signed: &Signed, user: String, broker: String) -> Result<AccountKey, Response> {
    let key = UserId::new(user)
        .map_err(ApiError::from)
        .and_then(|u| Ok(AccountKey::new(u, BrokerId::new(broker)?)));
    key.map_err(|e| error_page(signed, &e))
}

/// `GET /console/accounts/{userId}/{broker}`
pub async fn account(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
) -> Response {
    let Some(signed) = signed_in(&api, &headers) else {
        return see_other("/console");
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    let view = match account_view(&api, key.clone()).await {
        Ok(v) => v,
        Err(e) => return error_page(&signed, &e),
    };
    let vault = api.app.vault.clone();
    let k = key.clone();
    let attempts =
        match blocking(move || vault.attempts(AttemptScope::Account(&k), RECENT_ATTEMPTS)).await {
            Ok(a) => a,
            Err(e) => return error_page(&signed, &ApiError::from(e)),
        };
    let attempts = attempts
        .iter()
        .map(AttemptView::from)
        .map(|a| pages::AttemptRow {
            time: ist(&a.time),
            trigger: a.trigger,
            attempt: a.attempt,
            outcome: a.outcome,
            error_class: a.error_class.unwrap_or_default(),
            message: a.message.unwrap_or_default(),
            duration_ms: a.duration_ms,
        })
        .collect();
    let assisted = api
        .app
        .plugins
        .get(key.broker.as_str())
        .is_some_and(|p| p.has_assisted());
    let flash = api.console.take_flash(&signed);
    render(
        StatusCode::OK,
        &pages::Account {
            layout: layout(
                &format!("{} at {}", view.user_id, view.broker),
                Some(&signed),
                flash,
            ),
            href: account_href(&view),
            user: view.user_id.clone(),
            broker: view.broker.clone(),
            broker_user_id: view.broker_user_id.clone(),
            state_label: state_label(&view.state),
            has_token: view.has_token,
            last_login: ist_or_dash(view.last_login_at.as_deref()),
            expires: ist_or_dash(view.token_expires_at.as_deref()),
            auto_refresh: view.auto_refresh,
            pending_until: view.pending_until.as_deref().map(ist),
            reason: reason_of(&view),
            assisted,
            attempts,
        },
    )
}

fn key_href(key: &AccountKey) -> String {
    format!(
        "/console/accounts/{}/{}",
        segment(key.user.as_str()),
        segment(key.broker.as_str())
    )
}

/// `POST /console/accounts/{userId}/{broker}/login`: log this one account in now (as the
/// refresh routes do, `Selection { user, broker }`), then back to its page with the outcome.
pub async fn log_in_now(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match authorised_post(&api, &headers, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    let selection = Selection {
        user: Some(key.user.clone()),
        broker: Some(key.broker.clone()),
    };
    tracing::info!(key = %signed.key, account = %key, "console: log in now");
    let summary = match refresh_selection(&api, selection, Trigger::Api).await {
        Ok(s) => s,
        Err(e) => return error_page(&signed, &e),
    };
    let flash = match summary.results.first() {
        Some(r) => {
            let detail = r
                .message
                .clone()
                .or_else(|| r.error_class.clone())
                .unwrap_or_default();
            match r.outcome {
                Outcome::Success => Flash {
                    ok: true,
                    text: "Logged in: a new token is stored.".into(),
                },
                Outcome::Failed => Flash {
                    ok: false,
                    text: format!("The login failed: {detail}"),
                },
                Outcome::Skipped => Flash {
                    ok: false,
                    text: format!("Not attempted: {detail}"),
                },
                Outcome::PendingApproval => Flash {
                    ok: true,
                    text: "The broker asked the account holder to approve the login; the token \
                           arrives when they do."
                        .into(),
                },
            }
        }
        None => Flash {
            ok: false,
            text: "No such account to log in.".into(),
        },
    };
    api.console.set_flash(&signed, flash);
    see_other(&key_href(&key))
}

/// `POST /console/accounts/{userId}/{broker}/assisted`: start an assisted login (as
/// `GET /api/login/{broker}/{userId}/url` does) and send the browser to the broker's page; the
/// broker sends it back through `/callback/{broker}`.
pub async fn assisted(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match authorised_post(&api, &headers, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    match start_assisted(&api, key.broker.as_str(), key.user.clone()).await {
        Ok(started) => see_other(&started.url),
        Err(e) => {
            api.console.set_flash(
                &signed,
                Flash {
                    ok: false,
                    text: format!("The assisted login could not start: {}", e.message()),
                },
            );
            see_other(&key_href(&key))
        }
    }
}

/// The flags form's fields.
#[derive(Deserialize)]
pub struct FlagsForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    action: String,
}

/// `POST /console/accounts/{userId}/{broker}/flags`: `action` = `pause`, `resume` or
/// `clear_attention`, through the operation `PATCH /api/users/{userId}/accounts/{broker}` uses.
pub async fn flags(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    Form(form): Form<FlagsForm>,
) -> Response {
    let signed = match authorised_post(&api, &headers, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    let (flags, done) = match form.action.as_str() {
        "pause" => (
            Flags {
                auto_refresh: Some(false),
                ..Flags::default()
            },
            "Scheduled logins paused.",
        ),
        "resume" => (
            Flags {
                auto_refresh: Some(true),
                ..Flags::default()
            },
            "Scheduled logins resumed.",
        ),
        "clear_attention" => (
            Flags {
                clear_attention: true,
                ..Flags::default()
            },
            "Attention cleared: the next login sends the stored credentials again.",
        ),
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(&signed),
                "Refused",
                "Unknown action; nothing was changed.",
            );
        }
    };
    // The lockout rules: after "wrong password" or "locked", only new credentials resume logins.
    if flags.clear_attention {
        let blocked = match account_view(&api, key.clone()).await {
            Ok(view) => reason_of(&view).is_some_and(|r| !r.clearable),
            Err(e) => return error_page(&signed, &e),
        };
        if blocked {
            return message(
                StatusCode::CONFLICT,
                Some(&signed),
                "Refused",
                "The broker said the password is wrong, or the account is locked: clearing the \
                 attention would send the same password again. Update the credentials; logins \
                 resume once they change.",
            );
        }
    }
    tracing::info!(key = %signed.key, account = %key, action = %form.action, "console: account changed");
    if let Err(e) = set_flags(&api, key.clone(), flags).await {
        return error_page(&signed, &e);
    }
    api.console.set_flash(
        &signed,
        Flash {
            ok: true,
            text: done.into(),
        },
    );
    see_other(&key_href(&key))
}

/// `GET /console/accounts/{userId}/{broker}/remove`: the confirmation step.
pub async fn confirm_remove(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
) -> Response {
    let Some(signed) = signed_in(&api, &headers) else {
        return see_other("/console");
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    confirm_page(&signed, &key)
}

fn confirm_page(signed: &Signed, key: &AccountKey) -> Response {
    render(
        StatusCode::OK,
        &pages::ConfirmRemove {
            layout: layout("Remove an account", Some(signed), None),
            user: key.user.as_str().to_owned(),
            broker: key.broker.as_str().to_owned(),
            href: key_href(key),
        },
    )
}

/// The removal form's fields.
#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/accounts/{userId}/{broker}/remove`: with `confirm=yes`, remove the account
/// (as `DELETE /api/users/{userId}/accounts/{broker}` does); without it, the confirmation step.
pub async fn remove(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    Form(form): Form<RemoveForm>,
) -> Response {
    let signed = match authorised_post(&api, &headers, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    let key = match path_key(&signed, user, broker) {
        Ok(k) => k,
        Err(page) => return page,
    };
    if form.confirm != "yes" {
        return confirm_page(&signed, &key);
    }
    tracing::info!(key = %signed.key, account = %key, "console: account removed");
    if let Err(e) = delete_account(&api, key.clone()).await {
        return error_page(&signed, &e);
    }
    api.console.set_flash(
        &signed,
        Flash {
            ok: true,
            text: format!("Removed {} at {}.", key.user, key.broker),
        },
    );
    see_other("/console/accounts")
}
