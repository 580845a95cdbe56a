//! Kite's error envelope and how each failure maps to an error class (kite.md, tokenbot.md).

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text, str_field};

/// Which request failed: the same envelope means different things at different steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// S1 `GET /connect/login`.
    ConnectLogin,
    /// S2 `POST /api/login` (the password).
    Password,
    /// S3 `POST /api/twofa` (the TOTP).
    Twofa,
    /// S4 `GET /connect/finish` and its hops.
    Finish,
    /// S5 `POST /session/token`.
    SessionToken,
    /// S6 `GET /user/profile`.
    Profile,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::ConnectLogin => "S1 /connect/login",
            Step::Password => "S2 /api/login",
            Step::Twofa => "S3 /api/twofa",
            Step::Finish => "S4 /connect/finish",
            Step::SessionToken => "S5 /session/token",
            Step::Profile => "S6 /user/profile",
        }
    }
}

/// A JSON error envelope: `status == "error"` or an `error_type`, whatever the HTTP status.
pub struct KiteError {
    /// `error_type`, e.g. `TwoFAException`; empty when absent.
    pub error_type: String,
    /// The broker's message.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

/// The `data` of a success envelope, or the step's error.
pub fn data(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
    if let Some(e) = http::triage("kite", step.name(), resp) {
        return Err(e);
    }
    let body = http::json_object("kite", step.name(), resp)?;
    if let Some(error) = envelope_error(&body, resp.status) {
        return Err(classify(step, &error));
    }
    // A success without `data` (S3 needs none) is read as `data: null`.
    if resp.status < 300 && body.get("status").and_then(|s| s.as_str()) == Some("success") {
        return Ok(body.get("data").cloned().unwrap_or_default());
    }
    Err(protocol(step, "an unexpected response shape"))
}

/// The error of an envelope, if it is one.
pub fn envelope_error(body: &serde_json::Value, status: u16) -> Option<KiteError> {
    let is_error =
        str_field(body, "status") == Some("error") || str_field(body, "error_type").is_some();
    is_error.then(|| KiteError {
        error_type: str_field(body, "error_type").unwrap_or_default().to_owned(),
        message: broker_text(body).unwrap_or_default(),
        status,
    })
}

/// A `protocol` failure: the broker answered something this strategy does not understand.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "kite: {}: {what}; the login flow may have changed",
            step.name()
        ),
    )
}

fn contains_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Whether the text says the account is blocked (5 wrong passwords or codes block it, kite.md).
fn says_locked(message: &str) -> bool {
    contains_any(
        message,
        &[
            "blocked",
            "locked",
            "frozen",
            "suspended",
            "deactivated",
            "disabled",
        ],
    )
}

/// The class of a Kite error at `step`.
pub fn classify(step: Step, e: &KiteError) -> ErrorOutput {
    let lower = e.message.to_ascii_lowercase();
    let quoted = if e.message.is_empty() {
        String::new()
    } else {
        format!(": {}", e.message)
    };
    let what = format!(
        "kite: {}: {} {}{quoted}",
        step.name(),
        e.status,
        if e.error_type.is_empty() {
            "error"
        } else {
            e.error_type.as_str()
        },
    );
    let (class, advice) = if e.status == 429 || lower.contains("too many requests") {
        (ErrorClass::RateLimited, "")
    } else if says_locked(&lower) {
        (
            ErrorClass::AccountLocked,
            "; the account is blocked: reset the password on Kite, then update the credentials",
        )
    } else {
        match (step, e.error_type.as_str()) {
            (Step::Twofa, "TwoFAException")
                if lower.contains("session")
                    && contains_any(&lower, &["expired", "doesn't exist", "does not exist"]) =>
            {
                (
                    ErrorClass::AutomationBlocked,
                    "; Kite refused the headless session after the code: use assisted login",
                )
            }
            (Step::Twofa, "TwoFAException" | "InputException") => (ErrorClass::TwofaRejected, ""),
            (
                Step::Password,
                "InputException" | "UserException" | "TwoFAException" | "TokenException",
            ) => (
                ErrorClass::InvalidCredentials,
                "; not retried: fix the user id or password (5 failures block the account)",
            ),
            (Step::ConnectLogin, "InputException" | "PermissionException" | "TokenException") => {
                (ErrorClass::InvalidCredentials, "; check the api_key")
            }
            (Step::SessionToken, _) if lower.contains("checksum") || lower.contains("api_key") => (
                ErrorClass::InvalidCredentials,
                "; check the api_key and api_secret",
            ),
            (_, "PermissionException") => (ErrorClass::AppNotAuthorized, ""),
            (_, "NetworkException") => (ErrorClass::BrokerUnavailable, ""),
            _ => (ErrorClass::Protocol, ""),
        }
    };
    let mut out = ErrorOutput::new(class, format!("{what}{advice}"));
    if class == ErrorClass::RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}
