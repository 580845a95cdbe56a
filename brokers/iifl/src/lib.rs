//! IIFL Capital (generation 1, "Markets' APIs") login strategy (iifl.md):
//!
//! - headless login: the provisional portal driver ([`portal`]) yields an `authCode`, exchanged at
//!   `POST {api_url}/getusersession` with `checkSum = sha256(clientId + authCode + appSecret)`,
//!   then checked with `GET {api_url}/profile`;
//! - `verify` through `/profile`;
//! - assisted login: `{portal_url}/?v=1&appkey=<appKey>&redirecturl=<callback?state=...>`, then
//!   the same exchange from the redirect's `authCode`/`clientId` (any casing iifl.md lists).
//!
//! Tokens expire at the next 00:00 IST after issue; the JWT's own `exp` (~180 days) is ignored.
//!
//! Base URL names: `portal_url` (default `https://markets.iiflcapital.com`), `api_url`
//! (`https://api.iiflcapital.com/v1`), and, to move a portal step without a new build,
//! `portal_client_verify_url`, `portal_enckey_url`, `portal_password_url`, `portal_totp_url`
//! (full URLs; default `portal_url` + `/omk/auth/access/...`).

mod crypto;
mod errors;
pub mod portal;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, HttpRequest, LoginOutput, LoginRequest, Manifest, Sensitive,
    VerifyOutput, VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, StepRetry, str_field};
use broker_common::ist;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

pub use crypto::{openssl_encrypt, openssl_encrypt_with_salt};
use errors::{Step, protocol};

/// The IIFL Capital strategy.
pub struct Iifl;

/// What the portal's redirect carries.
pub struct AuthCode {
    /// Single-use `authCode`.
    pub auth_code: String,
    /// `clientId` of the redirect, when present.
    pub client_id: Option<String>,
}

impl Drop for AuthCode {
    fn drop(&mut self) {
        self.auth_code.zeroize();
    }
}

/// `authCode` and `clientId` from redirect query pairs, in any casing iifl.md lists (`authCode`,
/// `authcode`, `auth_code`; `clientId`, `clientid`, `client_id`). Also rescues a value into which
/// a naive `redirecturl + "?authCode=..."` glued a second query (`state=S?authCode=A&clientId=C`).
pub fn auth_code_from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<AuthCode> {
    let mut auth_code = None;
    let mut client_id = None;
    let mut take = |k: &str, v: &str| match k.to_ascii_lowercase().replace('_', "").as_str() {
        "authcode" if !v.is_empty() => auth_code = Some(v.to_owned()),
        "clientid" if !v.is_empty() => client_id = Some(v.to_owned()),
        _ => {}
    };
    for (k, v) in pairs {
        take(k, v);
        if let Some((_, glued)) = v.split_once('?') {
            for (k, v) in url::form_urlencoded::parse(glued.as_bytes()) {
                take(&k, &v);
            }
        }
    }
    auth_code.map(|auth_code| AuthCode {
        auth_code,
        client_id,
    })
}

/// `checkSum` of `getusersession`: lowercase hex SHA-256 of `clientId + authCode + appSecret`.
pub fn checksum(client_id: &str, auth_code: &str, app_secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(client_id.as_bytes());
    h.update(auth_code.as_bytes());
    h.update(app_secret.as_bytes());
    hex::encode(h.finalize())
}

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("iifl: the account has no {field}"),
    )
    .before_credentials()
}

fn app_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key (appKey)"))
}

fn app_secret(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret (appSecret)"))
}

fn api_url(urls: &BTreeMap<String, String>) -> Result<&str, ErrorOutput> {
    urls.get("api_url").map(String::as_str).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            "iifl: base URL `api_url` is not configured",
        )
    })
}

/// `GET /profile`: `Ok(clientId)` if IIFL accepts the session, `Err(Ok(message))` if it refuses it
/// (EC044 or 401), `Err(Err(_))` for other failures.
fn profile(
    host: &Host<'_>,
    api: &str,
    session: &str,
) -> Result<String, Result<String, ErrorOutput>> {
    let step = Step::Profile;
    let mut auth = format!("Bearer {session}");
    let req = HttpRequest::new("GET", http::join(api, "/profile"))
        .header("Accept", "application/json")
        .header("Authorization", auth.as_str());
    auth.zeroize();
    let resp = host
        .http(&req)
        .map_err(|e| Err(http::host_failure("iifl", step.name(), &e)))?;
    if let Some(e) = http::triage("iifl", step.name(), &resp) {
        return Err(Err(e));
    }
    let body = http::json_object("iifl", step.name(), &resp).map_err(Err)?;
    if let Some(e) = errors::body_error(&body, resp.status) {
        return if e.code.as_deref() == Some("EC044") || resp.status == 401 {
            Err(Ok(format!("IIFL refused the session: {}", e.message)))
        } else {
            Err(Err(errors::classify(step, &e)))
        };
    }
    body.get("result")
        .and_then(|r| str_field(r, "clientId"))
        .map(str::to_owned)
        .ok_or_else(|| Err(protocol(step, "no result.clientId")))
}

/// `getusersession` then `/profile`: the session for `code`, checked to belong to `broker_user_id`.
fn exchange(
    host: &Host<'_>,
    api: &str,
    broker_user_id: &str,
    code: &AuthCode,
    secret: &str,
) -> Result<LoginOutput, ErrorOutput> {
    let step = Step::UserSession;
    let client_id = code.client_id.as_deref().unwrap_or(broker_user_id);
    if !client_id.eq_ignore_ascii_case(broker_user_id) {
        return Err(ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            format!(
                "iifl: the login was for client {client_id}, not for the account's {broker_user_id}"
            ),
        ));
    }
    let mut sum = checksum(client_id, &code.auth_code, secret);
    let mut req = HttpRequest::new("POST", http::join(api, "/getusersession"))
        .header("Accept", "application/json")
        .body(
            "application/json",
            serde_json::json!({ "checkSum": sum }).to_string(),
        );
    sum.zeroize();
    let body = StepRetry::run_single_use(host, "iifl", step.name(), || {
        let resp = host
            .http(&req)
            .map_err(|e| http::host_failure("iifl", step.name(), &e))?;
        errors::ok_body(step, &resp)
    });
    req.body.zeroize();
    let body = body?;
    // iifl.md: `userSession` at the top level; a `result` object holding it is read too.
    let mut session = str_field(&body, "userSession")
        .or_else(|| body.get("result").and_then(|r| str_field(r, "userSession")))
        .ok_or_else(|| protocol(step, "no userSession"))?
        .to_owned();
    let issued = host.now_unix_ms();
    let mut retry = StepRetry::default();
    let verified = loop {
        match profile(host, api, &session) {
            Err(Err(e)) if retry.wait(host, "iifl", Step::Profile.name(), &e) => {}
            other => break other,
        }
    };
    let confirmed = match verified {
        Ok(id) => id,
        Err(Ok(refused)) => {
            session.zeroize();
            return Err(protocol(Step::Profile, &refused));
        }
        Err(Err(e)) => {
            session.zeroize();
            return Err(e);
        }
    };
    if !confirmed.eq_ignore_ascii_case(broker_user_id) {
        session.zeroize();
        return Err(ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            format!(
                "iifl: the session belongs to {confirmed}, not to the account's {broker_user_id}"
            ),
        ));
    }
    let out = LoginOutput {
        v: WIRE_VERSION,
        access_token: Sensitive::new(session.as_str()),
        broker_user_id: confirmed,
        issued_at_ms: issued,
        expires_at_ms: ist::next_ist_midnight(issued),
        extras: BTreeMap::new(),
    };
    session.zeroize();
    Ok(out)
}

impl Strategy for Iifl {
    const ID: &'static str = "iifl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "IIFL Capital".into(),
            credential_fields: [
                "broker_user_id",
                "password",
                "api_key",
                "api_secret",
                "totp_secret",
            ]
            .iter()
            .map(|&name| CredentialField {
                label: String::new(),
                name: name.into(),
                secret: matches!(name, "password" | "api_secret" | "totp_secret"),
                required: true,
            })
            .collect(),
            schedule: "0 3 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the next 00:00 Asia/Kolkata after login".into(),
            settings: BTreeMap::from([(portal::TotpAuthHeader::SETTING.into(), "web".into())]),
            base_urls: BTreeMap::from([
                (
                    "portal_url".into(),
                    "https://markets.iiflcapital.com".into(),
                ),
                ("api_url".into(), "https://api.iiflcapital.com/v1".into()),
            ]),
            allowed_hosts: vec![
                "markets.iiflcapital.com".into(),
                "api.iiflcapital.com".into(),
            ],
            max_concurrency: 8,
            rate_limit_per_sec: 3.0,
            served_extras: Vec::new(),
            validity: broker_api::wire::Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let key = app_key(&req.credentials)?;
        let secret = app_secret(&req.credentials)?;
        let password = req
            .credentials
            .password
            .as_ref()
            .map(|p| p.expose())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| missing("password"))?;
        if req.broker_user_id.is_empty() {
            return Err(missing("broker_user_id"));
        }
        let urls =
            portal::PortalUrls::new(&req.base_urls).map_err(ErrorOutput::before_credentials)?;
        let api = api_url(&req.base_urls).map_err(ErrorOutput::before_credentials)?;
        let auth_form = portal::TotpAuthHeader::from_settings(&req.settings)?;
        host.log(
            Level::Info,
            &format!("iifl: headless login (attempt {})", req.attempt),
        );
        let code =
            portal::headless_auth_code(host, &urls, &req.broker_user_id, password, key, auth_form)?;
        let out = exchange(host, api, &req.broker_user_id, &code, secret)?;
        host.log(
            Level::Info,
            "iifl: logged in; session verified with /profile",
        );
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let api = api_url(&req.base_urls)?;
        let (valid, message) = match profile(host, api, req.access_token.expose()) {
            Ok(id) if id.eq_ignore_ascii_case(&req.broker_user_id) => (true, String::new()),
            Ok(id) => (
                false,
                format!("the session belongs to {id}, not {}", req.broker_user_id),
            ),
            Err(Ok(message)) => (false, message),
            Err(Err(e)) => return Err(e),
        };
        Ok(VerifyOutput {
            v: WIRE_VERSION,
            valid,
            message,
        })
    }

    fn assisted_url(
        _host: &Host<'_>,
        req: AssistedUrlRequest,
    ) -> Result<AssistedUrlOutput, ErrorOutput> {
        let key = app_key(&req.credentials)?;
        let urls = portal::PortalUrls::new(&req.base_urls)?;
        let mut redirect = url::Url::parse(&req.redirect_url).map_err(|e| {
            ErrorOutput::new(
                ErrorClass::Protocol,
                format!("iifl: the callback URL is not valid: {e}"),
            )
        })?;
        redirect.query_pairs_mut().append_pair("state", &req.state);
        let query = http::form(&[
            ("v", "1"),
            ("appkey", key),
            ("redirecturl", redirect.as_str()),
        ]);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: format!("{}/?{query}", urls.portal.trim_end_matches('/')),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let secret = app_secret(&req.credentials)?;
        let api = api_url(&req.base_urls)?;
        let code = auth_code_from_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "iifl: the login redirect has no authCode",
                )
            })?;
        host.log(Level::Info, "iifl: finishing an assisted login");
        exchange(host, api, &req.broker_user_id, &code, secret)
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Iifl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_vector_from_the_spec() {
        assert_eq!(
            checksum("TEST101", "AbCdEf123456", "s3cr3t-app-secret"),
            "871129cb2e41fb26aedead56ac3feb159875d6afcc5220042b20e4cdf43427db"
        );
    }

    #[test]
    fn auth_code_in_every_casing() {
        for (a, c) in [
            ("authCode", "clientId"),
            ("authcode", "clientid"),
            ("auth_code", "client_id"),
        ] {
            let code = auth_code_from_pairs([(a, "AC1"), (c, "TEST101")]).unwrap();
            assert_eq!(code.auth_code, "AC1");
            assert_eq!(code.client_id.as_deref(), Some("TEST101"));
        }
        let glued = auth_code_from_pairs([("state", "xyz?authCode=AC2&clientId=T1")]).unwrap();
        assert_eq!(
            (glued.auth_code.as_str(), glued.client_id.as_deref()),
            ("AC2", Some("T1"))
        );
        assert!(auth_code_from_pairs([("state", "x")]).is_none());
    }
}
