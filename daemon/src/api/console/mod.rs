//! The operator console: server-rendered HTML at `/console`, for people. The one script
//! (`console.js`) only animates the refresh-all progress bar; every page and form works without it.
//!
//! - Sign-in (`sign_in`): `GET /console` without a session answers the sign-in form;
//!   `POST /console/sign-in` takes a service API key (the keys `auth` accepts for service
//!   routes). A wrong key counts in the failed-authentication limit as every other failure does.
//!   A good one makes a session (`session`) and sets
//!   `tokenbot_console=<id>; HttpOnly; SameSite=Strict; Path=/console`, plus `Secure` when
//!   `server.public_url` is https.
//! - Pages need the session ([`Session`]: a `GET` without one is sent to the sign-in form); every
//!   `POST` needs the session and its CSRF token ([`Posted`]: hidden field `csrf`), or is refused
//!   403 having changed nothing. Pages are `Cache-Control: no-store` and carry the API's security
//!   headers (`layers`) plus a Content-Security-Policy.
//! - What the pages show comes from the API's own views and operations: the `/health/detailed`
//!   figures (`status`), the account views (`views`), and the account operations (`accounts`)
//!   that `PUT`/`PATCH`/`DELETE /api/users/{userId}/accounts/{broker}` and the refresh routes
//!   use, so the same rules hold. No page shows a token or a credential: token expiry only, and
//!   the credentials form's secret fields are always blank.

mod accounts;
mod actions;
mod credentials;
mod overview;
mod pages;
mod refresh_all;
mod session;
mod sign_in;

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ApiState;
use super::error::{ApiError, ApiPath};
use crate::vault::{AccountKey, BrokerId, UserId};
use pages::{Layout, segment};
pub use refresh_all::RefreshAll;
pub use session::Sessions;
use session::{Flash, Signed};

pub use accounts::{account, accounts};
pub use actions::{assisted, confirm_remove, flags, log_in_now, remove};
pub use credentials::{add_account, credentials_form, new_account_form, update_credentials};
pub use overview::overview;
pub use refresh_all::{progress_events, refresh_all_page, start_refresh_all};
pub use sign_in::{sign_in, sign_out};

/// Only this origin's styles and script (the progress bar's), which may only call back here; no
/// frames, no plugins.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

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
fn error_page(signed: Option<&Signed>, e: &ApiError) -> Response {
    let heading = if e.status().is_server_error() {
        "Something failed"
    } else {
        "Refused"
    };
    message(e.status(), signed, heading, e.message())
}

/// The request's live session.
fn signed_in(api: &ApiState, headers: &HeaderMap) -> Option<Signed> {
    let id = session::cookie_value(headers)?;
    api.console.find(id, api.now_ms())
}

/// A page's live session. Without one, the browser is sent to the sign-in form.
pub struct Session(Signed);

impl FromRequestParts<Arc<ApiState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        signed_in(api, &parts.headers)
            .map(Session)
            .ok_or_else(|| see_other("/console"))
    }
}

/// The CSRF token every state-changing form carries.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: Option<String>,
}

/// A state-changing form: a live session, the session's CSRF token in the form's `csrf` field,
/// and the form's other fields `F`. Anything less is refused with a page (403 for the session or
/// the token, 400 for fields of the wrong shape) before the handler runs, so nothing changes.
pub struct Posted<F> {
    signed: Signed,
    fields: F,
}

impl<F: DeserializeOwned> FromRequest<Arc<ApiState>> for Posted<F> {
    type Rejection = Response;

    async fn from_request(req: Request, api: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let Some(signed) = signed_in(api, req.headers()) else {
            return Err(message(
                StatusCode::FORBIDDEN,
                None,
                "Signed out",
                "Your console session has ended. Sign in again; nothing was changed.",
            ));
        };
        let unreadable = |signed: &Signed| {
            message(
                StatusCode::BAD_REQUEST,
                Some(signed),
                "Refused",
                "The form could not be read; nothing was changed.",
            )
        };
        let Ok(body) = Bytes::from_request(req, api).await else {
            return Err(unreadable(&signed));
        };
        let csrf = serde_urlencoded::from_bytes::<CsrfField>(&body)
            .ok()
            .and_then(|f| f.csrf);
        if !api.console.csrf_ok(&signed, csrf.as_deref()) {
            tracing::warn!(key = %signed.key, "console: a form without its CSRF token; refused");
            return Err(message(
                StatusCode::FORBIDDEN,
                Some(&signed),
                "Refused",
                "This form did not come from this console session (its CSRF token is missing or \
                 wrong). Nothing was changed; reload the page and try again.",
            ));
        }
        match serde_urlencoded::from_bytes(&body) {
            Ok(fields) => Ok(Posted { signed, fields }),
            Err(_) => Err(unreadable(&signed)),
        }
    }
}

/// The fields of a form that has only its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

/// The account a console path (`/console/accounts/{userId}/{broker}...`) names, or the 400 page.
pub struct PathAccount(AccountKey);

impl FromRequestParts<Arc<ApiState>> for PathAccount {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let key = ApiPath::<(String, String)>::from_request_parts(parts, api)
            .await
            .and_then(|ApiPath((user, broker))| {
                Ok(AccountKey::new(UserId::new(user)?, BrokerId::new(broker)?))
            });
        key.map(PathAccount).map_err(|e| error_page(None, &e))
    }
}

/// The path of an account's page.
fn key_href(key: &AccountKey) -> String {
    format!(
        "/console/accounts/{}/{}",
        segment(key.user.as_str()),
        segment(key.broker.as_str())
    )
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

/// A file compiled into the binary, cached for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

/// `GET /console/console.css`
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

/// `GET /console/console.js`
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}
