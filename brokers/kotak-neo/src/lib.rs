//! Kotak Neo Trade API v2 login strategy (`../shared/protocols/kotak-neo.md` in the design
//! notes), official and headless:
//!
//! - K1 `POST {login_url}/tradeApiLogin` with the mobile, the UCC and a TOTP (Kotak's 401
//!   "Invalid credentials or TOTP." is ambiguous: one more try on a fresh step, then
//!   `invalid_credentials`); K2 `POST {login_url}/tradeApiValidate` with the MPIN, sent once;
//! - the trade session checked with the limits call on the session's own `baseUrl` ([`neo`]).
//!
//! No redirect flow exists, so no assisted login. `verify` is not offered: the check needs the
//! session's `sid` and `baseUrl`, extras that a `VerifyRequest` does not carry.
//!
//! Tokens expire at `min(jwt.exp, next 00:00 IST)`. Served extras: `sid`, `base_url`,
//! `hs_server_id`, `data_center` (consumers call Kotak with `Auth` + `Sid` on `base_url`).
//! Base URLs: `login_url` (`https://mis.kotaksecurities.com/login/1.0`), `api_url` (the fallback
//! post-login base, `https://mnapi.kotaksecurities.com/`, used when K2 names no `baseUrl`).

mod errors;
pub mod neo;

use std::collections::BTreeMap;

use broker_api::wire::{
    CredentialField, ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity,
    WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::StepRetry;
use broker_common::{ist, jwt};

use errors::{Step, protocol};
use neo::Neo;

/// The Kotak Neo Trade API strategy.
pub struct KotakNeo;

/// Extras handed to consumers.
pub const SERVED_EXTRAS: [&str; 4] = ["sid", "base_url", "hs_server_id", "data_center"];

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("kotak-neo: the account has no {field}"),
    )
    .before_credentials()
}

fn base<'u>(urls: &'u BTreeMap<String, String>, name: &str) -> Result<&'u str, ErrorOutput> {
    urls.get(name).map(String::as_str).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("kotak-neo: base URL `{name}` is not configured"),
        )
        .before_credentials()
    })
}

fn field(name: &str, label: &str, secret: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required: true,
    }
}

impl Strategy for KotakNeo {
    const ID: &'static str = "kotak-neo";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Kotak Neo Trade API".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Kotak UCC, the 5-character client code (e.g. AB123)",
                    false,
                ),
                field(
                    "api_key",
                    "Kotak Neo API access token (Neo app: Invest > Trade API > API Dashboard)",
                    true,
                ),
                field(
                    "totp_secret",
                    "TOTP secret from Kotak's TOTP registration (API dashboard)",
                    true,
                ),
                field(
                    "mobile",
                    "Mobile number registered with Kotak (+91XXXXXXXXXX)",
                    false,
                ),
                field("pin", "Kotak Neo MPIN (6 digits)", true),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity:
                "until the next 00:00 Asia/Kolkata after login (or the token's exp if earlier)"
                    .into(),
            base_urls: BTreeMap::from([
                (
                    "login_url".into(),
                    "https://mis.kotaksecurities.com/login/1.0".into(),
                ),
                (
                    "api_url".into(),
                    "https://mnapi.kotaksecurities.com/".into(),
                ),
            ]),
            settings: neo::SETTINGS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            // The post-login `baseUrl` is dynamic (kotak-neo.md): mnapi is the Go SDK's fallback,
            // cis the "ADC" base of Kotak's Python SDK (kotakneoapi 3.0.9), and any other name
            // under Kotak's domain is allowed too. A host elsewhere must be configured
            // (`api_url`), which makes the host allow it.
            allowed_hosts: vec![
                "mis.kotaksecurities.com".into(),
                "*.kotaksecurities.com".into(),
            ],
            max_concurrency: 4,
            rate_limit_per_sec: 5.0,
            served_extras: SERVED_EXTRAS.iter().map(|s| (*s).to_owned()).collect(),
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let login = LoginInputs::from_request(&req)?;
        let fallback_base = base(&req.base_urls, "api_url")?;
        let client = Neo::new(host, base(&req.base_urls, "login_url")?, &req.settings);
        host.log(
            Level::Info,
            &format!("kotak-neo: headless login (attempt {})", req.attempt),
        );
        let view = client.view_session(login.api_token, &login.mobile, login.ucc)?;
        let trade = client.trade_session(login.api_token, &view, login.mpin, login.ucc)?;
        drop(view);
        let issued = host.now_unix_ms();
        let base_url = match &trade.base_url {
            Some(b) => b.clone(),
            None => {
                host.log(Level::Warn, "kotak-neo: K2 named no baseUrl; using api_url");
                fallback_base.to_owned()
            }
        };
        verify_fresh(host, &client, &base_url, &trade)?;
        host.log(
            Level::Info,
            "kotak-neo: logged in; session verified with the limits call",
        );
        Ok(output(login.ucc, &trade, base_url, issued))
    }
}

/// What a login needs from the request, checked before anything is sent.
struct LoginInputs<'r> {
    api_token: &'r str,
    mpin: &'r str,
    mobile: String,
    ucc: &'r str,
}

impl<'r> LoginInputs<'r> {
    fn from_request(req: &'r LoginRequest) -> Result<Self, ErrorOutput> {
        let c = &req.credentials;
        let api_token = c
            .api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| missing("api_key (the Neo API access token)"))?;
        let mpin = c.extra("pin").ok_or_else(|| missing("pin (MPIN)"))?;
        let raw_mobile = c.extra("mobile").ok_or_else(|| missing("mobile"))?;
        let ucc = req.broker_user_id.as_str();
        if ucc.is_empty() {
            return Err(missing("broker_user_id (UCC)"));
        }
        let format = neo::setting(&req.settings, "mobile_format");
        let mobile = neo::mobile_number(raw_mobile, format).ok_or_else(|| {
            ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "kotak-neo: mobile is not a 10-digit Indian number (or mobile_format {format:?} is \
                     neither international nor national)"
                ),
            )
            .before_credentials()
        })?;
        Ok(LoginInputs {
            api_token,
            mpin,
            mobile,
            ucc,
        })
    }
}

/// The limits call on the fresh session, retried at its step when the failure allows it.
fn verify_fresh(
    host: &Host<'_>,
    client: &Neo<'_, '_>,
    base_url: &str,
    trade: &neo::Session,
) -> Result<(), ErrorOutput> {
    let mut retry = StepRetry::default();
    let checked = loop {
        match client.check(base_url, trade) {
            Err(Err(e)) if retry.wait(host, "kotak-neo", Step::Verify.name(), &e) => {}
            other => break other,
        }
    };
    match checked {
        Ok(()) => Ok(()),
        Err(Ok(refused)) => Err(protocol(
            Step::Verify,
            &format!("the fresh session was refused ({refused})"),
        )),
        Err(Err(e)) => Err(e),
    }
}

/// The login's output: the trade JWT, its extras, and `min(jwt.exp, next 00:00 IST)`.
fn output(ucc: &str, trade: &neo::Session, base_url: String, issued: i64) -> LoginOutput {
    let token = trade.token.expose();
    let extras = BTreeMap::from([
        ("sid".to_owned(), trade.sid.expose().into()),
        ("base_url".to_owned(), base_url.into()),
        ("hs_server_id".to_owned(), trade.hs_server_id.clone().into()),
        ("data_center".to_owned(), trade.data_center.clone().into()),
    ]);
    LoginOutput {
        v: WIRE_VERSION,
        access_token: trade.token.clone(),
        broker_user_id: ucc.to_owned(),
        issued_at_ms: issued,
        expires_at_ms: jwt::expiry_min(token, issued, ist::next_ist_midnight(issued)),
        extras,
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(KotakNeo);
