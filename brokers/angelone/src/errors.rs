//! Angel One's two error dialects and how each answer maps to an error class (angelone.md, "Error
//! codes"). Classification reads the body, never the HTTP status alone: business errors come
//! back as HTTP 200 with `status:false`, rate limiting as a plain-text 403, a WAF as HTML.

use std::cell::Cell;

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text, str_field};

/// Which request an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A1 `loginByPassword` (MPIN and TOTP in one request).
    Login,
    /// A2 `getProfile`.
    Profile,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Login => "A1 loginByPassword",
            Step::Profile => "A2 getProfile",
        }
    }
}

/// Wait after a plain-text "exceeding access rate" 403: the limits are per second.
pub const RATE_RETRY_MS: u64 = 1_000;
/// Wait after `AB1004` (angelone.md: one retry after 60 s).
pub const AB1004_RETRY_MS: u64 = 60_000;

/// A failure Angel One reported in a JSON body (dialect A or B).
#[derive(Debug)]
pub struct AngelError {
    /// `errorcode` or `errorCode`; empty when absent.
    pub code: String,
    /// The broker's short text.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

/// How an answer that is not a success ends.
pub enum Failure {
    /// The access token is dead or absent (`AG8001`-`AG8003`, `AB1010`, `AB1011`): re-login.
    TokenInvalid(AngelError),
    /// Any other failure, classified.
    Other(ErrorOutput),
}

impl Failure {
    /// The failure as an output, a dead token being `protocol` (right after A1 it means the
    /// login did not stick).
    pub fn into_output(self, step: Step) -> ErrorOutput {
        match self {
            Failure::TokenInvalid(e) => protocol(
                step,
                &format!(
                    "the fresh token was refused ({} {})",
                    e.code,
                    quote(&e.message)
                ),
            ),
            Failure::Other(e) => e,
        }
    }
}

/// Counts HTML pages within one call: the first is pressure (`rate_limited`, 300 s), a second
/// one in a row is `automation_blocked` (angelone.md).
#[derive(Debug, Default)]
pub struct WafSeen(Cell<u32>);

/// Whether `status` is `true` or `"true"` (the docs sample writes booleans as strings).
fn is_true(value: Option<&serde_json::Value>) -> bool {
    match value {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The `data` of a success, or the failure. Success iff HTTP 2xx, a JSON content type and
/// `status` true (angelone.md "Decision rule").
pub fn data(
    step: Step,
    resp: &HttpResponse,
    waf: &WafSeen,
    waf_retry_ms: u64,
) -> Result<serde_json::Value, Failure> {
    let Some(body) = http::json(resp).filter(serde_json::Value::is_object) else {
        return Err(Failure::Other(non_json(step, resp, waf, waf_retry_ms)));
    };
    let json_type = resp
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if (200..300).contains(&resp.status) && is_true(body.get("status")) {
        if !json_type {
            return Err(Failure::Other(protocol(
                step,
                "a success served without a JSON content type",
            )));
        }
        return Ok(body.get("data").cloned().unwrap_or_default());
    }
    let error = AngelError {
        code: str_field(&body, "errorcode")
            .or_else(|| str_field(&body, "errorCode"))
            .unwrap_or_default()
            .to_owned(),
        message: broker_text(&body).unwrap_or_default(),
        status: resp.status,
    };
    if matches!(
        error.code.as_str(),
        "AG8001" | "AG8002" | "AG8003" | "AB1010" | "AB1011"
    ) {
        return Err(Failure::TokenInvalid(error));
    }
    // The limiter's text inside a JSON body (`{"message":"Access denied because of exceeding
    // access rate"}`) is still the limiter, not an unknown answer.
    if error.code.is_empty()
        && matches!(resp.status, 403 | 429)
        && says_rate(&error.message.to_ascii_lowercase())
    {
        return Err(Failure::Other(rate_limited(step, resp)));
    }
    if let Some(e) = http::triage("angelone", step.name(), resp) {
        // 429 or a JSON 5xx without a code we know.
        if error.code.is_empty() {
            return Err(Failure::Other(e));
        }
    }
    Err(Failure::Other(classify(step, &error)))
}

/// A body that is not a JSON object: plain-text rate limiting, an HTML WAF page, an outage.
fn non_json(step: Step, resp: &HttpResponse, waf: &WafSeen, waf_retry_ms: u64) -> ErrorOutput {
    let name = step.name();
    let lower = resp.body.to_ascii_lowercase();
    // The limiter's plain text, whatever content type frames it: servers that write a bare string
    // (Express `res.send`, Flask) label it `text/html`; markup is a WAF page, not this text.
    if matches!(resp.status, 403 | 429)
        && !resp.body.trim_start().starts_with('<')
        && says_rate(&lower)
    {
        return rate_limited(step, resp);
    }
    if resp.status == 415 {
        return protocol(step, "HTTP 415: the request was not JSON");
    }
    if resp.status >= 500 {
        return ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!(
                "angelone: {name}: HTTP {} without JSON: an outage",
                resp.status
            ),
        );
    }
    if http::is_html(resp) {
        let seen = waf.0.get() + 1;
        waf.0.set(seen);
        if seen > 1 {
            return ErrorOutput::new(
                ErrorClass::AutomationBlocked,
                format!(
                    "angelone: {name}: HTTP {} with an HTML page again (a WAF \"Request Rejected\"): \
                     use assisted login",
                    resp.status
                ),
            );
        }
        let mut e = ErrorOutput::new(
            ErrorClass::RateLimited,
            format!(
                "angelone: {name}: HTTP {} with an HTML page (a WAF \"Request Rejected\"); backing off",
                resp.status
            ),
        );
        e.retry_after_ms = Some(waf_retry_ms);
        return e;
    }
    if let Some(e) = http::triage("angelone", name, resp) {
        return e;
    }
    ErrorOutput::new(
        ErrorClass::BrokerUnavailable,
        format!(
            "angelone: {name}: HTTP {} with a body that is not JSON",
            resp.status
        ),
    )
}

/// Whether a (lower-cased) text is the limiter's "Access denied because of exceeding access rate"
/// (docs/RateLimit: "... exceeding rate limit").
fn says_rate(lower: &str) -> bool {
    lower.contains("exceeding") && (lower.contains("rate") || lower.contains("limit"))
}

/// The rate limiter's answer: limits are per second, so a short wait (or the `Retry-After`).
fn rate_limited(step: Step, resp: &HttpResponse) -> ErrorOutput {
    let mut e = ErrorOutput::new(
        ErrorClass::RateLimited,
        format!(
            "angelone: {}: HTTP {}, access denied for exceeding the access rate",
            step.name(),
            resp.status
        ),
    );
    e.retry_after_ms = Some(http::retry_after_ms(resp, RATE_RETRY_MS).max(RATE_RETRY_MS));
    e
}

/// A `protocol` failure.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "angelone: {}: {what}; the login API may have changed",
            step.name()
        ),
    )
}

fn quote(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!("\"{message}\"")
    }
}

/// Whether the text says the account is blocked.
fn says_blocked(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["block", "lock", "suspend"]
        .iter()
        .any(|w| lower.contains(w))
}

/// The class of a coded Angel One error (the table of angelone.md).
pub fn classify(step: Step, e: &AngelError) -> ErrorOutput {
    use ErrorClass::*;
    let (class, advice) = match e.code.as_str() {
        "AB1050" => (TwofaRejected, ""),
        "AB1007" | "AB1006" if e.code == "AB1006" || says_blocked(&e.message) => (
            AccountLocked,
            "; the account is blocked: unblock it with Angel One, then log in again",
        ),
        "AB1007" | "AB1000" | "AB1001" | "AB1002" | "AB1032" => (
            InvalidCredentials,
            "; not retried: fix the client code or the MPIN (`pin`)",
        ),
        "AB7001" => (
            InvalidCredentials,
            "; not retried: put the 4-digit MPIN in the `pin` field (the web password is not accepted)",
        ),
        "AG8004" => (
            InvalidCredentials,
            "; check the api_key (the SmartAPI app's key)",
        ),
        "AB1005" => (Protocol, "; our X-UserType header was refused"),
        "AB1004" => (
            BrokerUnavailable,
            "; if it persists, check the client code (an e-mail is not a client code)",
        ),
        "AB2000" | "AB2001" => (BrokerUnavailable, ""),
        _ if e.status >= 500 => (BrokerUnavailable, ""),
        _ => (Protocol, "; an answer this strategy does not know"),
    };
    let code = if e.code.is_empty() {
        "no code"
    } else {
        e.code.as_str()
    };
    let mut out = ErrorOutput::new(
        class,
        format!(
            "angelone: {}: HTTP {} {code} {}{advice}",
            step.name(),
            e.status,
            quote(&e.message)
        ),
    );
    if e.code == "AB1004" {
        out.retry_after_ms = Some(AB1004_RETRY_MS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_api::wire::WIRE_VERSION;

    fn resp(status: u16, ct: &str, body: &str) -> HttpResponse {
        HttpResponse {
            v: WIRE_VERSION,
            status,
            url: "https://apiconnect.angelone.in/".into(),
            headers: vec![["content-type".into(), ct.into()]],
            body: body.into(),
        }
    }

    fn class(r: &HttpResponse, waf: &WafSeen) -> ErrorClass {
        match data(Step::Login, r, waf, 300_000) {
            Ok(_) => panic!("a success"),
            Err(Failure::TokenInvalid(_)) => ErrorClass::Unknown,
            Err(Failure::Other(e)) => e.class,
        }
    }

    #[test]
    fn both_dialects_and_string_booleans() {
        let waf = WafSeen::default();
        let ok = resp(
            200,
            "application/json",
            r#"{"status":"true","message":"SUCCESS","errorcode":"","data":{"jwtToken":"x"}}"#,
        );
        assert!(data(Step::Login, &ok, &waf, 1).is_ok());
        let totp = resp(
            200,
            "application/json",
            r#"{"status":"false","message":"Invalid totp","errorcode":"AB1050","data":"null"}"#,
        );
        assert_eq!(class(&totp, &waf), ErrorClass::TwofaRejected);
        let gw = resp(
            401,
            "application/json",
            r#"{"success":false,"message":"Invalid Token","errorCode":"AG8001","data":""}"#,
        );
        assert!(matches!(
            data(Step::Profile, &gw, &waf, 1),
            Err(Failure::TokenInvalid(_))
        ));
        let blocked = resp(
            200,
            "application/json",
            r#"{"status":false,"message":"USER IS BLOCKED FOR TRADING","errorcode":"AB1007"}"#,
        );
        assert_eq!(class(&blocked, &waf), ErrorClass::AccountLocked);
        let wrong = resp(
            200,
            "application/json",
            r#"{"status":false,"message":"YOUR USER ID OR PASSWORD IS INVALID","errorcode":"AB1007"}"#,
        );
        assert_eq!(class(&wrong, &waf), ErrorClass::InvalidCredentials);
        // A success served as text/html breaks the decision rule.
        let html_ok = resp(200, "text/html", r#"{"status":true,"data":{}}"#);
        assert_eq!(class(&html_ok, &waf), ErrorClass::Protocol);
    }

    #[test]
    fn rate_limit_waf_and_outage() {
        let waf = WafSeen::default();
        let rate = resp(
            403,
            "text/plain",
            "Access denied because of exceeding access rate",
        );
        assert_eq!(class(&rate, &waf), ErrorClass::RateLimited);
        // The same text labelled text/html (a bare string from Express or Flask), or as JSON:
        // still the limiter with its short wait, never a WAF page counting towards a block.
        let waf_free = WafSeen::default();
        for (ct, body) in [
            (
                "text/html; charset=utf-8",
                "Access denied because of exceeding access rate",
            ),
            (
                "application/json",
                r#"{"message":"Access denied because of exceeding access rate"}"#,
            ),
            (
                "text/plain",
                "403 Access denied because of exceeding rate limit",
            ),
        ] {
            for _ in 0..2 {
                let Err(Failure::Other(e)) =
                    data(Step::Login, &resp(403, ct, body), &waf_free, 300_000)
                else {
                    panic!("{ct}")
                };
                assert_eq!(e.class, ErrorClass::RateLimited, "{ct}");
                assert_eq!(e.retry_after_ms, Some(RATE_RETRY_MS), "{ct}");
            }
        }
        let page = resp(
            200,
            "text/html",
            "<html><head><title>Request Rejected</title></head></html>",
        );
        assert_eq!(class(&page, &waf), ErrorClass::RateLimited);
        assert_eq!(class(&page, &waf), ErrorClass::AutomationBlocked);
        let down = resp(502, "text/plain", "Bad Gateway");
        assert_eq!(
            class(&down, &WafSeen::default()),
            ErrorClass::BrokerUnavailable
        );
        let json_down = resp(
            200,
            "application/json",
            r#"{"status":false,"message":"Something Went Wrong, Please Try After Sometime","errorcode":"AB1004"}"#,
        );
        let Err(Failure::Other(e)) = data(Step::Login, &json_down, &waf, 1) else {
            panic!()
        };
        assert_eq!(e.class, ErrorClass::BrokerUnavailable);
        assert_eq!(e.retry_after_ms, Some(AB1004_RETRY_MS));
    }
}
