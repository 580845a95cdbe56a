//! The 5paisa steps F1–F3 of fivepaisa.md, each one JSON `POST` through the host.

use std::collections::BTreeMap;

use broker_api::Host;
use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, Sensitive, WIRE_VERSION,
};
use broker_common::http::{self, StepRetry};
use broker_common::ist;
use serde_json::{Value, json};
use zeroize::Zeroize;

use crate::errors::{self, Step, outcome, protocol, str_ci, text_ci};

/// Per-request timeout: a RequestToken may live only 30 s (fivepaisa.md risk 3).
const TIMEOUT_MS: u64 = 10_000;
/// Longer than this, an F1 answer may be about an expired code (SDK issue #261).
const SLOW_F1_MS: i64 = 10_000;

/// The app's identity for F2/F3 (from the credentials).
pub struct App<'c> {
    /// UserKey (`head.Key`, OAuth `VendorKey`).
    pub user_key: &'c str,
    /// Encryption Key (`EncryKey`).
    pub encry_key: &'c str,
    /// API User ID (`UserId`).
    pub api_user_id: &'c str,
}

/// One call's view of 5paisa.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    api: String,
    paths: BTreeMap<String, String>,
}

/// A URL of the effective base URLs, checked.
pub fn base_url(urls: &BTreeMap<String, String>, name: &str) -> Result<String, ErrorOutput> {
    let raw = urls.get(name).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("fivepaisa: base URL `{name}` is not configured"),
        )
        .before_credentials()
    })?;
    url::Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("fivepaisa: base URL `{name}`: {e}"),
        )
        .before_credentials()
    })?;
    Ok(raw.clone())
}

fn totp_failure(e: &broker_api::guest::HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "fivepaisa: the account has no totp_secret: store one, or use the OAuth (assisted) login",
        ),
        _ => http::host_failure("fivepaisa", "TOTP", e),
    }
}

/// What F2 returns.
pub struct Session {
    /// The AccessToken.
    pub access_token: String,
    /// `RefreshToken` (stored, never served).
    pub refresh_token: Option<String>,
    /// `ClientName`.
    pub client_name: Option<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.access_token.zeroize();
        if let Some(t) = &mut self.refresh_token {
            t.zeroize();
        }
    }
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on `api_url` and the path settings.
    pub fn new(
        host: &'a Host<'h>,
        urls: &BTreeMap<String, String>,
        settings: &BTreeMap<String, String>,
    ) -> Result<Self, ErrorOutput> {
        Ok(Client {
            host,
            api: base_url(urls, "api_url")?,
            paths: settings.clone(),
        })
    }

    fn url(&self, step: Step) -> String {
        let (key, default) = match step {
            Step::TotpLogin => ("totp_login_path", crate::TOTP_LOGIN_PATH),
            Step::AccessToken => ("access_token_path", crate::ACCESS_TOKEN_PATH),
            Step::TradeBook => ("verify_path", crate::VERIFY_PATH),
        };
        let path = self.paths.get(key).map_or(default, String::as_str);
        http::join(&self.api, &format!("/{}", path.trim_start_matches('/')))
    }

    fn post(&self, step: Step, body: &Value, bearer: Option<&str>) -> Result<Value, ErrorOutput> {
        let resp = self.send(step, body, bearer)?;
        errors::json_body(step, &resp)
    }

    fn send(
        &self,
        step: Step,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<HttpResponse, ErrorOutput> {
        let mut req = HttpRequest::new("POST", self.url(step)).header("Accept", "application/json");
        let mut auth = bearer.map(|t| format!("Bearer {t}"));
        if let Some(a) = &auth {
            req = req.header("Authorization", a.as_str());
        }
        let mut req = req.body("application/json", body.to_string());
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for [_, value] in &mut req.headers {
            value.zeroize();
        }
        if let Some(a) = &mut auth {
            a.zeroize();
        }
        result.map_err(|e| http::host_failure("fivepaisa", step.name(), &e))
    }

    /// F1 with a fresh code, sent once: the RequestToken. An `Invalid TOTP` is not retried: F1
    /// carries the PIN with the code, so a second F1 would send the PIN twice in one refresh.
    pub fn totp_login(
        &self,
        user_key: &str,
        client: &str,
        pin: &str,
    ) -> Result<String, ErrorOutput> {
        let step = Step::TotpLogin;
        let code = self
            .host
            .totp()
            .map_err(|e| totp_failure(&e).before_credentials())?;
        let mut body = json!({
            "head": {"Key": user_key},
            "body": {"Email_ID": client, "TOTP": code.code.expose(), "PIN": pin},
        });
        let started = self.host.now_unix_ms();
        let answer = self.post(step, &body, None);
        if let Some(b) = body.get_mut("body").and_then(Value::as_object_mut) {
            b.clear();
        }
        let took = self.host.now_unix_ms() - started;
        answer
            .and_then(|v| {
                let (inner, o) =
                    outcome(&v).ok_or_else(|| protocol(step, "no body in the answer"))?;
                match (o.status, str_ci(inner, "RequestToken")) {
                    (Some(0), Some(t)) => Ok(t.to_owned()),
                    (Some(0), None) => Err(protocol(step, "Status 0 without a RequestToken")),
                    _ => Err(errors::classify_login(&o)),
                }
            })
            .map_err(|mut e| {
                if e.class == ErrorClass::TwofaRejected && took > SLOW_F1_MS {
                    e.message.push_str(&format!(
                        " (F1 took {took} ms: the code may have expired in flight)"
                    ));
                }
                http::code_refused_with_secret(e, "PIN")
            })
    }

    /// F2: the session for `request_token`, at once (the RequestToken may live 30 s).
    pub fn access_token(
        &self,
        app: &App<'_>,
        request_token: &str,
        client: &str,
    ) -> Result<Session, ErrorOutput> {
        let step = Step::AccessToken;
        let body = json!({
            "head": {"Key": app.user_key},
            "body": {"RequestToken": request_token, "EncryKey": app.encry_key, "UserId": app.api_user_id},
        });
        let v = StepRetry::run_single_use(self.host, "fivepaisa", step.name(), || {
            self.post(step, &body, None)
        })?;
        let (inner, o) = outcome(&v).ok_or_else(|| protocol(step, "no body in the answer"))?;
        let token = str_ci(inner, "AccessToken");
        // The SDK's test is on `body.Message` itself, never on the head's description.
        let ok = o.status == Some(0)
            && str_ci(inner, "Message").is_some_and(|m| m.trim().eq_ignore_ascii_case("success"));
        let Some(token) = token.filter(|_| ok) else {
            return Err(if o.status == Some(0) && ok {
                protocol(step, "Success without an AccessToken")
            } else {
                errors::classify_access_token(&o)
            });
        };
        // A number is checked as well as a string: skipping the check for `"ClientCode":50011110`
        // would accept another client's session.
        if let Some(code) = text_ci(inner, "ClientCode")
            && !code.eq_ignore_ascii_case(client.trim())
        {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!("fivepaisa: the session belongs to {code}, not to the account's {client}"),
            ));
        }
        Ok(Session {
            access_token: token.to_owned(),
            refresh_token: str_ci(inner, "RefreshToken").map(str::to_owned),
            client_name: str_ci(inner, "ClientName").map(str::to_owned),
        })
    }

    /// F3: `Ok(())` when 5paisa accepts the token; `Err(Ok(message))` when it refuses it;
    /// `Err(Err(output))` for any other failure.
    pub fn trade_book(
        &self,
        user_key: &str,
        client: &str,
        token: &str,
    ) -> Result<(), Result<String, ErrorOutput>> {
        let step = Step::TradeBook;
        let body = json!({"head": {"key": user_key}, "body": {"ClientCode": client}});
        let resp = self.send(step, &body, Some(token)).map_err(Err)?;
        if let Some(refused) = unauthorized(&resp) {
            return Err(Ok(refused));
        }
        let v = errors::json_body(step, &resp).map_err(Err)?;
        let (_, o) = outcome(&v).ok_or_else(|| Err(protocol(step, "no body in the answer")))?;
        match o.status {
            Some(0) => Ok(()),
            Some(_) => Err(Ok(format!(
                "Status {}: {}",
                o.status.unwrap_or_default(),
                o.message
            ))),
            None => Err(Err(protocol(step, "no body.Status"))),
        }
    }

    /// F2 then F3: the login's output.
    pub fn complete(
        &self,
        app: &App<'_>,
        request_token: &str,
        client: &str,
    ) -> Result<LoginOutput, ErrorOutput> {
        let session = self.access_token(app, request_token, client)?;
        let issued = self.host.now_unix_ms();
        let mut retry = StepRetry::default();
        let verified = loop {
            match self.trade_book(app.user_key, client, &session.access_token) {
                Err(Err(e)) if retry.wait(self.host, "fivepaisa", Step::TradeBook.name(), &e) => {}
                other => break other,
            }
        };
        match verified {
            Ok(()) => {}
            Err(Ok(refused)) => {
                return Err(protocol(
                    Step::TradeBook,
                    &format!("the fresh AccessToken was refused ({refused})"),
                ));
            }
            Err(Err(e)) => return Err(e),
        }
        let mut extras = BTreeMap::new();
        if let Some(t) = &session.refresh_token {
            extras.insert("refresh_token".to_owned(), Value::String(t.clone()));
        }
        if let Some(n) = &session.client_name {
            extras.insert("client_name".to_owned(), Value::String(n.clone()));
        }
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: Sensitive::new(session.access_token.as_str()),
            broker_user_id: client.to_owned(),
            issued_at_ms: issued,
            expires_at_ms: expiry(issued),
            extras,
        })
    }
}

/// F3 refused by HTTP status: a 401 whatever its (non-HTML) body, or a 403 with a JSON body (an
/// ASP.NET `{"Message":"Authorization has been denied for this request."}`): the token is not
/// accepted. A 403 HTML page stays a WAF's (`broker_unavailable`).
fn unauthorized(resp: &HttpResponse) -> Option<String> {
    let json = http::json(resp);
    let refused = match resp.status {
        401 => !http::is_html(resp),
        403 => json.is_some(),
        _ => false,
    };
    refused.then(|| {
        let text = json
            .as_ref()
            .and_then(|v| {
                http::broker_text(v).or_else(|| {
                    ["Message", "message", "StatusDescription"]
                        .iter()
                        .find_map(|k| str_ci(v, k).map(|m| http::truncate(m, 200)))
                })
            })
            .unwrap_or_default();
        format!("HTTP {} {text}", resp.status).trim_end().to_owned()
    })
}

/// 23:59:00 IST on the IST day of `issued` ("Token expires every day at 11:59 PM").
pub fn expiry(issued: i64) -> i64 {
    ist::next_ist_wall_time(issued, 23, 59)
}

/// `Some(ms to wait)` when `now` is in the last minute of the IST day, when a token would be
/// born expired (fivepaisa.md: do not log in between 23:59 and 00:00 IST).
pub fn in_dead_minute(now: i64) -> Option<u64> {
    let midnight = ist::next_ist_midnight(now);
    let left = midnight - now;
    (left <= 60_000).then(|| (left + 30_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_2359_ist_the_same_day() {
        // 2025-03-10 08:00 IST = 02:30 UTC.
        let morning = 1_741_573_800_000;
        let e = expiry(morning);
        assert_eq!(e - morning, (15 * 60 + 59) * 60_000);
        assert!(in_dead_minute(morning).is_none());
        assert_eq!(in_dead_minute(e), Some(90_000));
    }
}
