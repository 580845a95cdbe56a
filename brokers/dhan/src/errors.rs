//! Dhan's answers and their error classes (dhan.md). The auth host answers failures as HTTP 200
//! (or 4xx) `{"status":"error","message":...}` with texts that are mostly undocumented, so they
//! are classified by dhan.md's ordered text rules; the API host uses `DH-9xx` codes.

use std::cell::Cell;

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, broker_text, str_field};

/// Which request an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// D1 `generateAccessToken` (PIN and TOTP in the query).
    Mint,
    /// D2 `profile`.
    Profile,
    /// C1 `generate-consent`.
    Consent,
    /// C3 `consumeApp-consent`.
    Consume,
}

impl Step {
    /// Name used in messages (never the URL: D1's carries the PIN).
    pub fn name(self) -> &'static str {
        match self {
            Step::Mint => "D1 generateAccessToken",
            Step::Profile => "D2 profile",
            Step::Consent => "C1 generate-consent",
            Step::Consume => "C3 consumeApp-consent",
        }
    }
}

/// Counts HTML 403 pages within one call: the first is `rate_limited`, a repeat is
/// `automation_blocked` (dhan.md [INF]).
#[derive(Debug, Default)]
pub struct WafSeen(Cell<u32>);

/// Waits the strategy applies, from the operator's settings.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// After an HTML 403.
    pub waf_ms: u64,
    /// After a throttle text that names no duration.
    pub throttle_ms: u64,
}

fn lower_has(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The wait a text like "Token can be generated once every 2 minutes." names, in ms.
pub fn wait_in_text(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|pair| {
        let n: u64 = pair[0].parse().ok()?;
        let unit = match pair[1] {
            u if u.starts_with("sec") => 1_000,
            u if u.starts_with("min") => 60_000,
            u if u.starts_with("hour") || u == "hr" || u == "hrs" => 3_600_000,
            _ => return None,
        };
        Some(n.saturating_mul(unit))
    })
}

/// A `protocol` failure.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "dhan: {}: {what}; the login API may have changed",
            step.name()
        ),
    )
}

/// The class of an auth-host failure text, by dhan.md's ordered rules.
pub fn classify_text(step: Step, status: u16, message: &str, waits: Waits) -> ErrorOutput {
    use ErrorClass::*;
    let lower = message.to_ascii_lowercase();
    let (class, advice) = if lower_has(&lower, &["once every", "try after"]) {
        (
            RateLimited,
            "; Dhan mints one token per account every 2 minutes",
        )
    } else if lower.contains("totp")
        && lower_has(&lower, &["not enabled", "not set", "setup", "enable"])
    {
        (
            TwofaUnavailable,
            "; set up TOTP on Dhan Web (Profile > Access DhanHQ APIs > Setup TOTP)",
        )
    } else if lower_has(&lower, &["totp", "otp"]) {
        (TwofaRejected, "")
    } else if lower_has(&lower, &["block", "lock", "suspend", "disabled"]) {
        (
            AccountLocked,
            "; the account is blocked: reset the PIN on Dhan, then log in again",
        )
    } else if lower_has(
        &lower,
        &[
            "pin",
            "client",
            "password",
            "credential",
            "invalid user",
            "app_id",
            "secret",
        ],
    ) {
        (
            InvalidCredentials,
            "; not retried: fix the client id, the PIN (`pin`) or the API key and secret",
        )
    } else if status >= 500 {
        (BrokerUnavailable, "")
    } else {
        (Protocol, "; an answer this strategy does not know")
    };
    let quoted = if message.is_empty() {
        "no message".to_owned()
    } else {
        format!("\"{}\"", http::truncate(message, 200))
    };
    let mut out = ErrorOutput::new(
        class,
        format!("dhan: {}: HTTP {status} {quoted}{advice}", step.name()),
    );
    if class == RateLimited {
        out.retry_after_ms = Some(wait_in_text(message).unwrap_or(waits.throttle_ms));
    }
    out
}

/// An auth-host answer as a JSON object, or its failure when it is not JSON (HTML 403, 5xx, 429).
pub fn auth_json(
    step: Step,
    resp: &HttpResponse,
    waf: &WafSeen,
    waits: Waits,
) -> Result<serde_json::Value, ErrorOutput> {
    if let Some(body) = http::json(resp).filter(serde_json::Value::is_object) {
        if resp.status == 429 {
            let mut e = classify_text(step, 429, &broker_text(&body).unwrap_or_default(), waits);
            e.class = ErrorClass::RateLimited;
            e.retry_after_ms = Some(http::retry_after_ms(resp, waits.throttle_ms));
            return Err(e);
        }
        return Ok(body);
    }
    Err(non_json(step, resp, waf, waits))
}

/// A body that is not a JSON object.
pub fn non_json(step: Step, resp: &HttpResponse, waf: &WafSeen, waits: Waits) -> ErrorOutput {
    let name = step.name();
    if resp.status == 403 && http::is_html(resp) {
        let seen = waf.0.get() + 1;
        waf.0.set(seen);
        if seen > 1 {
            return ErrorOutput::new(
                ErrorClass::AutomationBlocked,
                format!("dhan: {name}: HTTP 403 with an HTML block page again: use assisted login"),
            );
        }
        let mut e = ErrorOutput::new(
            ErrorClass::RateLimited,
            format!("dhan: {name}: HTTP 403 with an HTML block page (gateway or WAF); backing off"),
        );
        e.retry_after_ms = Some(waits.waf_ms);
        return e;
    }
    if let Some(e) = http::triage("dhan", name, resp) {
        return e;
    }
    match http::json_object("dhan", name, resp) {
        Err(e) => e,
        Ok(_) => protocol(step, "a JSON answer that is not an object"),
    }
}

/// How an API-host answer that is not a success ends.
pub enum Failure {
    /// The token is invalid or expired (`DH-901`, data-API 807-810): re-login.
    TokenInvalid(String),
    /// Any other failure, classified.
    Other(ErrorOutput),
}

/// The class of an API-host error body (`errorType`, `errorCode`, `errorMessage`; dhan.md annexure).
pub fn api_failure(step: Step, resp: &HttpResponse, waf: &WafSeen, waits: Waits) -> Failure {
    use ErrorClass::*;
    let Some(body) = http::json(resp).filter(serde_json::Value::is_object) else {
        return Failure::Other(non_json(step, resp, waf, waits));
    };
    let code = str_field(&body, "errorCode")
        .or_else(|| str_field(&body, "error_code"))
        .unwrap_or_default()
        .to_owned();
    let message = str_field(&body, "errorMessage")
        .map(|m| http::truncate(m, 200))
        .or_else(|| broker_text(&body))
        .unwrap_or_default();
    let what = format!(
        "dhan: {}: HTTP {} {code} \"{message}\"",
        step.name(),
        resp.status
    );
    let class = match code.as_str() {
        "DH-901" | "807" | "808" | "809" | "810" => return Failure::TokenInvalid(what),
        "DH-902" => AppNotAuthorized,
        "DH-903" => AccountLocked,
        "DH-904" => RateLimited,
        "DH-908" | "DH-909" => BrokerUnavailable,
        _ if resp.status == 429 => RateLimited,
        _ if resp.status == 401 => return Failure::TokenInvalid(what),
        _ if resp.status >= 500 => BrokerUnavailable,
        _ => Protocol,
    };
    let mut out = ErrorOutput::new(class, what);
    if class == RateLimited {
        out.retry_after_ms = Some(http::retry_after_ms(resp, http::DEFAULT_RETRY_AFTER_MS));
    }
    Failure::Other(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITS: Waits = Waits {
        waf_ms: 300_000,
        throttle_ms: 125_000,
    };

    fn class(message: &str) -> ErrorClass {
        classify_text(Step::Mint, 200, message, WAITS).class
    }

    #[test]
    fn ordered_text_rules() {
        use ErrorClass::*;
        let throttle = classify_text(
            Step::Mint,
            200,
            "Token can be generated once every 2 minutes.",
            WAITS,
        );
        assert_eq!(throttle.class, RateLimited);
        assert_eq!(throttle.retry_after_ms, Some(120_000));
        assert_eq!(
            classify_text(Step::Mint, 200, "Please try after some time", WAITS).retry_after_ms,
            Some(125_000)
        );
        assert_eq!(
            class("TOTP is not enabled for this account. Please setup TOTP on Dhan Web."),
            TwofaUnavailable
        );
        assert_eq!(class("Invalid TOTP"), TwofaRejected);
        assert_eq!(
            class(
                "Your account is blocked due to multiple invalid attempts. Please reset your PIN."
            ),
            AccountLocked
        );
        assert_eq!(class("Invalid Pin"), InvalidCredentials);
        assert_eq!(class("Invalid Client ID"), InvalidCredentials);
        assert_eq!(class("Invalid app_id or app_secret"), InvalidCredentials);
        assert_eq!(class("Missing required parameters"), Protocol);
    }

    #[test]
    fn waits_in_text() {
        assert_eq!(wait_in_text("once every 2 minutes"), Some(120_000));
        assert_eq!(wait_in_text("try after 30 seconds"), Some(30_000));
        assert_eq!(wait_in_text("try after 1 hour"), Some(3_600_000));
        assert_eq!(wait_in_text("Invalid TOTP"), None);
    }
}
