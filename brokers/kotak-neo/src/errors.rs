//! Kotak Neo's envelopes (login `{"status":"error","message","errorCode"}`, gateway
//! `{"error":[{"code","message"}]}`, post-login `{"stat":"Not_Ok","stCode","emsg"}`) and their
//! classes (kotak-neo.md, "Errors and classes").

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text, str_field};

/// Which request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// K1 `tradeApiLogin` (mobile, UCC, TOTP).
    Login,
    /// K2 `tradeApiValidate` (the MPIN).
    Validate,
    /// V the limits call on the session's `baseUrl`.
    Verify,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Login => "K1 tradeApiLogin",
            Step::Validate => "K2 tradeApiValidate",
            Step::Verify => "V limits",
        }
    }
}

/// An error envelope.
#[derive(Debug)]
pub struct NeoError {
    /// `errorCode`, `error[0].code` or `stCode`.
    pub code: Option<String>,
    /// The broker's message, truncated.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

/// A string or number field as text (Kotak sends codes both ways: `"10512"`, `1003`).
pub fn text(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(|s| s.trim().to_owned())
        .or_else(|| v.as_i64().map(|n| n.to_string()))
}

/// A JSON flag that is set: `true`, or the same sent as a string (`"true"`) or a number (`1`).
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

/// The error of a body, if it is one, in any of the three shapes; with none of them, an HTTP
/// status of 400 or more.
pub fn envelope_error(body: &serde_json::Value, status: u16) -> Option<NeoError> {
    if let Some(first) = body
        .get("error")
        .and_then(|e| e.as_array())
        .and_then(|a| a.first())
    {
        return Some(NeoError {
            code: first.get("code").and_then(text),
            message: broker_text(first).unwrap_or_default(),
            status,
        });
    }
    let login_error = str_field(body, "status").is_some_and(|s| s.eq_ignore_ascii_case("error"));
    let gateway_error = str_field(body, "stat").is_some_and(|s| !s.eq_ignore_ascii_case("ok"));
    let http_error = status >= 400 && body.get("data").is_none();
    (login_error || gateway_error || http_error).then(|| NeoError {
        code: ["errorCode", "stCode", "code"]
            .iter()
            .find_map(|k| body.get(*k).and_then(text)),
        message: broker_text(body).unwrap_or_default(),
        status,
    })
}

/// The shared triage; a 424 "Dependency error" is `broker_unavailable` retried after seconds.
pub fn triage(step: Step, resp: &HttpResponse) -> Option<ErrorOutput> {
    if resp.status == 424 {
        let mut e = ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!(
                "kotak-neo: {}: HTTP 424, dependency error at Kotak",
                step.name()
            ),
        );
        e.retry_after_ms = Some(http::retry_after_ms(resp, 5_000));
        return Some(e);
    }
    http::triage("kotak-neo", step.name(), resp)
}

/// The body, or the step's error.
pub fn ok_body(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
    if let Some(e) = triage(step, resp) {
        return Err(e);
    }
    // A 4xx whose body is not JSON (a gateway's bare `401`, a plain-text `403 Forbidden`): the
    // status alone classifies it, as kotak-neo.md's table does (401, 403, 422).
    if resp.status >= 400 && http::json(resp).is_none_or(|b| !b.is_object()) {
        return Err(classify(
            step,
            &NeoError {
                code: None,
                message: String::new(),
                status: resp.status,
            },
        ));
    }
    let body = http::json_object("kotak-neo", step.name(), resp)?;
    if let Some(e) = envelope_error(&body, resp.status) {
        return Err(classify(step, &e));
    }
    Ok(body)
}

/// A `protocol` failure.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "kotak-neo: {}: {what}; the login API may have changed",
            step.name()
        ),
    )
}

fn any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The class of a Kotak Neo error at `step`. At K1 the ambiguous 401 comes out as
/// `twofa_rejected`; the caller turns a second one into `invalid_credentials`.
pub fn classify(step: Step, e: &NeoError) -> ErrorOutput {
    let lower = e.message.to_ascii_lowercase();
    let code = e.code.as_deref().unwrap_or_default();
    let what = format!(
        "kotak-neo: {}: HTTP {}{}{}",
        step.name(),
        e.status,
        if code.is_empty() {
            String::new()
        } else {
            format!(" code {code}")
        },
        if e.message.is_empty() {
            String::new()
        } else {
            format!(": {}", e.message)
        }
    );
    let (class, advice) = if e.status == 429 || code == "429" {
        (ErrorClass::RateLimited, "")
    } else if any(&lower, &["lock", "block", "suspend"]) {
        (
            ErrorClass::AccountLocked,
            "; the account is blocked: unblock it with Kotak, then log in again",
        )
    } else if e.status == 403 {
        (
            ErrorClass::AppNotAuthorized,
            "; Kotak refused the app: check the API access token and the static IP registered in the Neo API dashboard",
        )
    } else if code == "10512" || e.status == 422 {
        (ErrorClass::Protocol, "; the request shape changed")
    } else if e.status >= 500 {
        (ErrorClass::BrokerUnavailable, "")
    } else {
        by_step(step, e, &lower)
    };
    let mut out = ErrorOutput::new(class, format!("{what}{advice}"));
    if class == ErrorClass::RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}

/// The classes that depend on the step: K1's ambiguous 401, K2's MPIN refusal.
fn by_step(step: Step, e: &NeoError, lower: &str) -> (ErrorClass, &'static str) {
    let token_words = ["access token", "token", "consumer", "authorization"];
    match step {
        Step::Login
            if any(lower, &["totp", "credential"]) || (e.status == 401 && lower.is_empty()) =>
        {
            (ErrorClass::TwofaRejected, "")
        }
        Step::Login if any(lower, &token_words) => (
            ErrorClass::AppNotAuthorized,
            "; API access token reset or invalid: copy it from the Neo API dashboard into api_key",
        ),
        Step::Login if any(lower, &["mobile", "ucc", "user"]) => (
            ErrorClass::InvalidCredentials,
            "; not retried: fix the mobile number or the UCC",
        ),
        Step::Login if e.status == 401 => (ErrorClass::TwofaRejected, ""),
        Step::Validate if any(lower, &["mpin", "pin"]) => (
            ErrorClass::InvalidCredentials,
            "; not retried: fix the MPIN (repeated failures lock the account)",
        ),
        Step::Validate if any(lower, &token_words) => (
            ErrorClass::AppNotAuthorized,
            "; API access token reset or invalid: copy it from the Neo API dashboard into api_key",
        ),
        Step::Validate if e.status == 401 => (
            ErrorClass::InvalidCredentials,
            "; not retried: fix the MPIN",
        ),
        _ => (ErrorClass::Protocol, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(step: Step, body: serde_json::Value, status: u16) -> ErrorClass {
        classify(step, &envelope_error(&body, status).expect("an error")).class
    }

    #[test]
    fn documented_errors_get_their_classes() {
        let login = |m: &str| json!({"status": "error", "message": m, "errorCode": "401"});
        assert_eq!(
            class(Step::Login, login("Invalid credentials or TOTP."), 401),
            ErrorClass::TwofaRejected
        );
        assert_eq!(
            class(Step::Login, login("Invalid access token"), 401),
            ErrorClass::AppNotAuthorized
        );
        assert_eq!(
            class(Step::Login, login("Invalid mobile number"), 400),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(
            class(Step::Login, login("User is blocked"), 401),
            ErrorClass::AccountLocked
        );
        assert_eq!(
            class(Step::Validate, login("Invalid MPIN."), 401),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(
            class(
                Step::Login,
                json!({"error": [{"code": "10512", "message": "Required header not found."}]}),
                400
            ),
            ErrorClass::Protocol
        );
        assert_eq!(
            class(Step::Login, json!({"message": "Forbidden"}), 403),
            ErrorClass::AppNotAuthorized
        );
        assert_eq!(
            class(Step::Login, json!({"message": "Too many requests"}), 429),
            ErrorClass::RateLimited
        );
        assert_eq!(
            class(
                Step::Verify,
                json!({"stat": "Not_Ok", "stCode": 5000, "emsg": "x"}),
                200
            ),
            ErrorClass::Protocol
        );
        assert_eq!(
            class(Step::Validate, json!({"message": "Invalid MPIN."}), 401),
            ErrorClass::InvalidCredentials
        );
        assert!(truthy(&json!("true")) && truthy(&json!(true)) && truthy(&json!(1)));
        assert!(!truthy(&json!("false")) && !truthy(&json!(false)) && !truthy(&json!(null)));
        assert!(envelope_error(&json!({"data": {"status": "success"}}), 200).is_none());
        assert!(envelope_error(&json!({"stat": "Ok", "stCode": 200}), 200).is_none());
    }
}
