//! Fyers' `{"s","code","message"}` envelope and how each failure maps to an error class
//! (fyers.md, "Errors and classes").

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text};

/// Which request failed: the same envelope means different things at different steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// H1 `send_login_otp(_v2)` (user id only).
    SendOtp,
    /// H2 `verify_otp` (the TOTP).
    VerifyOtp,
    /// H3 `verify_pin(_v2)` (the PIN).
    VerifyPin,
    /// H4 `POST /token` (auth code for the app).
    Token,
    /// H5 / A2 `POST /validate-authcode`.
    ValidateAuthcode,
    /// V `GET /profile`.
    Profile,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::SendOtp => "H1 send_login_otp",
            Step::VerifyOtp => "H2 verify_otp",
            Step::VerifyPin => "H3 verify_pin",
            Step::Token => "H4 /token",
            Step::ValidateAuthcode => "H5 /validate-authcode",
            Step::Profile => "V /profile",
        }
    }
}

/// An error envelope.
#[derive(Debug)]
pub struct FyersError {
    /// `code`, when numeric (or a numeric string).
    pub code: Option<i64>,
    /// The broker's message, truncated.
    pub message: String,
    /// HTTP status.
    pub status: u16,
    /// vagator's `user_blocked`.
    pub user_blocked: bool,
    /// vagator's `failed_attempts` is present (a PIN/ID counter).
    pub failed_attempts: bool,
}

/// The numeric `code` of a body.
pub fn code_of(body: &serde_json::Value) -> Option<i64> {
    let c = body.get("code")?;
    c.as_i64()
        .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The error of a body, if it is one: `s` other than `ok`, whatever the HTTP status; with no `s`,
/// an HTTP status of 400 or more or a negative `code`.
pub fn envelope_error(body: &serde_json::Value, status: u16) -> Option<FyersError> {
    let is_error = match body.get("s").and_then(|s| s.as_str()) {
        Some(s) => !s.eq_ignore_ascii_case("ok"),
        // With no `s`, a negative `code` (every Fyers error code is negative) is an error too,
        // even with HTTP 200: fyers.md's rule is "an error iff s != ok".
        None => status >= 400 || code_of(body).is_some_and(|c| c < 0),
    };
    is_error.then(|| FyersError {
        code: code_of(body),
        message: broker_text(body).unwrap_or_default(),
        status,
        user_blocked: body.get("user_blocked").is_some_and(truthy),
        failed_attempts: body.get("failed_attempts").is_some_and(|v| !v.is_null()),
    })
}

/// A JSON flag that is set: `true`, or the same sent as a string (`"true"`, `"1"`) or a number
/// (`1`), as other readings of fyers.md's `user_blocked` may send it.
pub fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => {
            matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "y"
            )
        }
        _ => false,
    }
}

/// Whether Cloudflare answered (its `Server`, a `cf-ray`, or its 1015 rate-limit page).
fn cloudflare(resp: &HttpResponse) -> bool {
    resp.header("server")
        .is_some_and(|s| s.eq_ignore_ascii_case("cloudflare"))
        || resp.header("cf-ray").is_some()
        || resp.body.contains("error code: 1015")
}

/// Cloudflare's rate limiting on Fyers' login hosts: back off at least ten minutes (fyers.md).
pub const CLOUDFLARE_BACKOFF_MS: u64 = 600_000;
/// Wait after `-353` "API Limit exceeded".
pub const API_LIMIT_BACKOFF_MS: u64 = 60_000;

/// The shared triage (429, HTML, 5xx), with Cloudflare's 429 held off for ten minutes.
pub fn triage(step: Step, resp: &HttpResponse) -> Option<ErrorOutput> {
    let mut e = http::triage("fyers", step.name(), resp)?;
    if e.class == ErrorClass::RateLimited && cloudflare(resp) {
        e.retry_after_ms = Some(e.retry_after_ms.unwrap_or(0).max(CLOUDFLARE_BACKOFF_MS));
        e.message
            .push_str(" (Cloudflare rate limit: backing off at least 10 minutes)");
    }
    Some(e)
}

/// The body of a success envelope, or the step's error.
pub fn ok_body(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
    if let Some(e) = triage(step, resp) {
        return Err(e);
    }
    let body = http::json_object("fyers", step.name(), resp)?;
    if let Some(e) = envelope_error(&body, resp.status) {
        return Err(classify(step, &e));
    }
    Ok(body)
}

/// A `protocol` failure: the broker answered something this strategy does not understand.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "fyers: {}: {what}; the login flow may have changed",
            step.name()
        ),
    )
}

fn any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The class of a Fyers error at `step`, with the advice that goes with it.
pub fn classify(step: Step, e: &FyersError) -> ErrorOutput {
    let lower = e.message.to_ascii_lowercase();
    let code = e.code.unwrap_or(0);
    let what = format!(
        "fyers: {}: HTTP {}{}{}",
        step.name(),
        e.status,
        e.code.map(|c| format!(" code {c}")).unwrap_or_default(),
        if e.message.is_empty() {
            String::new()
        } else {
            format!(": {}", e.message)
        }
    );
    let (class, advice, retry_after) = if e.status == 429
        || code == -353
        || any(&lower, &["limit exceeded", "too many"])
    {
        (ErrorClass::RateLimited, "", Some(API_LIMIT_BACKOFF_MS))
    } else if e.user_blocked || any(&lower, &["blocked", "locked", "suspended"]) {
        (
            ErrorClass::AccountLocked,
            "; the account is blocked: unblock it on fyers.in, then log in again",
            None,
        )
    } else if code == -1031 || lower.contains("recaptcha") {
        (
            ErrorClass::AutomationBlocked,
            "; Fyers asked for a captcha: use assisted login",
            None,
        )
    } else if code == -371 {
        (
            ErrorClass::InvalidCredentials,
            "; check api_key (the App ID with its type suffix, e.g. ABCD1234EF-100) and api_secret",
            None,
        )
    } else if matches!(code, -1025 | -1044 | -2) {
        (
            ErrorClass::Protocol,
            "; the endpoint or request shape changed: see the otp_variant setting",
            None,
        )
    } else if matches!(code, -374 | -441 | -442 | -50) {
        (
            ErrorClass::Protocol,
            "; the auth code was missing, used or expired: log in again",
            None,
        )
    } else if matches!(code, -201 | -202 | -204 | -205 | -96) || e.status >= 500 {
        (ErrorClass::BrokerUnavailable, "", None)
    } else {
        let (class, advice) = by_step(step, e, &lower);
        (class, advice, None)
    };
    let mut out = ErrorOutput::new(class, format!("{what}{advice}"));
    out.retry_after_ms = retry_after;
    out
}

fn by_step(step: Step, e: &FyersError, lower: &str) -> (ErrorClass, &'static str) {
    match step {
        Step::VerifyOtp if any(lower, &["otp", "totp"]) => (ErrorClass::TwofaRejected, ""),
        Step::SendOtp | Step::VerifyPin
            if e.failed_attempts
                || any(
                    lower,
                    &[
                        "pin",
                        "password",
                        "username",
                        "user",
                        "fy_id",
                        "client id",
                        "credential",
                    ],
                ) =>
        {
            (
                ErrorClass::InvalidCredentials,
                "; not retried: fix the client ID or PIN (about 5 failures block the account)",
            )
        }
        Step::Token if any(lower, &["authoriz", "consent", "app"]) => (
            ErrorClass::AppNotAuthorized,
            "; authorize the app once in a browser (assisted login), then headless works",
        ),
        Step::ValidateAuthcode if any(lower, &["hash", "secret", "appid", "app id"]) => (
            ErrorClass::InvalidCredentials,
            "; check api_key and api_secret",
        ),
        _ => (ErrorClass::Protocol, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: serde_json::Value, status: u16) -> FyersError {
        envelope_error(&body, status).expect("an error")
    }

    #[test]
    fn documented_codes_get_their_classes() {
        let c = |step, body, status| classify(step, &err(body, status)).class;
        let e = |code: i64, m: &str| json!({"s": "error", "code": code, "message": m});
        assert_eq!(
            c(
                Step::SendOtp,
                e(-1031, "recaptcha token is not provided"),
                200
            ),
            ErrorClass::AutomationBlocked
        );
        assert_eq!(
            c(
                Step::ValidateAuthcode,
                e(-371, "Please provide sha256 hash of appId and app secret"),
                400
            ),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(
            c(Step::ValidateAuthcode, e(-50, "invalid auth code"), 400),
            ErrorClass::Protocol
        );
        assert_eq!(
            c(Step::Profile, e(-353, "API Limit exceeded"), 200),
            ErrorClass::RateLimited
        );
        assert_eq!(
            c(Step::Profile, e(-204, "Connection error"), 200),
            ErrorClass::BrokerUnavailable
        );
        assert_eq!(
            c(Step::VerifyOtp, e(-1013, "Invalid otp"), 200),
            ErrorClass::TwofaRejected
        );
        assert_eq!(
            c(
                Step::VerifyPin,
                json!({"s":"error","code":-1006,"message":"Incorrect. 4 attempts left","failed_attempts":1}),
                200
            ),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(
            c(
                Step::VerifyPin,
                json!({"s":"error","code":-1006,"message":"x","user_blocked":true}),
                200
            ),
            ErrorClass::AccountLocked
        );
        // Other readings of the same facts: the flag as a string, the PIN refusal worded
        // "credentials" and without `failed_attempts`.
        assert_eq!(
            c(
                Step::VerifyPin,
                json!({"s":"error","code":-1006,"message":"x","user_blocked":"true"}),
                200
            ),
            ErrorClass::AccountLocked
        );
        assert_eq!(
            c(
                Step::VerifyPin,
                json!({"s":"error","code":-1006,"message":"x","user_blocked":"false"}),
                200
            ),
            ErrorClass::Protocol
        );
        assert_eq!(
            c(Step::VerifyPin, e(-1006, "Invalid credentials"), 401),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(
            c(Step::Token, e(-17, "App not authorized by the user"), 400),
            ErrorClass::AppNotAuthorized
        );
        assert_eq!(
            c(Step::SendOtp, e(-1025, "invalid request"), 400),
            ErrorClass::Protocol
        );
    }

    #[test]
    fn ok_with_http_error_is_success_and_error_with_200_is_error() {
        assert!(envelope_error(&json!({"s": "ok", "code": 308}), 308).is_none());
        assert!(envelope_error(&json!({"s": "error"}), 200).is_some());
        assert!(envelope_error(&json!({"message": "x"}), 401).is_some());
        assert!(envelope_error(&json!({"code": -16, "message": "x"}), 200).is_some());
        assert!(envelope_error(&json!({"code": 200, "access_token": "t"}), 200).is_none());
        assert_eq!(code_of(&json!({"code": "-371"})), Some(-371));
    }
}
