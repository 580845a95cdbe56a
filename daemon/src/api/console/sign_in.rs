//! Signing in with a service API key, and out.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::header::{HeaderValue, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::session::COOKIE;
use super::{Client, NoFields, Posted, layout, message, pages, render, see_other};
use crate::api::ApiState;

/// The sign-in form, with what went wrong last time.
pub(super) fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    render(
        status,
        &pages::SignIn {
            layout: layout("Sign in", None, None),
            error: error.map(str::to_owned),
        },
    )
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
    with_cookie(&api, see_other("/console"), &id, "")
}

/// `POST /console/sign-out`
pub async fn sign_out(State(api): State<Arc<ApiState>>, posted: Posted<NoFields>) -> Response {
    api.console.end(&posted.signed);
    tracing::info!(key = %posted.signed.key, "console: signed out");
    with_cookie(&api, see_other("/console"), "", "; Max-Age=0")
}

/// `response` setting the session cookie to `value`, with exactly the attributes the module
/// documents, plus `extra`.
fn with_cookie(api: &ApiState, mut response: Response, value: &str, extra: &str) -> Response {
    let secure = if api.hsts { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/console{extra}{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}
