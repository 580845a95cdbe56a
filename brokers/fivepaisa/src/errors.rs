//! 5paisa's `{"head":{...},"body":{"Status":n,"Message":...}}` envelope and the classes of its
//! failures (fivepaisa.md). Business errors come with HTTP 200; the TOTP login is being withdrawn,
//! so at F1 an HTML page, an empty or non-JSON body, a 404/410 or a "deprecated"-like message is
//! read as the flow being decommissioned (`automation_blocked`: use the OAuth login).

use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_common::http::{self, truncate};
use serde_json::Value;

/// Which request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// F1 `TOTPLogin` (client code, TOTP and PIN in one request).
    TotpLogin,
    /// F2 `GetAccessToken`.
    AccessToken,
    /// F3 `V1/TradeBook` (verification).
    TradeBook,
}

impl Step {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::TotpLogin => "F1 TOTPLogin",
            Step::AccessToken => "F2 GetAccessToken",
            Step::TradeBook => "F3 V1/TradeBook",
        }
    }
}

/// `body.Status` and `body.Message` of an answer.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `body.Status` (`None` when absent or not a number).
    pub status: Option<i64>,
    /// `body.Message`, truncated.
    pub message: String,
}

fn number(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A field of `body` by case-insensitive name.
pub fn get_ci<'v>(obj: &'v Value, name: &str) -> Option<&'v Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A non-empty string field by case-insensitive name.
pub fn str_ci<'v>(obj: &'v Value, name: &str) -> Option<&'v str> {
    get_ci(obj, name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A non-empty text field by case-insensitive name: a string (trimmed), or a number written out
/// (`"ClientCode":50011110` is as good as `"ClientCode":"50011110"`).
pub fn text_ci(obj: &Value, name: &str) -> Option<String> {
    match get_ci(obj, name)? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// The `body` object of an answer (else its `head`, when `body` is absent or `null`) and its
/// outcome: `body.Status`, else `head.Status`/`head.status` (data calls put the status in a
/// lower-case `head.status`, and a refusal may come with no `body` at all); `body.Message`, else
/// `head.StatusDescription`.
pub fn outcome(answer: &Value) -> Option<(&Value, Outcome)> {
    let body = get_ci(answer, "body").filter(|b| b.is_object());
    let head = get_ci(answer, "head").filter(|h| h.is_object());
    let status_of = |v: Option<&Value>| v.and_then(|o| get_ci(o, "Status")).and_then(number);
    let message = body
        .and_then(|b| str_ci(b, "Message"))
        .or_else(|| head.and_then(|h| str_ci(h, "StatusDescription")))
        .map(|m| truncate(m, 200))
        .unwrap_or_default();
    Some((
        body.or(head)?,
        Outcome {
            status: status_of(body).or_else(|| status_of(head)),
            message,
        },
    ))
}

fn contains_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Whether a message says the TOTP flow is gone (fivepaisa.md F1, [INF]).
fn says_decommissioned(lower: &str) -> bool {
    contains_any(
        lower,
        &["deprecat", "not allowed", "discontinu", "not available"],
    )
}

fn says_locked(lower: &str) -> bool {
    contains_any(lower, &["block", "lock", "suspend"])
}

/// `automation_blocked`: the TOTP login answered like a withdrawn endpoint.
pub fn decommissioned(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::AutomationBlocked,
        format!(
            "fivepaisa: {}: {what}: the TOTP login looks decommissioned; use the OAuth (assisted) login",
            step.name()
        ),
    )
}

/// A `protocol` failure.
pub fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "fivepaisa: {}: {what}; the API may have changed",
            step.name()
        ),
    )
}

/// The JSON of `resp`, or the step's transport-level failure.
pub fn json_body(step: Step, resp: &HttpResponse) -> Result<Value, ErrorOutput> {
    if (resp.status == 429 || resp.status >= 500)
        && let Some(e) = http::triage("fivepaisa", step.name(), resp)
    {
        return Err(e);
    }
    let parsed = http::json(resp).filter(Value::is_object);
    if step == Step::TotpLogin {
        if matches!(resp.status, 404 | 410) {
            return Err(decommissioned(step, &format!("HTTP {}", resp.status)));
        }
        if parsed.is_none() {
            let what = if resp.body.trim().is_empty() {
                "an empty body"
            } else if http::is_html(resp) {
                "an HTML page"
            } else {
                "a body that is not JSON"
            };
            return Err(decommissioned(
                step,
                &format!("HTTP {} with {what}", resp.status),
            ));
        }
    }
    if let Some(e) = http::triage("fivepaisa", step.name(), resp) {
        return Err(e);
    }
    match parsed {
        Some(v) => Ok(v),
        None => http::json_object("fivepaisa", step.name(), resp),
    }
}

/// The class of a failed F1 outcome (fivepaisa.md F1 table).
pub fn classify_login(o: &Outcome) -> ErrorOutput {
    let lower = o.message.to_ascii_lowercase();
    let (class, advice) = if says_locked(&lower) {
        (
            ErrorClass::AccountLocked,
            "the account is blocked: contact 5paisa",
        )
    } else if says_decommissioned(&lower) {
        (
            ErrorClass::AutomationBlocked,
            "the TOTP login looks decommissioned; use the OAuth (assisted) login",
        )
    } else {
        match o.status {
            Some(1) => (
                ErrorClass::InvalidCredentials,
                "not retried: fix the client code or PIN",
            ),
            Some(2) if lower.contains("invalid totp") => (
                ErrorClass::TwofaRejected,
                "check the TOTP secret and the host clock",
            ),
            Some(-1) => (ErrorClass::BrokerUnavailable, ""),
            _ => (
                ErrorClass::Protocol,
                "an answer this strategy does not know",
            ),
        }
    };
    output(Step::TotpLogin, o, class, advice)
}

/// The class of a failed F2 outcome: a message naming the key or user is a credential problem
/// (`EncryKey`, `UserId`), anything else `protocol`.
pub fn classify_access_token(o: &Outcome) -> ErrorOutput {
    let lower = o.message.to_ascii_lowercase();
    let (class, advice) = if says_locked(&lower) {
        (
            ErrorClass::AccountLocked,
            "the account is blocked: contact 5paisa",
        )
    } else if contains_any(&lower, &["key", "user", "encry"]) {
        (
            ErrorClass::InvalidCredentials,
            "check api_secret (Encryption Key), api_user_id (API User ID) and api_key (User Key)",
        )
    } else if o.status == Some(-1) {
        (ErrorClass::BrokerUnavailable, "")
    } else {
        (ErrorClass::Protocol, "the RequestToken was refused")
    };
    output(Step::AccessToken, o, class, advice)
}

fn output(step: Step, o: &Outcome, class: ErrorClass, advice: &str) -> ErrorOutput {
    let status = o.status.map_or_else(|| "?".to_owned(), |s| s.to_string());
    let text = if o.message.is_empty() {
        String::new()
    } else {
        format!(": {}", o.message)
    };
    let advice = if advice.is_empty() {
        String::new()
    } else {
        format!("; {advice}")
    };
    ErrorOutput::new(
        class,
        format!("fivepaisa: {}: Status {status}{text}{advice}", step.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn login(status: i64, message: &str) -> ErrorClass {
        let body =
            json!({"body": {"Status": status, "Message": message}, "head": {"Status": status}});
        classify_login(&outcome(&body).unwrap().1).class
    }

    #[test]
    fn f1_outcomes_map_as_the_doc_says() {
        assert_eq!(
            login(1, "Invalid login/password,use \"Forget password\""),
            ErrorClass::InvalidCredentials
        );
        assert_eq!(login(2, "Invalid TOTP"), ErrorClass::TwofaRejected);
        assert_eq!(login(2, "Invalid inputs"), ErrorClass::Protocol);
        assert_eq!(
            login(-1, "Server unable to process request"),
            ErrorClass::BrokerUnavailable
        );
        assert_eq!(
            login(1, "Your account is Blocked"),
            ErrorClass::AccountLocked
        );
        assert_eq!(
            login(2, "This API is deprecated"),
            ErrorClass::AutomationBlocked
        );
    }

    #[test]
    fn a_status_only_in_the_head_is_read_there() {
        let answer = json!({"head": {"responseCode": "5PTrdBkV1", "status": "9",
            "statusDescription": "Invalid Session"}, "body": null});
        let (_, o) = outcome(&answer).unwrap();
        assert_eq!(o.status, Some(9));
        assert_eq!(o.message, "Invalid Session");
        let answer = json!({"head": {"status": "0"}, "body": {"Message": "Success"}});
        assert_eq!(outcome(&answer).unwrap().1.status, Some(0));
        assert_eq!(
            text_ci(&json!({"clientcode": 50011110}), "ClientCode").as_deref(),
            Some("50011110")
        );
    }

    #[test]
    fn status_may_be_a_string() {
        let body = json!({"body": {"Status": "0", "Message": "Success"}});
        assert_eq!(outcome(&body).unwrap().1.status, Some(0));
    }
}
