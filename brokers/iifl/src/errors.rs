//! IIFL Capital's answers and their error classes. The error body shape is not documented
//! (iifl.md: `{"status":"Not_Ok","message":...}` inferred, 4xx with `message` seen), so the EC code
//! is looked for in every field that might carry it.

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text, str_field};

/// The request an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Portal `client/verify`.
    ClientVerify,
    /// Portal `client/enckey`.
    EncKey,
    /// Portal `v1/pwd/validate` (the password).
    Password,
    /// Portal `topt/verify` (the TOTP).
    Totp,
    /// API `getusersession`.
    UserSession,
    /// API `profile`.
    Profile,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::ClientVerify => "portal client/verify",
            Step::EncKey => "portal client/enckey",
            Step::Password => "portal pwd/validate",
            Step::Totp => "portal topt/verify",
            Step::UserSession => "getusersession",
            Step::Profile => "profile",
        }
    }
}

/// A failure IIFL reported in its body.
pub struct IiflError {
    /// `ECnnn`, when any field carries one.
    pub code: Option<String>,
    /// The broker's text.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

/// The first `EC` followed by three digits in `text`.
fn ec_code(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(4)).find_map(|i| {
        (b[i].eq_ignore_ascii_case(&b'E')
            && b[i + 1].eq_ignore_ascii_case(&b'C')
            && b[i + 2..i + 5].iter().all(u8::is_ascii_digit)
            && b.get(i + 5).is_none_or(|c| !c.is_ascii_digit()))
        .then(|| format!("EC{}", &text[i + 2..i + 5]))
    })
}

/// Whether the body is a success (`status` "Ok", any case).
pub fn is_ok(body: &serde_json::Value) -> bool {
    str_field(body, "status").is_some_and(|s| s.eq_ignore_ascii_case("ok"))
}

/// The error a body carries, or `None` for a success.
pub fn body_error(body: &serde_json::Value, status: u16) -> Option<IiflError> {
    if is_ok(body) && status < 400 {
        return None;
    }
    let code = [
        "code",
        "errorCode",
        "error_code",
        "status",
        "stat",
        "message",
        "emsg",
        "description",
    ]
    .iter()
    .filter_map(|k| str_field(body, k))
    .find_map(ec_code);
    Some(IiflError {
        code,
        message: broker_text(body).unwrap_or_default(),
        status,
    })
}

/// The success body of `resp`, or the step's error.
pub fn ok_body(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
    if let Some(e) = http::triage("iifl", step.name(), resp) {
        return Err(e);
    }
    let body = http::json_object("iifl", step.name(), resp)?;
    match body_error(&body, resp.status) {
        None => Ok(body),
        Some(e) => Err(classify(step, &e)),
    }
}

/// A `protocol` failure.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "iifl: {}: {what}; the login flow may have changed",
            step.name()
        ),
    )
}

/// The class of an IIFL error at `step` (EC codes of iifl.md first, then the text).
pub fn classify(step: Step, e: &IiflError) -> ErrorOutput {
    let lower = e.message.to_ascii_lowercase();
    let (class, advice) = match e.code.as_deref() {
        Some("EC016") => (
            ErrorClass::InvalidCredentials,
            "not retried: fix the client id or password",
        ),
        Some("EC034") => (
            ErrorClass::Protocol,
            "IIFL did not see the TOTP that was sent",
        ),
        Some("EC036") => (
            ErrorClass::TwofaRejected,
            "check the TOTP secret and the host clock",
        ),
        Some("EC043") => (
            ErrorClass::TwofaUnavailable,
            "enable TOTP on the IIFL account, or use assisted login",
        ),
        Some("EC044") => (
            ErrorClass::Protocol,
            "a token IIFL had just issued was refused",
        ),
        Some("EC053" | "EC054") => (ErrorClass::InvalidCredentials, "check the api_key (appKey)"),
        Some("EC055") => (
            ErrorClass::AppNotAuthorized,
            "authorize the application once in a browser (assisted login)",
        ),
        Some("EC069") => (
            ErrorClass::InvalidCredentials,
            "the password expired: change it at IIFL, then update it here",
        ),
        Some("EC081") => (
            ErrorClass::AccountLocked,
            "the account is frozen: contact IIFL",
        ),
        Some("EC500") => (
            ErrorClass::AppNotAuthorized,
            "register this server's static IPv4 address with the app, or set ipv4_only = true for this broker",
        ),
        // iifl.md: at topt/verify EC003 answers a wrong Authorization form; it looks retryable
        // but is not, and a retry would burn a TOTP step for nothing.
        Some("EC003") if step == Step::Totp => (
            ErrorClass::Protocol,
            "at this step EC003 most likely means the portal wants the other Authorization \
             form: set [brokers.iifl] totp_auth_header = \"plain\" (or back to \"web\")",
        ),
        Some("EC003") => (ErrorClass::BrokerUnavailable, "IIFL asks to retry"),
        Some(_) => (
            ErrorClass::Protocol,
            "an error code this strategy does not know",
        ),
        None if e.status == 429 || lower.contains("too many") => (ErrorClass::RateLimited, ""),
        None if ["blocked", "frozen", "locked", "suspended"]
            .iter()
            .any(|w| lower.contains(w)) =>
        {
            (ErrorClass::AccountLocked, "")
        }
        None => match step {
            Step::Password => (
                ErrorClass::InvalidCredentials,
                "not retried: fix the client id or password",
            ),
            Step::Totp if lower.contains("otp") => (ErrorClass::TwofaRejected, ""),
            Step::UserSession if lower.contains("checksum") => {
                (ErrorClass::InvalidCredentials, "check the api_secret")
            }
            _ => (ErrorClass::Protocol, ""),
        },
    };
    let code = e
        .code
        .as_deref()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    let text = if e.message.is_empty() {
        String::new()
    } else {
        format!(": {}", e.message)
    };
    let advice = if advice.is_empty() {
        String::new()
    } else {
        format!("; {advice}")
    };
    let mut out = ErrorOutput::new(
        class,
        format!(
            "iifl: {}: HTTP {}{code}{text}{advice}",
            step.name(),
            e.status
        ),
    );
    if class == ErrorClass::RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ec_codes_anywhere() {
        assert_eq!(ec_code("EC016"), Some("EC016".into()));
        assert_eq!(ec_code("EC044 : Token is not valid"), Some("EC044".into()));
        assert_eq!(ec_code("error ec500: ip"), Some("EC500".into()));
        assert_eq!(ec_code("EC0161"), None);
        assert_eq!(ec_code("Not_Ok"), None);
    }
}
