//! Shoonya (Finvasia, Noren OMS) login strategy (`../shared/protocols/shoonya.md` in the design
//! notes):
//!
//! - assisted login, the default: the OAuth page `{oauth_url}?client_id=<api_key>`; Shoonya
//!   redirects to `/callback/shoonya?code=...` with no `state` (the host binds the callback to the
//!   one pending Shoonya login), then O2 `GenAcsTok` (checksum = sha256(client id + secret code +
//!   code)) and V `Limits` with the Bearer token;
//! - headless QuickAuth, **provisional and off by default** (`flow = "quickauth"` or
//!   `headless = "true"`): Q1 on `legacy_url` (password hash, TOTP, vendor code, app key hash),
//!   then V with `jKey`. Its refusals that say QuickAuth is closed to the account ("Invalid Access
//!   Type", "User Not enabled on : API", "Invalid Vendor code", "Invalid App Key") end in a class
//!   that asks a person for an assisted login. With the flow off, a scheduled login contacts
//!   nobody and asks for the assisted login at once;
//! - `verify` through V.
//!
//! Sessions end at the next `expiry_hour_ist`:00 IST (default 06:00), or at the earlier
//! `expires_in` GenAcsTok names. Base URLs: `legacy_url`
//! (`https://api.shoonya.com/NorenWClientTP`), `api_url`
//! (`https://api.shoonya.com/NorenWClientAPI`), `oauth_url` (the browser's login page).

pub mod noren;
pub mod settings;

use std::collections::BTreeMap;

use broker_api::guest::HostCallError;
use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Sensitive, Validity,
    VerifyOutput, VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, StepRetry};

use noren::{Auth, Client, Step};
use settings::Flow;

/// The Shoonya strategy.
pub struct Shoonya;

/// The default OAuth login page (shoonya.md lists a second one; either is configuration).
pub const DEFAULT_OAUTH_URL: &str = "https://trade.shoonya.com/NorenWeb/authorize/oauth";

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("shoonya: the account has no {field}"),
    )
    .before_credentials()
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

/// An identifier that goes raw into a `jData=` body: present, and free of form delimiters.
fn plain<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str, ErrorOutput> {
    let v = value.map(str::trim).filter(|v| !v.is_empty());
    match v {
        None => Err(missing(what)),
        Some(v) if noren::form_safe(v) => Ok(v),
        // Not a secret (user id, client id, device string): naming it helps the operator.
        Some(v) => Err(ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            format!(
                "shoonya: {what} {v:?} holds a space or one of & % + = \" \\, which Noren's raw \
                 jData bodies cannot carry"
            ),
        )
        .before_credentials()),
    }
}

fn uid(broker_user_id: &str) -> Result<&str, ErrorOutput> {
    plain(
        Some(broker_user_id),
        "broker_user_id (the Shoonya user id, e.g. FA12345)",
    )
}

fn client_id(c: &Credentials) -> Result<&str, ErrorOutput> {
    plain(
        c.api_key.as_deref(),
        "api_key (the OAuth client id / vendor code, e.g. FA12345_U)",
    )
}

fn secret<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str, ErrorOutput> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| missing(what))
}

/// The device string QuickAuth wants: the `imei` extra, else one derived from the user id, stable
/// across logins as shoonya.md asks.
fn imei(c: &Credentials, uid: &str) -> Result<String, ErrorOutput> {
    match c.extra("imei") {
        Some(v) => plain(Some(v), "imei").map(str::to_owned),
        None => Ok(format!(
            "tokenbot-{}",
            &noren::sha256_hex(&["tokenbot-imei|", uid])[..12]
        )),
    }
}

/// What the person must do when QuickAuth is off or refused.
fn assisted_hint(user_id: &str) -> String {
    format!(
        "the account needs an assisted (OAuth) login: open the URL from GET \
         /api/login/shoonya/{user_id}/url"
    )
}

fn totp_failure(e: &HostCallError, user_id: &str) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            format!(
                "shoonya: the account has no totp_secret, which QuickAuth needs; {}",
                assisted_hint(user_id)
            ),
        ),
        _ => http::host_failure("shoonya", "TOTP", e),
    }
}

/// Q1 with a fresh code, sent once. A refused code is not retried: Q1 takes the password hash
/// with the code, so a second Q1 would send the password twice in one refresh. A refusal that
/// says QuickAuth is closed to the account points to the assisted login.
fn quick_auth(
    host: &Host<'_>,
    client: &Client<'_, '_>,
    req: &LoginRequest,
    uid: &str,
) -> Result<noren::Session, ErrorOutput> {
    let c = &req.credentials;
    let password = secret(
        c.password.as_ref().map(Sensitive::expose),
        "password (QuickAuth)",
    )?;
    let vendor_code = client_id(c)?;
    let api_key = secret(
        c.api_secret.as_ref().map(Sensitive::expose),
        "api_secret (the Prism API key, for QuickAuth)",
    )?;
    let imei = imei(c, uid)?;
    let code = host
        .totp()
        .map_err(|e| totp_failure(&e, &req.user_id).before_credentials())?;
    client
        .quick_auth(
            uid,
            password,
            code.code.expose(),
            vendor_code,
            api_key,
            &imei,
        )
        .map_err(|mut e| {
            if noren::refuses_quickauth(e.class) {
                e.message.push_str(&format!(
                    "; {}; set [brokers.shoonya] flow = \"oauth\" to stop trying QuickAuth",
                    assisted_hint(&req.user_id)
                ));
            }
            http::code_refused_with_secret(e, "password")
        })
}

fn text_extra(extras: &mut BTreeMap<String, serde_json::Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        extras.insert(key.to_owned(), serde_json::Value::String(v.to_owned()));
    }
}

impl Strategy for Shoonya {
    const ID: &'static str = "shoonya";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Shoonya (Finvasia, Noren OMS)".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Shoonya user id (uid, e.g. FA12345)",
                    false,
                    true,
                ),
                field(
                    "api_key",
                    "OAuth client id, also QuickAuth's vendor code (e.g. FA12345_U)",
                    false,
                    true,
                ),
                field(
                    "secret_code",
                    "OAuth secret code from the API portal (for the GenAcsTok checksum)",
                    true,
                    false,
                ),
                field(
                    "password",
                    "Shoonya login password (QuickAuth only)",
                    true,
                    false,
                ),
                field(
                    "api_secret",
                    "API key generated in Shoonya Prism (QuickAuth only; hashed into appkey)",
                    true,
                    false,
                ),
                field(
                    "totp_secret",
                    "TOTP secret (QuickAuth only; trade.shoonya.com > Profile > Security > TOTP)",
                    true,
                    false,
                ),
                field(
                    "imei",
                    "Stable device string for QuickAuth (default: derived from the user id)",
                    false,
                    false,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the next expiry_hour_ist:00 Asia/Kolkata (default 06:00), or \
                             the earlier expires_in of GenAcsTok; assisted (OAuth) login by \
                             default, headless QuickAuth only when turned on"
                .into(),
            base_urls: BTreeMap::from([
                (
                    "legacy_url".into(),
                    "https://api.shoonya.com/NorenWClientTP".into(),
                ),
                (
                    "api_url".into(),
                    "https://api.shoonya.com/NorenWClientAPI".into(),
                ),
                ("oauth_url".into(), DEFAULT_OAUTH_URL.into()),
            ]),
            settings: settings::defaults(),
            // The OAuth page is opened by the person's browser, never by the strategy.
            allowed_hosts: vec!["api.shoonya.com".into()],
            max_concurrency: 2,
            rate_limit_per_sec: 1.0,
            served_extras: vec!["susertoken".into(), "actid".into(), "flow".into()],
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            // The OAuth page takes only `client_id` and redirects with `?code=` alone.
            callback_has_state: false,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let settings = settings::parse(&req.settings)?;
        if settings.flow == Flow::OAuth {
            // Nothing is sent: whether QuickAuth still works is unknown (shoonya.md), so the
            // scheduled login asks a person at once. `automation_blocked` marks the account for
            // attention with the assisted-login link, and an assisted login clears it.
            return Err(ErrorOutput::new(
                ErrorClass::AutomationBlocked,
                format!(
                    "shoonya: headless login is off (flow = \"oauth\", the default); {}, or turn \
                     QuickAuth on with flow = \"quickauth\" if Shoonya still accepts it",
                    assisted_hint(&req.user_id)
                ),
            )
            .before_credentials());
        }
        let uid = uid(&req.broker_user_id)?;
        let client = Client::new(host, &req.base_urls)?;
        host.log(
            Level::Info,
            &format!(
                "shoonya: headless QuickAuth login (provisional), attempt {}",
                req.attempt
            ),
        );
        let session = quick_auth(host, &client, &req, uid)?;
        let issued = host.now_unix_ms();
        let actid = session.actid.clone().unwrap_or_else(|| uid.to_owned());
        client.check_fresh(Auth::JKey, &session.susertoken, uid, &actid)?;
        host.log(
            Level::Info,
            "shoonya: logged in with QuickAuth; session checked with Limits",
        );
        let mut extras = BTreeMap::new();
        text_extra(&mut extras, "susertoken", Some(session.susertoken.as_str()));
        text_extra(&mut extras, "actid", Some(actid.as_str()));
        text_extra(&mut extras, "flow", Some(Flow::QuickAuth.name()));
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: Sensitive::new(session.susertoken.as_str()),
            broker_user_id: uid.to_owned(),
            issued_at_ms: issued,
            expires_at_ms: noren::expires_at(issued, None, settings.expiry_hour_ist),
            extras,
        })
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let settings = settings::parse(&req.settings)?;
        let uid = uid(&req.broker_user_id)?;
        let client = Client::new(host, &req.base_urls)?;
        let token = req.access_token.expose();
        // A token does not say which generation minted it: the OAuth one first (the default and
        // the fallback), then QuickAuth's when that flow is on.
        let mut result = client.limits(Auth::Bearer, token, uid, uid);
        if settings.flow == Flow::QuickAuth && matches!(result, Err(Ok(_))) {
            result = client.limits(Auth::JKey, token, uid, uid);
        }
        let (valid, message) = match result {
            Ok(()) => (true, String::new()),
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
        uid(&req.broker_user_id)?;
        let client_id = client_id(&req.credentials)?;
        // Checked now, so that nobody logs in at Shoonya for a code this account cannot redeem.
        secret(
            req.credentials.extra("secret_code"),
            "secret_code (the OAuth secret code, for assisted login)",
        )?;
        let mut url =
            url::Url::parse(&noren::base_url(&req.base_urls, "oauth_url")?).map_err(|e| {
                ErrorOutput::new(ErrorClass::Protocol, format!("shoonya: oauth_url: {e}"))
            })?;
        // Only `client_id` is documented: no `state`, no `redirect_uri` (shoonya.md).
        url.query_pairs_mut().append_pair("client_id", client_id);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: url.into(),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let settings = settings::parse(&req.settings)?;
        let uid = uid(&req.broker_user_id)?;
        let client_id = client_id(&req.credentials)?;
        let secret_code = secret(
            req.credentials.extra("secret_code"),
            "secret_code (the OAuth secret code, for assisted login)",
        )?;
        let code = req
            .query
            .get("code")
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "shoonya: the OAuth redirect has no code",
                )
            })?;
        let client = Client::new(host, &req.base_urls)?;
        host.log(
            Level::Info,
            "shoonya: finishing an OAuth login (O2 GenAcsTok)",
        );
        // The code is single use: a retry after a lost answer may find it spent.
        let granted = StepRetry::run_single_use(host, "shoonya", Step::GenAcsTok.name(), || {
            client.gen_acs_tok(uid, client_id, secret_code, code)
        })?;
        let issued = host.now_unix_ms();
        if let Some(other) = granted.user_id.as_deref().filter(|u| *u != uid) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "shoonya: the OAuth login was made by user {other}, not by the account's {uid}"
                ),
            ));
        }
        let actid = granted.actid.clone().unwrap_or_else(|| uid.to_owned());
        client.check_fresh(Auth::Bearer, &granted.access_token, uid, &actid)?;
        host.log(
            Level::Info,
            "shoonya: logged in with OAuth; session checked with Limits",
        );
        let mut extras = BTreeMap::new();
        // `refresh_token` is dropped: Shoonya documents no refresh endpoint (shoonya.md), and a
        // secret nobody uses is better not kept.
        text_extra(&mut extras, "susertoken", granted.susertoken.as_deref());
        text_extra(&mut extras, "actid", Some(actid.as_str()));
        text_extra(&mut extras, "flow", Some(Flow::OAuth.name()));
        text_extra(&mut extras, "expires_in", granted.expires_in.as_deref());
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: Sensitive::new(granted.access_token.as_str()),
            broker_user_id: uid.to_owned(),
            issued_at_ms: issued,
            expires_at_ms: noren::expires_at(
                issued,
                granted.expires_in.as_deref(),
                settings.expiry_hour_ist,
            ),
            extras,
        })
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Shoonya);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_serves_no_refresh_token_and_waits_for_a_stateless_callback() {
        let m = Shoonya::manifest();
        assert!(!m.callback_has_state);
        assert!(m.served_extras.iter().all(|e| !e.contains("refresh")));
        assert!(
            m.credential_fields
                .iter()
                .any(|f| f.name == "secret_code" && f.secret)
        );
        assert_eq!(m.settings["flow"], "oauth");
        assert!(m.base_urls.keys().all(|k| k.ends_with("_url")));
    }
}
