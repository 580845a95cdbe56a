//! The account list (filtered, needing attention first) and an account's page.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::pages::{self, STATES, ist, ist_or_dash, segment, state_label};
use super::{PathAccount, Session, error_page, layout, render};
use crate::api::ApiState;
use crate::api::error::{ApiError, ApiQuery};
use crate::api::views::{AccountView, AttemptView, account_view, account_views};
use crate::vault::{AttemptScope, blocking};

/// Attempts the account page lists.
const RECENT_ATTEMPTS: usize = 20;

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

pub(super) fn reason_of(v: &AccountView) -> Option<pages::Reason> {
    v.attention
        .as_ref()
        .map(|a| pages::reason(&a.class, &a.message, &a.since))
}

/// `GET /console/accounts?broker=&state=&q=`
pub async fn accounts(
    State(api): State<Arc<ApiState>>,
    Session(signed): Session,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> Response {
    let views = match account_views(&api, None, None).await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&signed), &e),
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

/// `GET /console/accounts/{userId}/{broker}`
pub async fn account(
    State(api): State<Arc<ApiState>>,
    PathAccount(key): PathAccount,
    Session(signed): Session,
) -> Response {
    let view = match account_view(&api, key.clone()).await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let vault = api.app.vault.clone();
    let k = key.clone();
    let attempts =
        match blocking(move || vault.attempts(AttemptScope::Account(&k), RECENT_ATTEMPTS)).await {
            Ok(a) => a,
            Err(e) => return error_page(Some(&signed), &ApiError::from(e)),
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
