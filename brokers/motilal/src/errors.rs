//! Motilal's `status`/`message`/`errorcode` envelope and how each failure maps to an error class
//! (motilal.md, "Errors and classes"): by `errorcode` first, then by message keywords, since the
//! full code list is not public.

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, truncate};

/// Which request failed: the same code means different things at different steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// M1 `authdirectapi` (password, 2FA and TOTP in one request).
    Login,
    /// M2 `getaccesstoken` (optional, needs the API secret).
    AccessToken,
    /// V `getprofile`.
    Profile,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Login => "M1 authdirectapi",
            Step::AccessToken => "M2 getaccesstoken",
            Step::Profile => "V getprofile",
        }
    }
}

/// A failure Motilal reported in its envelope.
#[derive(Clone, Debug)]
pub struct MotilalError {
    /// `errorcode` (`MO1093`, ...), uppercased; empty when absent.
    pub code: String,
    /// The broker's `message`, truncated.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

impl MotilalError {
    /// Whether the profile call says the session is not (or no longer) valid.
    pub fn is_session_refusal(&self) -> bool {
        let lower = self.message.to_ascii_lowercase();
        matches!(self.code.as_str(), "MO8003" | "MO1100")
            || self.status == 401
            || ((lower.contains("session") || lower.contains("token"))
                && contains_any(&lower, &["invalid", "not valid", "expired"]))
            || lower.contains("not verified")
    }
}

/// A non-empty string field by case-insensitive name (`status`, `Status`, `errorCode`, ...).
pub fn str_ci<'v>(body: &'v serde_json::Value, name: &str) -> Option<&'v str> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether the envelope is a success: `status == "SUCCESS"` (any case). The failure value of
/// `status` is not documented, so anything else is a failure.
pub fn is_success(body: &serde_json::Value) -> bool {
    str_ci(body, "status").is_some_and(|s| s.eq_ignore_ascii_case("success"))
}

/// The error an envelope carries, or `None` for a success.
pub fn envelope_error(body: &serde_json::Value, status: u16) -> Option<MotilalError> {
    if is_success(body) && status < 400 {
        return None;
    }
    let code = str_ci(body, "errorcode")
        .unwrap_or_default()
        .to_ascii_uppercase();
    let message = ["message", "description"]
        .iter()
        .find_map(|k| str_ci(body, k))
        .map(|m| truncate(m, 200))
        .unwrap_or_default();
    Some(MotilalError {
        code,
        message,
        status,
    })
}

/// The success body of `resp` (a JSON object whatever its content type), or the step's error.
/// `Err(Ok(e))`: Motilal answered a failure envelope; `Err(Err(o))`: transport-level trouble
/// (429, 5xx, HTML, not JSON).
pub fn envelope(
    step: Step,
    resp: &HttpResponse,
) -> Result<serde_json::Value, Result<MotilalError, ErrorOutput>> {
    if let Some(e) = http::triage("motilal", step.name(), resp) {
        return Err(Err(e));
    }
    if matches!(resp.status, 401 | 403) && http::json(resp).is_none() {
        // A gateway's or WAF's refusal in plain text, not Motilal's envelope.
        return Err(Err(ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!(
                "motilal: {}: HTTP {} with a plain-text body (a gateway refusal): check that \
                 the egress IP is the one registered with Motilal, then back off",
                step.name(),
                resp.status
            ),
        )));
    }
    let body = http::json_object("motilal", step.name(), resp).map_err(Err)?;
    // The doc says to decide failures on `errorcode` + `message`, never on the failure value of
    // `status`: an answer that leaves `status` out but names an `errorcode` is that error. With
    // neither, the answer is not understood.
    if str_ci(&body, "status").is_none()
        && str_ci(&body, "errorcode").is_none()
        && resp.status < 400
    {
        return Err(Err(protocol(step, "a JSON answer without `status`")));
    }
    match envelope_error(&body, resp.status) {
        None => Ok(body),
        Some(e) => Err(Ok(e)),
    }
}

/// A `protocol` failure: Motilal answered something this strategy does not understand.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("motilal: {}: {what}; the API may have changed", step.name()),
    )
}

fn contains_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The class of a Motilal error at `step`, with advice for the operator.
fn class_of(step: Step, e: &MotilalError) -> (ErrorClass, &'static str) {
    let lower = e.message.to_ascii_lowercase();
    match e.code.as_str() {
        "MO1093" => {
            return (
                ErrorClass::TwofaRejected,
                "check the TOTP secret and the host clock",
            );
        }
        "MO1007" => {
            return (
                ErrorClass::InvalidCredentials,
                "not retried: fix dob_or_pan (DD/MM/YYYY or PAN)",
            );
        }
        "MO2035" => {
            return (
                ErrorClass::AppNotAuthorized,
                "register this IP with Motilal and set [brokers.motilal] client_public_ip to it",
            );
        }
        "MO2005" => return (ErrorClass::AppNotAuthorized, "Motilal rejected the api_key"),
        _ => {}
    }
    if e.status == 429 || lower.contains("too many") {
        return (ErrorClass::RateLimited, "");
    }
    if contains_any(&lower, &["lock", "block", "disable", "suspend"]) {
        return (
            ErrorClass::AccountLocked,
            "the account is blocked: unlock it with Motilal, then update the credentials",
        );
    }
    if lower.contains("ip") && contains_any(&lower, &["unauthori", "not allowed", "not registered"])
    {
        return (
            ErrorClass::AppNotAuthorized,
            "register this IP with Motilal and set [brokers.motilal] client_public_ip to it",
        );
    }
    if lower.contains("apikey") || lower.contains("api key") {
        return (ErrorClass::AppNotAuthorized, "check the api_key");
    }
    match step {
        Step::Login if lower.contains("totp") && !lower.contains("password") => (
            ErrorClass::TwofaRejected,
            "check the TOTP secret and the host clock",
        ),
        Step::Login if contains_any(&lower, &["password", "invalid user", "client"]) => (
            ErrorClass::InvalidCredentials,
            "not retried: fix the client code or password",
        ),
        Step::AccessToken if lower.contains("secret") => {
            (ErrorClass::InvalidCredentials, "check the api_secret")
        }
        _ if e.status >= 500 => (ErrorClass::BrokerUnavailable, ""),
        _ => (
            ErrorClass::Protocol,
            "an answer this strategy does not know",
        ),
    }
}

/// The error output of a Motilal error at `step`. Quotes only the broker's short text.
pub fn classify(step: Step, e: &MotilalError) -> ErrorOutput {
    let (class, advice) = class_of(step, e);
    let code = if e.code.is_empty() {
        String::new()
    } else {
        format!(" {}", e.code)
    };
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
            "motilal: {}: HTTP {}{code}{text}{advice}",
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
    use serde_json::json;

    fn err(code: &str, message: &str) -> MotilalError {
        envelope_error(
            &json!({"status": "FAILED", "message": message, "errorcode": code}),
            200,
        )
        .unwrap()
    }

    #[test]
    fn documented_codes_map_to_their_classes() {
        let cases = [
            ("MO1093", "Invalid TOTP", ErrorClass::TwofaRejected),
            ("MO1007", "Invalid 2FA", ErrorClass::InvalidCredentials),
            (
                "MO2035",
                "Unauthorized IP Address",
                ErrorClass::AppNotAuthorized,
            ),
            ("mo2005", "Invalid ApiKey", ErrorClass::AppNotAuthorized),
            (
                "",
                "Invalid Userid or Password",
                ErrorClass::InvalidCredentials,
            ),
            (
                "MO9999",
                "Your account is locked",
                ErrorClass::AccountLocked,
            ),
            ("", "Client Blocked", ErrorClass::AccountLocked),
        ];
        for (code, message, class) in cases {
            assert_eq!(
                classify(Step::Login, &err(code, message)).class,
                class,
                "{code} {message}"
            );
        }
        assert_eq!(
            classify(Step::Profile, &err("MO0000", "something new")).class,
            ErrorClass::Protocol
        );
        assert!(err("MO8003", "Session not valid").is_session_refusal());
        assert!(!err("MO1007", "Invalid 2FA").is_session_refusal());
        assert!(err("MO9001", "Auth Token Expired").is_session_refusal());
        assert!(!err("MO1093", "Invalid TOTP").is_session_refusal());
    }

    #[test]
    fn success_needs_status_success_whatever_else_is_there() {
        assert!(envelope_error(&json!({"status": "SUCCESS", "errorcode": ""}), 200).is_none());
        assert!(envelope_error(&json!({"status": "success"}), 200).is_none());
        assert!(envelope_error(&json!({"status": "FAILED"}), 200).is_some());
        assert!(envelope_error(&json!({"status": "ERROR", "errorcode": "MO1093"}), 200).is_some());
        assert!(envelope_error(&json!({"Status": "SUCCESS", "ErrorCode": null}), 200).is_none());
        let bare = envelope_error(
            &json!({"message": "Invalid TOTP", "errorCode": "mo1093"}),
            200,
        );
        assert_eq!(bare.unwrap().code, "MO1093");
    }
}
