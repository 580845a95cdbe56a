//! Q3, a token Upstox POSTed to the notifier webhook: checked field by field (upstox.md, "The
//! notifier webhook in tokenbot", checks 1-6) because Upstox signs nothing. The host has already
//! matched the hook to its app, found the account's pending request and ruled out a replay.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, LoginOutput, Sensitive, TokenDelivery, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{str_field, truncate};
use broker_common::ist;

use crate::api::{self, Api, epoch_ms};

/// How long before its request a delivery's `issued_at` may lie (clock skew between Upstox and
/// this host).
const ISSUED_SKEW_MS: i64 = 2 * 60_000;
/// How far past the next 03:30 IST a delivery's `expires_at` may lie.
const EXPIRY_SLACK_MS: i64 = 60_000;

fn refused(why: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("upstox: webhook delivery refused: {why}"),
    )
}

/// The token of a delivery, after checks 1-6, or why it is refused (never the token).
pub fn accept(
    host: &Host<'_>,
    api: &Api<'_, '_>,
    api_key: &str,
    broker_user_id: &str,
    delivery: &TokenDelivery,
) -> Result<LoginOutput, ErrorOutput> {
    let now = host.now_unix_ms();
    let body: serde_json::Value = serde_json::from_str(delivery.body.expose())
        .ok()
        .filter(|b: &serde_json::Value| b.is_object())
        .ok_or_else(|| refused("the body is not a JSON object"))?;
    // 1. What kind of message it is.
    let text = |k: &str| str_field(&body, k).unwrap_or_default();
    if text("message_type") != "access_token" {
        return Err(refused(&format!(
            "message_type is {:?}, not access_token",
            truncate(text("message_type"), 40)
        )));
    }
    if !text("token_type").eq_ignore_ascii_case("bearer") {
        return Err(refused("token_type is not Bearer"));
    }
    let token = str_field(&body, "access_token")
        .map(Sensitive::new)
        .ok_or_else(|| refused("no access_token"))?;
    // 2. For this hook's app.
    if text("client_id") != api_key {
        return Err(refused("client_id is not the API key of this hook's app"));
    }
    // 3. Answering the pending request, not an older one.
    if now >= delivery.pending_until_ms {
        return Err(refused("the approval request has expired"));
    }
    let issued = epoch_ms(body.get("issued_at")).ok_or_else(|| refused("no issued_at"))?;
    if issued < delivery.requested_at_ms - ISSUED_SKEW_MS {
        return Err(refused("issued_at is before the pending request (stale)"));
    }
    // 4. For this account's user.
    let user = text("user_id");
    if user.is_empty() {
        return Err(refused("no user_id"));
    }
    api::same_user(user, broker_user_id).map_err(|_| refused("user_id is not this account's"))?;
    // 5. A token of today's kind: alive, and dead by the next 03:30 IST.
    let expires = epoch_ms(body.get("expires_at")).ok_or_else(|| refused("no expires_at"))?;
    if expires <= now {
        return Err(refused("expires_at is in the past"));
    }
    if expires > ist::next_ist_wall_time(now, 3, 30) + EXPIRY_SLACK_MS {
        return Err(refused("expires_at is after the next 03:30 IST"));
    }
    // 6. Upstox itself vouches for the token, for the same user.
    let confirmed = api.confirm(token.expose())?;
    if !confirmed.eq_ignore_ascii_case(user) {
        return Err(refused("the profile names another user than the delivery"));
    }
    host.log(
        Level::Info,
        "upstox: webhook delivery accepted; token verified with the profile",
    );
    let issued = issued.min(now);
    let mut extras = BTreeMap::new();
    extras.insert("user_id".into(), confirmed.clone().into());
    Ok(LoginOutput {
        v: WIRE_VERSION,
        access_token: token,
        broker_user_id: confirmed,
        issued_at_ms: issued,
        expires_at_ms: expires.min(api::token_expiry(issued)),
        extras,
    })
}
