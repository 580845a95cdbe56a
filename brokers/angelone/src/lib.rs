//! Angel One SmartAPI login strategy (`../shared/protocols/angelone.md` in the design notes):
//!
//! - headless login: A1 `loginByPassword` with the MPIN (`pin`) and a TOTP code in one JSON POST
//!   (sent once: a refused code is not retried, since a retry would send the MPIN again), then A2
//!   `getProfile` to check the token before returning it;
//! - `verify` through A2;
//! - assisted login: `{login_url}/publisher-login?api_key=..&state=..`; Angel One redirects to the
//!   SmartAPI app's registered URL (the daemon's `/callback/angelone`) with `auth_token` and
//!   `feed_token`, which A2 checks.
//!
//! Tokens expire at the first 00:00 IST strictly after login (the JWT's `exp` is ignored). The
//! `feed_token` is served to consumers; the `refresh_token` is stored, never served.
//! Base URLs: `api_url` (default `https://apiconnect.angelone.in`), `login_url`
//! (`https://smartapi.angelone.in`).

mod errors;
pub mod flow;
pub mod settings;

use std::collections::BTreeMap;

use broker_api::guest::HostCallError;
use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Sensitive, Validity,
    VerifyOutput, VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, form};
use broker_common::ist;

use flow::{Client, Tokens};
use settings::Settings;

/// The Angel One SmartAPI strategy.
pub struct AngelOne;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("angelone: the account has no {field}"),
    )
    .before_credentials()
}

fn api_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key (the SmartAPI app's key)"))
}

/// The MPIN: `pin`, else (accounts stored before `pin` existed) the `password`, with a flag.
fn mpin(c: &Credentials) -> Result<(&str, bool), ErrorOutput> {
    if let Some(pin) = c.extra("pin") {
        return Ok((pin, false));
    }
    c.password
        .as_ref()
        .map(Sensitive::expose)
        .filter(|p| !p.is_empty())
        .map(|p| (p, true))
        .ok_or_else(|| missing("pin (the 4-digit MPIN)"))
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

fn totp_failure(e: &HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "angelone: the account has no totp_secret: enable TOTP at smartapi.angelone.in/enable-totp \
             and store its secret, or use assisted login",
        ),
        _ => http::host_failure("angelone", "TOTP", e),
    }
}

/// A1 with a fresh code, sent once. A refused code (`AB1050`) is not retried: A1 takes the MPIN
/// with the code, so a second A1 would send the MPIN twice in one refresh.
fn login_with_totp(
    host: &Host<'_>,
    client: &Client<'_, '_>,
    client_code: &str,
    pin: &str,
) -> Result<Tokens, ErrorOutput> {
    let code = host
        .totp()
        .map_err(|e| totp_failure(&e).before_credentials())?;
    client
        .login(client_code, pin, code.code.expose())
        .map_err(|e| http::code_refused_with_secret(e, "MPIN"))
}

/// The login's output: expiry at the first 00:00 IST after `issued`.
fn output(tokens: &Tokens, confirmed: String, issued: i64) -> LoginOutput {
    let mut extras = BTreeMap::new();
    if let Some(feed) = &tokens.feed {
        extras.insert("feed_token".into(), serde_json::Value::String(feed.clone()));
    }
    if let Some(refresh) = &tokens.refresh {
        extras.insert(
            "refresh_token".into(),
            serde_json::Value::String(refresh.clone()),
        );
    }
    LoginOutput {
        v: WIRE_VERSION,
        access_token: Sensitive::new(tokens.jwt.as_str()),
        broker_user_id: confirmed,
        issued_at_ms: issued,
        expires_at_ms: ist::next_ist_midnight(issued),
        extras,
    }
}

impl Strategy for AngelOne {
    const ID: &'static str = "angelone";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Angel One SmartAPI".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Angel One client code (e.g. A123456)",
                    false,
                    true,
                ),
                field("api_key", "SmartAPI app API key", false, true),
                field(
                    "totp_secret",
                    "TOTP secret (base32, from smartapi.angelone.in/enable-totp)",
                    true,
                    true,
                ),
                field("pin", "Angel One MPIN (4 digits)", true, true),
                field(
                    "password",
                    "Not used: Angel One takes the MPIN (sent as the MPIN only when no pin is stored)",
                    true,
                    false,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the first 00:00 Asia/Kolkata after login".into(),
            base_urls: BTreeMap::from([
                ("api_url".into(), "https://apiconnect.angelone.in".into()),
                ("login_url".into(), "https://smartapi.angelone.in".into()),
            ]),
            settings: settings::defaults(),
            allowed_hosts: vec![
                "apiconnect.angelone.in".into(),
                "smartapi.angelone.in".into(),
            ],
            max_concurrency: 4,
            // loginByPassword: 1/s per client code; getProfile 3/s.
            rate_limit_per_sec: 3.0,
            served_extras: vec!["feed_token".into()],
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let (pin, from_password) = mpin(&req.credentials)?;
        let client_code = req.broker_user_id.trim().to_ascii_uppercase();
        if client_code.is_empty() {
            return Err(missing("broker_user_id (the client code)"));
        }
        let settings = Settings::from_map(&req.settings)?;
        let client = Client::new(host, &req.base_urls, key, &settings)
            .map_err(ErrorOutput::before_credentials)?;
        host.log(
            Level::Info,
            &format!("angelone: headless login (attempt {})", req.attempt),
        );
        if from_password {
            host.log(
                Level::Warn,
                "angelone: the account has no pin; sending its password as the MPIN (backward \
                 compatibility): store the 4-digit MPIN in `pin`",
            );
        }
        let tokens = login_with_totp(host, &client, &client_code, pin)?;
        let issued = host.now_unix_ms();
        let confirmed = client.confirm(&tokens.jwt, &client_code)?;
        host.log(
            Level::Info,
            "angelone: logged in; token verified with getProfile",
        );
        Ok(output(&tokens, confirmed, issued))
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let settings = Settings::from_map(&req.settings)?;
        let client = Client::new(host, &req.base_urls, key, &settings)?;
        let token = flow::bare_token(req.access_token.expose());
        let (valid, message) = match client.profile(token) {
            Ok(code) if code.eq_ignore_ascii_case(req.broker_user_id.trim()) => {
                (true, String::new())
            }
            Ok(code) => (
                false,
                format!("the token belongs to {code}, not {}", req.broker_user_id),
            ),
            Err(Ok(refused)) => (false, refused),
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
        let key = api_key(&req.credentials)?;
        let login = flow::base_url(&req.base_urls, "login_url")?;
        // The redirect goes to the URL registered with the SmartAPI app; `state` is echoed.
        let query = form(&[("api_key", key), ("state", &req.state)]);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: http::join(login, &format!("/publisher-login?{query}")),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let settings = Settings::from_map(&req.settings)?;
        let client = Client::new(host, &req.base_urls, key, &settings)?;
        let value = |name: &str| {
            req.query
                .get(name)
                .map(|v| flow::bare_token(v).to_owned())
                .filter(|v| !v.is_empty())
        };
        let jwt = value("auth_token").ok_or_else(|| {
            ErrorOutput::new(
                ErrorClass::Protocol,
                "angelone: the login redirect has no auth_token",
            )
        })?;
        let tokens = Tokens {
            jwt,
            feed: value("feed_token"),
            refresh: value("refresh_token"),
        };
        host.log(Level::Info, "angelone: finishing an assisted login");
        let client_code = req.broker_user_id.trim().to_ascii_uppercase();
        let issued = host.now_unix_ms();
        let confirmed = client.confirm(&tokens.jwt, &client_code)?;
        Ok(output(&tokens, confirmed, issued))
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(AngelOne);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_serves_the_feed_token_and_never_the_refresh_token() {
        let m = AngelOne::manifest();
        assert_eq!(m.served_extras, vec!["feed_token".to_string()]);
        assert!(
            m.credential_fields
                .iter()
                .any(|f| f.name == "pin" && f.secret)
        );
        assert_eq!(m.validity, Validity::Daily);
    }

    #[test]
    fn the_pin_wins_over_the_password() {
        let mut c = Credentials {
            password: Some(Sensitive::new("web-password")),
            ..Credentials::default()
        };
        assert_eq!(mpin(&c).unwrap(), ("web-password", true));
        c.extra.insert("pin".into(), Sensitive::new("7391"));
        assert_eq!(mpin(&c).unwrap(), ("7391", false));
        assert!(mpin(&Credentials::default()).is_err());
    }
}
