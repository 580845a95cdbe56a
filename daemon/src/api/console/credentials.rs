//! The credentials form: add an account, or change a stored one's credentials, as
//! `PUT /api/users/{userId}/accounts/{broker}` does (the same checks: `credential_input`).
//!
//! A secret field is never shown, not even masked: every secret input starts blank. When an
//! account is changed, a secret left blank keeps its stored value, so "update the password" means
//! typing only the password. The vault clears a needs-attention state only when a field that can
//! fix it changed, so saving the form unchanged never lets a refused password be sent again.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use broker_api::wire::CredentialField;
use secrecy::SecretString;
use serde::Deserialize;

use super::pages;
use super::session::{Flash, Signed};
use super::{PathAccount, Posted, Session, error_page, key_href, layout, render, see_other};
use crate::api::ApiState;
use crate::api::accounts::{plugin_for, store_account};
use crate::api::error::{ApiError, ApiQuery};
use crate::api::views::account_view;
use crate::credential_input::Fields;
use crate::plugins::Plugin;
use crate::vault::{AccountKey, UserId, blocking};

/// The path of the form that adds an account.
const NEW: &str = "/console/accounts/new";

/// Which form: a new account (at a broker chosen on the page), or a stored one.
enum Target<'a> {
    New {
        broker: Option<&'a str>,
        user: &'a str,
    },
    Stored(&'a AccountKey),
}

/// The form for `target`, with the fields of `plugin`'s manifest.
fn form_page(
    status: StatusCode,
    signed: &Signed,
    api: &ApiState,
    target: Target<'_>,
    plugin: Option<&Plugin>,
    broker_user_id: &str,
    error: Option<String>,
) -> Response {
    let stored = matches!(target, Target::Stored(_));
    let fields = plugin
        .map(|p| {
            p.manifest
                .credential_fields
                .iter()
                .map(|f| field_view(f, stored, broker_user_id))
                .collect()
        })
        .unwrap_or_default();
    let page = match target {
        Target::New { broker, user } => pages::Credentials {
            layout: layout("Add an account", Some(signed), None),
            heading: "Add an account".to_owned(),
            action: NEW.to_owned(),
            back: "/console/accounts".to_owned(),
            brokers: api
                .app
                .plugins
                .all()
                .keys()
                .map(|b| pages::Choice {
                    selected: Some(b.as_str()) == broker,
                    label: b.clone(),
                    value: b.clone(),
                })
                .collect(),
            broker: broker.unwrap_or_default().to_owned(),
            user: user.to_owned(),
            fields,
            error,
        },
        Target::Stored(key) => pages::Credentials {
            layout: layout("Credentials", Some(signed), None),
            heading: format!("Credentials of {} at {}", key.user, key.broker),
            action: format!("{}/credentials", key_href(key)),
            back: key_href(key),
            brokers: Vec::new(),
            broker: key.broker.as_str().to_owned(),
            user: key.user.as_str().to_owned(),
            fields,
            error,
        },
    };
    render(status, &page)
}

fn field_view(f: &CredentialField, stored: bool, broker_user_id: &str) -> pages::Field {
    let hint = match (f.name.as_str(), stored && f.name != "broker_user_id") {
        ("totp_secret", true) => {
            "base32, or the otpauth:// text of the QR code; blank keeps the stored one"
        }
        ("totp_secret", false) => "base32, or the otpauth:// text of the QR code",
        (_, true) => "blank keeps the stored value",
        _ => "",
    };
    pages::Field {
        name: f.name.clone(),
        label: if f.label.is_empty() {
            f.name.replace('_', " ")
        } else {
            f.label.clone()
        },
        // Only the broker's user id is ever filled in: no credential reaches a page.
        value: if f.name == "broker_user_id" {
            broker_user_id.to_owned()
        } else {
            String::new()
        },
        secret: f.secret,
        required: f.required && !(stored && f.name != "broker_user_id"),
        hint,
    }
}

/// The broker chosen on the new-account form.
#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    broker: Option<String>,
}

/// `GET /console/accounts/new?broker=`: choose a broker, then fill in its fields.
pub async fn new_account_form(
    State(api): State<Arc<ApiState>>,
    Session(signed): Session,
    ApiQuery(query): ApiQuery<NewQuery>,
) -> Response {
    let broker = query.broker.filter(|b| !b.is_empty());
    let plugin = broker.as_deref().and_then(|b| api.app.plugins.get(b));
    form_page(
        StatusCode::OK,
        &signed,
        &api,
        Target::New {
            broker: broker.as_deref().filter(|_| plugin.is_some()),
            user: "",
        },
        plugin.as_deref(),
        "",
        None,
    )
}

/// `POST /console/accounts/new`: `user_id`, `broker`, and the broker's fields.
pub async fn add_account(
    State(api): State<Arc<ApiState>>,
    Posted { signed, fields }: Posted<BTreeMap<String, String>>,
) -> Response {
    let mut form = fields;
    form.remove("csrf");
    let user = form.remove("user_id").unwrap_or_default();
    let broker = form.remove("broker").unwrap_or_default();
    let (plugin, broker_id) = match plugin_for(&api, &broker, StatusCode::UNPROCESSABLE_ENTITY) {
        Ok(found) => found,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let refused = |e: ApiError, broker_user_id: &str| {
        form_page(
            e.status(),
            &signed,
            &api,
            Target::New {
                broker: Some(&broker),
                user: &user,
            },
            Some(&plugin),
            broker_user_id,
            Some(e.message().to_owned()),
        )
    };
    let key = match UserId::new(user.trim()) {
        Ok(u) => AccountKey::new(u, broker_id),
        Err(e) => return refused(e.into(), form.get("broker_user_id").map_or("", |s| s)),
    };
    let exists = {
        let (vault, k) = (api.app.vault.clone(), key.clone());
        blocking(move || vault.get_account(&k)).await
    };
    match exists {
        Ok(None) => {}
        Ok(Some(_)) => {
            let e = ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                format!(
                    "{} already has an account at {}: change it from its page",
                    key.user, key.broker
                ),
            );
            return refused(e, form.get("broker_user_id").map_or("", |s| s));
        }
        Err(e) => return error_page(Some(&signed), &e.into()),
    }
    let broker_user_id = form.get("broker_user_id").cloned().unwrap_or_default();
    match store_account(
        &api,
        key.clone(),
        &plugin,
        fields_of(form),
        None,
        None,
        None,
    )
    .await
    {
        Ok(_) => {
            tracing::info!(key = %signed.key, account = %key, "console: account added");
            api.console.set_flash(
                &signed,
                Flash {
                    ok: true,
                    text: "Account added. It logs in on its broker's schedule, or now with \
                           \"Log in now\"."
                        .into(),
                },
            );
            see_other(&key_href(&key))
        }
        Err(e) => refused(e, &broker_user_id),
    }
}

/// `GET /console/accounts/{userId}/{broker}/credentials`
pub async fn credentials_form(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Session(signed): Session,
) -> Response {
    let view = match account_view(&api, key.clone()).await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let plugin = match plugin_for(&api, key.broker.as_str(), StatusCode::NOT_FOUND) {
        Ok((p, _)) => p,
        Err(e) => return error_page(Some(&signed), &e),
    };
    form_page(
        StatusCode::OK,
        &signed,
        &api,
        Target::Stored(&key),
        Some(&plugin),
        &view.broker_user_id,
        None,
    )
}

/// `POST /console/accounts/{userId}/{broker}/credentials`: the fields typed in replace the stored
/// ones; blank ones keep theirs.
pub async fn update_credentials(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Posted { signed, fields }: Posted<BTreeMap<String, String>>,
) -> Response {
    let mut form = fields;
    form.remove("csrf");
    let (plugin, _) = match plugin_for(&api, key.broker.as_str(), StatusCode::NOT_FOUND) {
        Ok(found) => found,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let (stored, view) = {
        let (vault, k) = (api.app.vault.clone(), key.clone());
        let stored = blocking(move || vault.credentials(&k)).await;
        (stored, account_view(&api, key.clone()).await)
    };
    let (stored, view) = match (stored, view) {
        (Ok(Some(stored)), Ok(view)) => (stored, view),
        (Ok(None), _) => {
            return error_page(
                Some(&signed),
                &ApiError::not_found("no_account", "no such account".to_owned()),
            );
        }
        (Err(e), _) => return error_page(Some(&signed), &e.into()),
        (_, Err(e)) => return error_page(Some(&signed), &e),
    };
    let mut fields = fields_of(form);
    if fields.broker_user_id.is_none() {
        fields.broker_user_id = Some(view.broker_user_id.clone());
    }
    for name in stored.names() {
        if let Some(value) = stored.get(name) {
            fields
                .extra
                .entry(name.to_owned())
                .or_insert_with(|| value.clone());
        }
    }
    let shown_id = fields.broker_user_id.clone().unwrap_or_default();
    // Written only if nobody changed the credentials since they were read here: the kept ones
    // must not bring back a password replaced (and perhaps refused) meanwhile.
    let stored_now = store_account(&api, key.clone(), &plugin, fields, None, None, Some(stored));
    match stored_now.await {
        Ok((_, after)) => {
            tracing::info!(key = %signed.key, account = %key, "console: credentials changed");
            let text = match (view.attention.is_some(), after.attention.is_some()) {
                (true, false) => "Credentials saved; the account no longer needs attention.",
                (true, true) => {
                    "Credentials saved. The account still needs attention: the field the broker \
                     refused did not change."
                }
                _ => "Credentials saved.",
            };
            api.console.set_flash(
                &signed,
                Flash {
                    ok: true,
                    text: text.into(),
                },
            );
            see_other(&key_href(&key))
        }
        Err(e) => form_page(
            e.status(),
            &signed,
            &api,
            Target::Stored(&key),
            Some(&plugin),
            &shown_id,
            Some(e.message().to_owned()),
        ),
    }
}

/// The form's non-blank fields, as the API's body would carry them. Every name goes to `extra`,
/// which [`crate::credential_input::check_fields`] sorts into the shared fields and the broker's
/// own, refusing any other by name.
fn fields_of(form: BTreeMap<String, String>) -> Fields {
    let mut fields = Fields::default();
    for (name, value) in form {
        if value.trim().is_empty() {
            continue;
        }
        if name == "broker_user_id" {
            fields.broker_user_id = Some(value);
        } else {
            fields.extra.insert(name, SecretString::from(value));
        }
    }
    fields
}
