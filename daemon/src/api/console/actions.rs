//! What the account page's buttons do: log in now, assisted login, pause and resume, clear
//! attention (where the lockout rules allow it), and remove after a confirmation.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::accounts::reason_of;
use super::pages;
use super::session::{Flash, Signed};
use super::{
    NoFields, PathAccount, Posted, Session, error_page, key_href, layout, message, render,
    see_other,
};
use crate::api::ApiState;
use crate::api::accounts::{delete_account, refresh_selection, set_flags, start_assisted};
use crate::api::views::account_view;
use crate::refresh::Selection;
use crate::vault::{AccountKey, Flags, Outcome, Trigger};

/// `POST /console/accounts/{userId}/{broker}/login`: log this one account in now (as the
/// refresh routes do, `Selection { user, broker }`), then back to its page with the outcome.
pub async fn log_in_now(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Posted { signed, .. }: Posted<NoFields>,
) -> Response {
    let selection = Selection::account(key.clone());
    tracing::info!(key = %signed.key, account = %key, "console: log in now");
    let summary = match refresh_selection(&api, selection, Trigger::Api).await {
        Ok(s) => s,
        Err(e) => return error_page(Some(&signed), &e),
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
    PathAccount(key): PathAccount,
    Posted { signed, .. }: Posted<NoFields>,
) -> Response {
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
    action: String,
}

/// `POST /console/accounts/{userId}/{broker}/flags`: `action` = `pause`, `resume` or
/// `clear_attention`, through the operation `PATCH /api/users/{userId}/accounts/{broker}` uses.
pub async fn flags(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Posted {
        signed,
        fields: form,
    }: Posted<FlagsForm>,
) -> Response {
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
            Err(e) => return error_page(Some(&signed), &e),
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
        return error_page(Some(&signed), &e);
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
pub async fn confirm_remove(PathAccount(key): PathAccount, Session(signed): Session) -> Response {
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
    confirm: String,
}

/// `POST /console/accounts/{userId}/{broker}/remove`: with `confirm=yes`, remove the account
/// (as `DELETE /api/users/{userId}/accounts/{broker}` does); without it, the confirmation step.
pub async fn remove(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Posted {
        signed,
        fields: form,
    }: Posted<RemoveForm>,
) -> Response {
    if form.confirm != "yes" {
        return confirm_page(&signed, &key);
    }
    tracing::info!(key = %signed.key, account = %key, "console: account removed");
    if let Err(e) = delete_account(&api, key.clone()).await {
        return error_page(Some(&signed), &e);
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
