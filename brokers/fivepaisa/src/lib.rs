//! 5paisa Xstream OpenAPI login strategy (`../shared/protocols/fivepaisa.md` in the design notes):
//!
//! - headless login, **provisional** (5paisa is withdrawing it): F1 `TOTPLogin` with the client
//!   code, a fresh TOTP code and the PIN (extra field `pin`) in one request, sent once (an `Invalid
//!   TOTP` is not retried: a retry would send the PIN again); F2 `GetAccessToken` at once with the
//!   Encryption Key (`api_secret`)
//!   and the API User ID (extra field `api_user_id`); F3 `V1/TradeBook` with the token. An F1 that
//!   answers like a withdrawn endpoint (404/410, HTML, empty or non-JSON body, a "deprecated"
//!   message) is `automation_blocked`: use the OAuth login;
//! - `verify` through F3;
//! - assisted login (OAuth, the recommended path): `login_url?VendorKey=..&ResponseURL=..&State=..`,
//!   then F2 and F3 from the callback's `RequestToken`;
//! - tokens expire at 23:59 IST on the day of issue; no login is started in the day's last minute.

mod errors;
pub mod flow;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity, VerifyOutput,
    VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};

pub use flow::expiry;

/// Default path of F1 under `api_url`.
pub const TOTP_LOGIN_PATH: &str = "TOTPLogin";
/// Default path of F2 under `api_url`.
pub const ACCESS_TOKEN_PATH: &str = "GetAccessToken";
/// Default path of F3 under `api_url`.
pub const VERIFY_PATH: &str = "V1/TradeBook";

/// The 5paisa Xstream OpenAPI strategy.
pub struct FivePaisa;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("fivepaisa: the account has no {field}"),
    )
    .before_credentials()
}

fn user_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key (User Key)"))
}

fn app(c: &Credentials) -> Result<flow::App<'_>, ErrorOutput> {
    Ok(flow::App {
        user_key: user_key(c)?,
        encry_key: c
            .api_secret
            .as_ref()
            .map(|s| s.expose())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("api_secret (Encryption Key)"))?,
        api_user_id: c
            .extra("api_user_id")
            .ok_or_else(|| missing("api_user_id (API User ID)"))?,
    })
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

/// The callback's `RequestToken`, read case-insensitively.
fn request_token(query: &BTreeMap<String, String>) -> Option<&str> {
    query
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("RequestToken") && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

impl Strategy for FivePaisa {
    const ID: &'static str = "fivepaisa";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "5paisa Xstream OpenAPI".into(),
            credential_fields: vec![
                field("broker_user_id", "5paisa client code", false, true),
                field("pin", "5paisa login PIN / MPIN", true, true),
                field("totp_secret", "5paisa TOTP secret (base32)", true, true),
                field("api_key", "5paisa API User Key (USER_KEY)", false, true),
                field(
                    "api_secret",
                    "5paisa API Encryption Key (ENCRYPTION_KEY)",
                    true,
                    true,
                ),
                field(
                    "api_user_id",
                    "5paisa API User ID (USER_ID of the API keys)",
                    false,
                    true,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until 23:59 Asia/Kolkata on the day of login".into(),
            base_urls: BTreeMap::from([
                (
                    "api_url".into(),
                    "https://Openapi.5paisa.com/VendorsAPI/Service1.svc".into(),
                ),
                (
                    "login_url".into(),
                    "https://dev-openapi.5paisa.com/WebVendorLogin/VLogin/Index".into(),
                ),
            ]),
            settings: BTreeMap::from([
                ("totp_login_path".into(), TOTP_LOGIN_PATH.into()),
                ("access_token_path".into(), ACCESS_TOKEN_PATH.into()),
                ("verify_path".into(), VERIFY_PATH.into()),
            ]),
            allowed_hosts: vec!["openapi.5paisa.com".into(), "dev-openapi.5paisa.com".into()],
            max_concurrency: 2,
            rate_limit_per_sec: 1.0,
            served_extras: vec!["client_name".into()],
            validity: Validity::Daily,
            // fivepaisa.md: at most one F1 per account per minute.
            min_login_interval_ms: 60_000,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let c = &req.credentials;
        let app = app(c)?;
        let pin = c.extra("pin").ok_or_else(|| missing("pin"))?;
        if req.broker_user_id.is_empty() {
            return Err(missing("broker_user_id"));
        }
        if let Some(wait) = flow::in_dead_minute(host.now_unix_ms()) {
            let mut e = ErrorOutput::new(
                ErrorClass::RateLimited,
                "fivepaisa: a token minted after 23:59 IST expires at once; waiting for midnight",
            )
            .before_credentials();
            e.retry_after_ms = Some(wait);
            return Err(e);
        }
        let client = flow::Client::new(host, &req.base_urls, &req.settings)?;
        host.log(
            Level::Info,
            &format!(
                "fivepaisa: headless TOTP login, provisional (attempt {})",
                req.attempt
            ),
        );
        let request_token = client.totp_login(app.user_key, &req.broker_user_id, pin)?;
        let out = client.complete(&app, &request_token, &req.broker_user_id)?;
        host.log(
            Level::Info,
            "fivepaisa: logged in; token verified with V1/TradeBook",
        );
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let key = user_key(&req.credentials)?;
        let client = flow::Client::new(host, &req.base_urls, &req.settings)?;
        let (valid, message) =
            match client.trade_book(key, &req.broker_user_id, req.access_token.expose()) {
                Ok(()) => (true, String::new()),
                Err(Ok(refused)) => (false, format!("5paisa refused the token: {refused}")),
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
        let key = user_key(&req.credentials)?;
        let login = flow::base_url(&req.base_urls, "login_url")?;
        let mut url = url::Url::parse(&login).map_err(|e| {
            ErrorOutput::new(ErrorClass::Protocol, format!("fivepaisa: login_url: {e}"))
        })?;
        url.query_pairs_mut()
            .append_pair("VendorKey", key)
            .append_pair("ResponseURL", &req.redirect_url)
            .append_pair("State", &req.state);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: url.into(),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let app = app(&req.credentials)?;
        let token = request_token(&req.query).ok_or_else(|| {
            ErrorOutput::new(
                ErrorClass::Protocol,
                "fivepaisa: the login redirect has no RequestToken",
            )
        })?;
        let client = flow::Client::new(host, &req.base_urls, &req.settings)?;
        host.log(
            Level::Info,
            "fivepaisa: finishing an OAuth (assisted) login",
        );
        client.complete(&app, token, &req.broker_user_id)
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(FivePaisa);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_declares_pin_and_api_user_id_and_serves_no_refresh_token() {
        let m = FivePaisa::manifest();
        for name in ["pin", "api_user_id"] {
            let f = m.credential_fields.iter().find(|f| f.name == name).unwrap();
            assert!(f.required && !f.label.is_empty(), "{name}");
        }
        assert!(m.served_extras.iter().all(|e| !e.contains("refresh")));
        assert_eq!(m.min_login_interval_ms, 60_000);
    }

    #[test]
    fn request_token_is_read_in_any_case() {
        let q = BTreeMap::from([("requesttoken".to_string(), "RT".to_string())]);
        assert_eq!(request_token(&q), Some("RT"));
        assert_eq!(request_token(&BTreeMap::new()), None);
    }
}
