//! The Motilal steps M1, M2 and V of motilal.md, each one JSON `POST` through the host.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, LoginOutput, Sensitive, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry};
use broker_common::ist;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::errors::{self, MotilalError, Step, protocol};
use crate::settings::Settings;

/// Per-request timeout (no official figure; the SDK sets none).
const TIMEOUT_MS: u64 = 15_000;

/// `sha256(password + api_key)`, lowercase hex (motilal.md M1).
pub fn password_hash(password: &str, api_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(password.as_bytes());
    h.update(api_key.as_bytes());
    hex::encode(h.finalize())
}

/// M1's `2FA`: a date of birth `DD/MM/YYYY` as is, or a PAN uppercased. Anything else stops the
/// login before the password is sent.
pub fn two_factor(value: &str) -> Result<String, ErrorOutput> {
    let v = value.trim();
    let b = v.as_bytes();
    let is_dob = b.len() == 10
        && b[2] == b'/'
        && b[5] == b'/'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit());
    let is_pan = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            0..=4 | 9 => c.is_ascii_alphabetic(),
            _ => c.is_ascii_digit(),
        });
    if is_dob {
        Ok(v.to_owned())
    } else if is_pan {
        Ok(v.to_ascii_uppercase())
    } else {
        Err(ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            "motilal: dob_or_pan must be a date of birth DD/MM/YYYY or a PAN (ABCDE1234F)",
        )
        .before_credentials())
    }
}

/// One call's view of Motilal: the API host, the paths and the common headers.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    api: String,
    settings: Settings,
    headers: Vec<(&'static str, String)>,
}

/// The `api_url` of the effective base URLs.
pub fn api_url(urls: &BTreeMap<String, String>) -> Result<String, ErrorOutput> {
    let raw = urls.get("api_url").ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            "motilal: base URL `api_url` is not configured",
        )
        .before_credentials()
    })?;
    url::Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("motilal: base URL `api_url`: {e}"),
        )
        .before_credentials()
    })?;
    Ok(raw.clone())
}

fn totp_failure(e: &broker_api::guest::HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "motilal: the account has no totp_secret: register an authenticator in Motilal's \
             API portal and store its secret",
        ),
        _ => http::host_failure("motilal", "TOTP", e),
    }
}

/// Whether M1's `isAuthTokenVerified` says the OTP is still pending (an explicit false; a
/// missing field is read as verified, motilal.md).
fn verification_pending(body: &Value) -> bool {
    let field = body.as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("isAuthTokenVerified"))
    });
    match field.map(|(_, v)| v) {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("false"),
        _ => false,
    }
}

/// A string field by case-insensitive name, non-empty.
fn field_ci<'v>(body: &'v Value, name: &str) -> Option<&'v str> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .filter(|s| !s.is_empty())
}

/// The object under `data` (any case; the first element when `data` is a list).
fn data_ci(body: &Value) -> Option<&Value> {
    let data = body
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("data"))
        .map(|(_, v)| v)?;
    match data {
        Value::Array(items) => items.first().filter(|v| v.is_object()),
        Value::Object(_) => Some(data),
        _ => None,
    }
}

/// The profile's client code: `data.clientcode` (any case), a string trimmed or a number.
fn client_code_of(body: &Value) -> Option<String> {
    let data = data_ci(body)?;
    let (_, v) = data
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("clientcode"))?;
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on the effective base URLs and settings; fails (before any credential) on a
    /// configuration that cannot work.
    pub fn new(
        host: &'a Host<'h>,
        urls: &BTreeMap<String, String>,
        settings: &BTreeMap<String, String>,
        api_key: &str,
        client_code: &str,
    ) -> Result<Self, ErrorOutput> {
        let settings = Settings::new(settings);
        let headers = settings.common_headers(api_key, client_code)?;
        Ok(Client {
            host,
            api: api_url(urls)?,
            settings,
            headers,
        })
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `POST {api_url}{path of step}` with the common headers, `extra` headers and `body`.
    fn post(
        &self,
        step: Step,
        extra: &[(&str, &str)],
        body: String,
    ) -> Result<Value, Result<MotilalError, ErrorOutput>> {
        let path = match step {
            Step::Login => "login_path",
            Step::AccessToken => "access_token_path",
            Step::Profile => "profile_path",
        };
        let url = http::join(&self.api, self.settings.get(path));
        let mut req = HttpRequest::new("POST", url);
        for (name, value) in self
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(extra.iter().copied())
        {
            req = req.header(name, value);
        }
        let mut req = req.body("application/json", body);
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for [name, value] in &mut req.headers {
            if ["authorization", "apisecretkey", "accesstoken", "apikey"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                value.zeroize();
            }
        }
        let resp = result.map_err(|e| Err(http::host_failure("motilal", step.name(), &e)))?;
        errors::envelope(step, &resp)
    }

    /// M1 with a fresh code, sent once: the AuthToken. A code refused with `MO1093` is not
    /// retried: M1 carries the password hash with it, so a second M1 would send the password
    /// twice in one refresh.
    pub fn login(&self, user: &str, hash: &str, two_fa: &str) -> Result<String, ErrorOutput> {
        let step = Step::Login;
        let code = self
            .host
            .totp()
            .map_err(|e| totp_failure(&e).before_credentials())?;
        let mut body =
            json!({"userid": user, "password": hash, "2FA": two_fa, "totp": code.code.expose()})
                .to_string();
        let answer = self.post(step, &[], body.clone());
        body.zeroize();
        match answer {
            Ok(body) => Self::auth_token_of(&body),
            Err(Ok(e)) => Err(errors::classify(step, &e)),
            Err(Err(e)) => Err(e),
        }
        .map_err(|e| http::code_refused_with_secret(e, "password"))
    }

    fn auth_token_of(body: &Value) -> Result<String, ErrorOutput> {
        // The doc shows the AuthToken at the top level; a `data` wrapper is read too.
        let data = data_ci(body);
        if verification_pending(body) || data.is_some_and(verification_pending) {
            return Err(ErrorOutput::new(
                ErrorClass::TwofaUnavailable,
                "motilal: M1 authdirectapi: the AuthToken awaits an SMS/e-mail OTP \
                 (isAuthTokenVerified FALSE): enable TOTP in Motilal's API portal",
            ));
        }
        field_ci(body, "AuthToken")
            .or_else(|| data.and_then(|d| field_ci(d, "AuthToken")))
            .map(str::to_owned)
            .ok_or_else(|| protocol(Step::Login, "SUCCESS without an AuthToken"))
    }

    /// M2: the `accesstoken` for apps with an API secret. Never fails the login (motilal.md): a
    /// failure is logged and the AuthToken alone is kept.
    pub fn access_token(&self, auth_token: &str, api_secret: &str) -> Option<String> {
        let step = Step::AccessToken;
        let extra = [("Authorization", auth_token), ("apisecretkey", api_secret)];
        let result = StepRetry::run(self.host, "motilal", step.name(), || {
            match self.post(step, &extra, String::new()) {
                Ok(body) => Ok(Ok(body)),
                Err(Ok(e)) => Ok(Err(errors::classify(step, &e))),
                Err(Err(e)) => Err(e),
            }
        });
        let failure = match result {
            Ok(Ok(body)) => match field_ci(&body, "accesstoken")
                .or_else(|| data_ci(&body).and_then(|d| field_ci(d, "accesstoken")))
            {
                Some(t) => return Some(t.to_owned()),
                None => "SUCCESS without an accesstoken".to_owned(),
            },
            Ok(Err(e)) | Err(e) => e.message,
        };
        self.host.log(
            Level::Warn,
            &format!("motilal: {failure}; keeping the AuthToken without an accesstoken"),
        );
        None
    }

    /// V: `Ok(clientcode)` when Motilal accepts the token; `Err(Ok(error))` when it refuses the
    /// session; `Err(Err(output))` for any other failure.
    pub fn profile(
        &self,
        auth_token: &str,
        access_token: Option<&str>,
    ) -> Result<String, Result<MotilalError, ErrorOutput>> {
        let step = Step::Profile;
        let mut extra = vec![("Authorization", auth_token)];
        if let Some(t) = access_token {
            extra.push(("accesstoken", t));
        }
        let body = self.post(step, &extra, "{}".into()).map_err(|e| match e {
            Ok(refused) if refused.is_session_refusal() => Ok(refused),
            Ok(other) => Err(errors::classify(step, &other)),
            Err(e) => Err(e),
        })?;
        client_code_of(&body)
            .ok_or_else(|| Err(protocol(step, "no data.clientcode in the profile")))
    }

    /// M2 (when an API secret is set) then V: the login's output for `auth_token`, checked to
    /// belong to `broker_user_id`.
    pub fn complete(
        &self,
        auth_token: String,
        api_secret: Option<&str>,
        broker_user_id: &str,
        issued_at_ms: i64,
    ) -> Result<LoginOutput, ErrorOutput> {
        let access = api_secret.and_then(|s| self.access_token(&auth_token, s));
        let mut retry = StepRetry::default();
        let verified = loop {
            match self.profile(&auth_token, access.as_deref()) {
                Err(Err(e)) if retry.wait(self.host, "motilal", Step::Profile.name(), &e) => {}
                other => break other,
            }
        };
        let confirmed = match verified {
            Ok(code) => code,
            Err(Ok(refused)) => {
                return Err(protocol(
                    Step::Profile,
                    &format!(
                        "the fresh AuthToken was refused ({} {})",
                        refused.code, refused.message
                    ),
                ));
            }
            Err(Err(e)) => return Err(e),
        };
        if !confirmed.eq_ignore_ascii_case(broker_user_id) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "motilal: the session belongs to {confirmed}, not to the account's {broker_user_id}"
                ),
            ));
        }
        let mut extras = BTreeMap::new();
        if let Some(t) = access {
            extras.insert("accesstoken".to_owned(), Value::String(t));
        }
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: Sensitive::new(auth_token),
            broker_user_id: confirmed,
            issued_at_ms,
            // "Authentication token will be expired at every day morning 6 a.m." [OFF D1].
            expires_at_ms: ist::next_ist_wall_time(issued_at_ms, 6, 0),
            extras,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_is_sha256_of_password_then_key() {
        assert_eq!(
            password_hash("Passw0rd!", "APIKEY123"),
            "b1bde8652e19fca56d19036c00e7f7e41f71a4f3ca6054e2c01cdc4c05cf5c25"
        );
        // The docs' worked example: SHA-256("abc" + "123") = SHA-256("abc123").
        assert_eq!(password_hash("abc", "123"), password_hash("abc12", "3"));
    }

    #[test]
    fn two_factor_accepts_a_date_or_a_pan() {
        assert_eq!(two_factor("18/10/1988").unwrap(), "18/10/1988");
        assert_eq!(two_factor(" abcde1234f ").unwrap(), "ABCDE1234F");
        for bad in ["1988-10-18", "18/10/88", "ABCDE12345", ""] {
            let e = two_factor(bad).unwrap_err();
            assert!(!e.credentials_sent, "{bad}");
        }
    }

    #[test]
    fn is_auth_token_verified_false_means_otp_pending() {
        assert!(verification_pending(
            &json!({"isAuthTokenVerified": "FALSE"})
        ));
        assert!(verification_pending(&json!({"isauthtokenverified": false})));
        assert!(!verification_pending(
            &json!({"isAuthTokenVerified": "TRUE"})
        ));
        assert!(!verification_pending(&json!({})));
    }

    #[test]
    fn the_profile_client_code_is_read_in_any_shape() {
        for body in [
            json!({"data": {"clientcode": "AA017"}}),
            json!({"Data": {"ClientCode": " AA017 "}}),
            json!({"data": [{"clientCode": "AA017"}]}),
        ] {
            assert_eq!(client_code_of(&body).as_deref(), Some("AA017"), "{body}");
        }
        assert_eq!(
            client_code_of(&json!({"data": {"clientcode": 12345}})).as_deref(),
            Some("12345")
        );
        assert_eq!(client_code_of(&json!({"data": {"clientcode": null}})), None);
    }
}
