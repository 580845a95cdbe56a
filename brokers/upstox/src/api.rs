//! Upstox's API host: Q1 the v3 Access Token Request, A2 Get Token, V the profile (upstox.md),
//! and how each failure maps to an error class.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, Sensitive, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry, str_field};
use broker_common::ist;
use zeroize::Zeroize;

const TIMEOUT_MS: u64 = 10_000;

/// Which request failed: the same error code means different things at different steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Q1 `POST /v3/login/auth/token/request/:client_id`.
    Request,
    /// A2 `POST /v2/login/authorization/token`.
    Token,
    /// V `GET /v2/user/profile`.
    Profile,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Request => "Q1 access token request",
            Step::Token => "A2 get token",
            Step::Profile => "V profile",
        }
    }
}

/// An `{"status":"error","errors":[{"errorCode","message"}]}` envelope, read.
#[derive(Debug)]
pub struct UpstoxError {
    /// `errorCode` of the first error, e.g. `UDAPI100050`.
    pub code: String,
    /// Its message, truncated.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

/// The error of a body, if it is one: `status` other than `success`, whatever the HTTP status
/// (Upstox answers some failures with HTTP 200); with no `status`, HTTP 400 or more or an
/// `errors` array (the Get Token answer is a bare object on success).
pub fn envelope_error(body: &serde_json::Value, status: u16) -> Option<UpstoxError> {
    let errors = body.get("errors").and_then(|e| e.as_array());
    let is_error = match body.get("status").and_then(|s| s.as_str()) {
        Some(s) => !s.eq_ignore_ascii_case("success"),
        None => status >= 400 || errors.is_some_and(|e| !e.is_empty()),
    };
    if !is_error {
        return None;
    }
    let first = errors.and_then(|e| e.first());
    let code = first
        .and_then(|e| e.get("errorCode").or_else(|| e.get("error_code")))
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_owned();
    let message = first
        .and_then(http::broker_text)
        .or_else(|| http::broker_text(body))
        .unwrap_or_default();
    Some(UpstoxError {
        code,
        message,
        status,
    })
}

/// The class of an error envelope at `step` (upstox.md, "Errors and classes").
pub fn classify(step: Step, e: &UpstoxError) -> ErrorOutput {
    let text = if e.code.is_empty() {
        format!("HTTP {}: {}", e.status, e.message)
    } else {
        format!("{}: {}", e.code, e.message)
    };
    let msg = |what: &str| format!("upstox: {}: {text}{what}", step.name());
    let lower = e.message.to_ascii_lowercase();
    let class = match e.code.as_str() {
        "UDAPI100016" => ErrorClass::InvalidCredentials,
        "UDAPI100068" | "UDAPI100069" | "UDAPI100070" | "UDAPI100073" => {
            ErrorClass::AppNotAuthorized
        }
        "UDAPI10005" => ErrorClass::RateLimited,
        _ if e.status == 429 => ErrorClass::RateLimited,
        _ if lower.contains("no segments") => ErrorClass::AccountLocked,
        _ if e.status >= 500 => ErrorClass::BrokerUnavailable,
        _ => ErrorClass::Protocol,
    };
    let hint = match (class, e.code.as_str()) {
        (ErrorClass::AccountLocked, _) => "; reactivate a segment in the Upstox app or web",
        (ErrorClass::AppNotAuthorized, _) => {
            "; check the app's API key, secret and redirect URL on the Upstox Developer Apps page"
        }
        (_, "UDAPI100057") => "; the code is used up or expired: log in again",
        _ => "",
    };
    let mut out = ErrorOutput::new(class, msg(hint));
    if class == ErrorClass::RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}

fn protocol(step: Step, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("upstox: {}: {what}", step.name()),
    )
}

/// An epoch-milliseconds value sent as a string (Upstox's form) or a number (some relays').
pub fn epoch_ms(value: Option<&serde_json::Value>) -> Option<i64> {
    match value? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// What Q1 answered.
pub struct Requested {
    /// Until when the person may approve (Unix ms).
    pub expiry_ms: i64,
    /// The notifier URL registered on the app (holds the daemon's secret hook: never logged).
    pub notifier_url: Option<Sensitive>,
}

/// The API host of one call.
pub struct Api<'a, 'h> {
    host: &'a Host<'h>,
    base: String,
}

impl<'a, 'h> Api<'a, 'h> {
    /// On `api_url`.
    pub fn new(host: &'a Host<'h>, base: &str) -> Self {
        Api {
            host,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// `api_url` + `/path`.
    pub fn url(&self, path: &str) -> String {
        http::join(&self.base, path)
    }

    fn send(&self, step: Step, mut req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for h in &mut req.headers {
            h[1].zeroize();
        }
        result.map_err(|e| http::host_failure("upstox", step.name(), &e))
    }

    /// The JSON object of a response, or the class of its failure.
    fn ok_body(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
        // The envelope first: a 429 carrying UDAPI10005 is still rate limiting, and a 4xx with
        // Upstox's envelope says more than its status.
        if let Some(body) = http::json(resp).filter(|b| b.is_object()) {
            if let Some(e) = envelope_error(&body, resp.status) {
                return Err(classify(step, &e));
            }
            if resp.status < 400 {
                return Ok(body);
            }
        }
        if let Some(e) = http::triage("upstox", step.name(), resp) {
            return Err(e);
        }
        if resp.status >= 400 {
            return Err(protocol(step, &format!("HTTP {}", resp.status)));
        }
        http::json_object("upstox", step.name(), resp)
    }

    /// Q1: ask Upstox to send the person an approval request; the token arrives later at the
    /// app's notifier webhook.
    pub fn request_token(&self, api_key: &str, secret: &str) -> Result<Requested, ErrorOutput> {
        let step = Step::Request;
        let mut body = serde_json::json!({ "client_secret": secret }).to_string();
        let req = HttpRequest::new(
            "POST",
            self.url(&format!(
                "/v3/login/auth/token/request/{}",
                url::form_urlencoded::byte_serialize(api_key.as_bytes()).collect::<String>()
            )),
        )
        .header("Accept", "application/json")
        .body("application/json", body.as_str());
        body.zeroize();
        let out = Self::ok_body(step, &self.send(step, req)?)?;
        let data = out.get("data").ok_or_else(|| protocol(step, "no data"))?;
        let expiry_ms = epoch_ms(data.get("authorization_expiry"))
            .ok_or_else(|| protocol(step, "no readable data.authorization_expiry"))?;
        Ok(Requested {
            expiry_ms,
            notifier_url: str_field(data, "notifier_url").map(Sensitive::new),
        })
    }

    /// A2: the single-use code for a token. Never retried: Upstox spends the code whether or
    /// not the exchange succeeds (upstox.md, risk 5).
    pub fn get_token(
        &self,
        api_key: &str,
        secret: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<serde_json::Value, ErrorOutput> {
        let step = Step::Token;
        let mut body = http::form(&[
            ("code", code),
            ("client_id", api_key),
            ("client_secret", secret),
            ("redirect_uri", redirect_uri),
            ("grant_type", "authorization_code"),
        ]);
        let req = HttpRequest::new("POST", self.url("/v2/login/authorization/token"))
            .header("Accept", "application/json")
            .header("Api-Version", "2.0")
            .body("application/x-www-form-urlencoded", body.as_str());
        body.zeroize();
        Self::ok_body(step, &self.send(step, req)?)
    }

    /// V: `Ok(user_id)` when Upstox accepts the token; `Err(Ok(message))` when it refuses it
    /// (HTTP 401, `UDAPI100050`); `Err(Err(_))` for any other failure.
    pub fn profile(&self, token: &str) -> Result<String, Result<String, ErrorOutput>> {
        let step = Step::Profile;
        let req = HttpRequest::new("GET", self.url("/v2/user/profile"))
            .header("Accept", "application/json")
            .header("Authorization", format!("Bearer {token}"));
        let resp = self.send(step, req).map_err(Err)?;
        let body = http::json(&resp).filter(|b| b.is_object());
        if let Some(e) = body.as_ref().and_then(|b| envelope_error(b, resp.status))
            && (resp.status == 401 || e.code == "UDAPI100050")
        {
            return Err(Ok(format!("Upstox refused the token: {}", e.message)));
        }
        if resp.status == 401 {
            return Err(Ok("Upstox refused the token: HTTP 401".into()));
        }
        let body = Self::ok_body(step, &resp).map_err(Err)?;
        body.get("data")
            .and_then(|d| str_field(d, "user_id"))
            .map(str::to_owned)
            .ok_or_else(|| Err(protocol(step, "no data.user_id in the profile")))
    }

    /// V with the step retries of a transient failure: the user id the token belongs to.
    pub fn confirm(&self, token: &str) -> Result<String, ErrorOutput> {
        let mut retry = StepRetry::default();
        loop {
            match self.profile(token) {
                Err(Err(e)) if retry.wait(self.host, "upstox", Step::Profile.name(), &e) => {}
                Ok(id) => return Ok(id),
                Err(Ok(refused)) => {
                    return Err(protocol(
                        Step::Profile,
                        &format!("the new token was refused ({refused})"),
                    ));
                }
                Err(Err(e)) => return Err(e),
            }
        }
    }

    /// A2 then V: the token of a redirect's `code`, checked to belong to `broker_user_id`.
    pub fn complete(
        &self,
        api_key: &str,
        secret: &str,
        code: &str,
        redirect_uri: &str,
        broker_user_id: &str,
    ) -> Result<LoginOutput, ErrorOutput> {
        let step = Step::Token;
        let out = self.get_token(api_key, secret, code, redirect_uri)?;
        let issued = self.host.now_unix_ms();
        let token = str_field(&out, "access_token")
            .map(Sensitive::new)
            .ok_or_else(|| protocol(step, "no access_token"))?;
        let confirmed = self.confirm(token.expose())?;
        same_user(&confirmed, broker_user_id)?;
        if let Some(said) = str_field(&out, "user_id")
            && !said.eq_ignore_ascii_case(&confirmed)
        {
            return Err(protocol(
                Step::Profile,
                "the profile names another user than Get Token",
            ));
        }
        let mut extras = BTreeMap::new();
        extras.insert("user_id".into(), confirmed.clone().into());
        // Read-only and valid for a year: kept in the vault (never served, see `served_extras`)
        // only when Upstox sends one, so an empty value never replaces it.
        if let Some(ext) = str_field(&out, "extended_token") {
            extras.insert("extended_token".into(), ext.into());
        }
        self.host.log(
            Level::Info,
            "upstox: redirect login finished; token verified with the profile",
        );
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: token,
            broker_user_id: confirmed,
            issued_at_ms: issued,
            expires_at_ms: token_expiry(issued),
            extras,
        })
    }
}

/// Upstox's rule: a token works until the first 03:30 IST strictly after it was issued.
pub fn token_expiry(issued_ms: i64) -> i64 {
    ist::next_ist_wall_time(issued_ms, 3, 30)
}

/// The token belongs to the account's user, when the account names one.
pub fn same_user(confirmed: &str, broker_user_id: &str) -> Result<(), ErrorOutput> {
    if !broker_user_id.is_empty() && !confirmed.eq_ignore_ascii_case(broker_user_id) {
        return Err(ErrorOutput::new(
            ErrorClass::Protocol,
            format!(
                "upstox: the token belongs to another user ({confirmed}, not {broker_user_id})"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_200_error_envelope_is_an_error() {
        let body = serde_json::json!({"status": "error", "errors": [
            {"errorCode": "UDAPI100016", "message": "Invalid Credentials", "propertyPath": null}]});
        let e = envelope_error(&body, 200).unwrap();
        assert_eq!(
            classify(Step::Request, &e).class,
            ErrorClass::InvalidCredentials
        );
        let bare = serde_json::json!({"access_token": "x", "user_id": "AB1234"});
        assert!(envelope_error(&bare, 200).is_none());
    }

    #[test]
    fn codes_map_to_their_classes() {
        let class = |code: &str, status: u16, msg: &str| {
            classify(
                Step::Token,
                &UpstoxError {
                    code: code.into(),
                    message: msg.into(),
                    status,
                },
            )
            .class
        };
        assert_eq!(class("UDAPI100073", 400, ""), ErrorClass::AppNotAuthorized);
        assert_eq!(class("UDAPI100068", 400, ""), ErrorClass::AppNotAuthorized);
        assert_eq!(class("UDAPI10005", 429, ""), ErrorClass::RateLimited);
        assert_eq!(class("UDAPI100057", 400, ""), ErrorClass::Protocol);
        assert_eq!(
            class("UDAPI1000", 400, "No segments for these users are active."),
            ErrorClass::AccountLocked
        );
    }

    #[test]
    fn a_token_made_before_half_past_three_dies_that_same_morning() {
        // 2026-03-10 02:30 IST -> 03:30 the same morning; 17:30 -> 03:30 the next day.
        let half_two = 1_773_090_000_000;
        assert_eq!(token_expiry(half_two), half_two + 3_600_000);
        let evening = half_two + 15 * 3_600_000;
        assert_eq!(token_expiry(evening), half_two + 25 * 3_600_000);
    }
}
