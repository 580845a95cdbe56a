//! Fyers API v3 login strategy (`../shared/protocols/fyers.md` in the design notes):
//!
//! - headless login, **community-known and unofficial**: the `vagator` PIN + TOTP flow of
//!   FyersDev's sample code and third-party clients (H1 `send_login_otp(_v2)`, H2 `verify_otp`,
//!   H3 `verify_pin(_v2)`; [`vagator`]), then H4 `POST /token` for an auth code and H5
//!   `/validate-authcode` with `appIdHash` ([`api`]). Its endpoint names, encoding and user-id
//!   field are settings; `headless_login = "off"` turns it off;
//! - assisted login, the **official** OAuth flow: `generate-authcode` in a browser, then H5 from
//!   the callback's `auth_code`;
//! - `verify` (and the end of every login) through `GET /profile`.
//!
//! Tokens expire at `min(jwt.exp, first 06:00 IST after issue)`. The refresh token is dropped
//! unless `keep_refresh_token = "true"` (Fyers ends refresh sessions from April 2026).
//! Base URLs: `login_url` (`https://api-t2.fyers.in/vagator/v2`), `api_url`
//! (`https://api-t1.fyers.in/api/v3`).

pub mod api;
mod errors;
pub mod vagator;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity, VerifyOutput,
    VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, StepRetry};

use api::{Api, App};
use vagator::{Vagator, VagatorSettings};

pub use api::app_id_hash;

/// The Fyers API v3 strategy.
pub struct Fyers;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("fyers: the account has no {field}"),
    )
    .before_credentials()
}

fn app(c: &Credentials) -> Result<App, ErrorOutput> {
    let key = c.api_key.as_deref().unwrap_or_default();
    if key.is_empty() {
        return Err(missing("api_key (App ID)"));
    }
    App::parse(key).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            "fyers: api_key must be the App ID with its type suffix, e.g. ABCD1234EF-100",
        )
        .before_credentials()
    })
}

fn secret(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret (App secret)"))
}

/// The app's registered redirect URL: the `redirect_uri` field, else the host's callback.
fn redirect_uri(c: &Credentials, host_callback: Option<&str>) -> Result<String, ErrorOutput> {
    c.extra("redirect_uri")
        .or(host_callback.filter(|u| !u.is_empty()))
        .map(str::to_owned)
        .ok_or_else(|| missing("redirect_uri (the app's registered redirect URL)"))
}

fn base<'u>(urls: &'u BTreeMap<String, String>, name: &str) -> Result<&'u str, ErrorOutput> {
    urls.get(name).map(String::as_str).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("fyers: base URL `{name}` is not configured"),
        )
        .before_credentials()
    })
}

fn flag(settings: &BTreeMap<String, String>, name: &str) -> bool {
    settings
        .get(name)
        .is_some_and(|v| matches!(v.trim(), "true" | "yes" | "1" | "on"))
}

/// A `state` for H4 that no other login of this process shares (the host's clock and the user).
fn state_for(now_ms: i64, fy_id: &str) -> String {
    app_id_hash(fy_id, &now_ms.to_string())[..16].to_owned()
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

impl Strategy for Fyers {
    const ID: &'static str = "fyers";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        let mut settings: BTreeMap<String, String> = vagator::SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        settings.insert("headless_login".into(), "vagator".into());
        settings.insert("keep_refresh_token".into(), "false".into());
        Manifest {
            v: WIRE_VERSION,
            display_name: "Fyers API v3".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Fyers client ID (e.g. XY12345)",
                    false,
                    true,
                ),
                field(
                    "api_key",
                    "Fyers App ID with its type suffix (e.g. ABCD1234EF-100)",
                    false,
                    true,
                ),
                field("api_secret", "Fyers App secret (Secret ID)", true, true),
                field(
                    "totp_secret",
                    "Fyers External 2FA TOTP key (myaccount.fyers.in)",
                    true,
                    true,
                ),
                field("pin", "Fyers login PIN (4 digits)", true, true),
                field(
                    "redirect_uri",
                    "Redirect URL registered for the Fyers app (default: this daemon's /callback/fyers)",
                    false,
                    false,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity:
                "until the first 06:00 Asia/Kolkata after login (or the token's exp if \
                             earlier); headless login uses the community-known vagator flow, \
                             assisted login the official OAuth flow"
                    .into(),
            base_urls: BTreeMap::from([
                (
                    "login_url".into(),
                    "https://api-t2.fyers.in/vagator/v2".into(),
                ),
                ("api_url".into(), "https://api-t1.fyers.in/api/v3".into()),
            ]),
            settings,
            allowed_hosts: vec!["api-t1.fyers.in".into(), "api-t2.fyers.in".into()],
            max_concurrency: 2,
            rate_limit_per_sec: 0.5,
            served_extras: Vec::new(),
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let c = &req.credentials;
        match req.settings.get("headless_login").map(|s| s.trim()) {
            None | Some("vagator") => {}
            Some(other) => {
                return Err(ErrorOutput::new(
                    ErrorClass::AutomationBlocked,
                    format!("fyers: headless_login = {other:?}: headless login is off; use assisted login"),
                )
                .before_credentials());
            }
        }
        let app = app(c)?;
        let secret = secret(c)?;
        let pin = c.extra("pin").ok_or_else(|| missing("pin"))?;
        if req.broker_user_id.is_empty() {
            return Err(missing("broker_user_id"));
        }
        let redirect = redirect_uri(c, req.redirect_url.as_deref())?;
        let settings = VagatorSettings::from_settings(&req.settings)?;
        let vag = Vagator::new(host, base(&req.base_urls, "login_url")?, settings);
        let api = Api::new(host, base(&req.base_urls, "api_url")?);
        host.log(
            Level::Info,
            &format!(
                "fyers: headless login over the community-known vagator flow (unofficial, \
                 provisional; assisted login is the official path), attempt {}",
                req.attempt
            ),
        );
        let fy_id = req.broker_user_id.as_str();
        // H1 sends no credential: its failures may start a new login. H2 sends TOTP codes,
        // which Fyers counts towards its block (fyers.md): after it, no new login this refresh.
        let rk1 = vag
            .send_otp(fy_id)
            .map_err(ErrorOutput::before_credentials)?;
        let rk2 = vag.verify_otp(&rk1)?;
        let session = vag.verify_pin(&rk2, pin)?;
        let state = state_for(host.now_unix_ms(), fy_id);
        let code = StepRetry::run(host, "fyers", "H4 /token", || {
            api.token(&session, fy_id, &app, &redirect, &state)
        })?;
        drop(session);
        let out = api.complete(
            &app,
            secret,
            &code,
            fy_id,
            flag(&req.settings, "keep_refresh_token"),
        )?;
        host.log(
            Level::Info,
            "fyers: logged in; token verified with /profile",
        );
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let app = app(&req.credentials)?;
        let api = Api::new(host, base(&req.base_urls, "api_url")?);
        let (valid, message) = match api.profile(&app.id, req.access_token.expose()) {
            Ok(id) if id.eq_ignore_ascii_case(&req.broker_user_id) => (true, String::new()),
            Ok(id) => (
                false,
                format!("the token belongs to {id}, not {}", req.broker_user_id),
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
        let app = app(&req.credentials)?;
        let redirect = redirect_uri(&req.credentials, Some(&req.redirect_url))?;
        let query = http::form(&[
            ("client_id", &app.id),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("state", &req.state),
        ]);
        let api = base(&req.base_urls, "api_url")?;
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: format!("{}?{query}", http::join(api, "/generate-authcode")),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let app = app(&req.credentials)?;
        let secret = secret(&req.credentials)?;
        if let Some(s) = req.query.get("s").filter(|s| !s.eq_ignore_ascii_case("ok")) {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                format!(
                    "fyers: the login redirect reports s={}: log in again",
                    http::truncate(s, 20)
                ),
            ));
        }
        // `auth_code` by name: the redirect's `code` is a status (200), not the code.
        let code = req
            .query
            .get("auth_code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "fyers: the login redirect has no auth_code",
                )
            })?;
        let api = Api::new(host, base(&req.base_urls, "api_url")?);
        host.log(
            Level::Info,
            "fyers: finishing an assisted (official OAuth) login",
        );
        api.complete(
            &app,
            secret,
            code,
            &req.broker_user_id,
            flag(&req.settings, "keep_refresh_token"),
        )
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Fyers);
