//! Motilal Oswal OpenAPI login strategy (`../shared/protocols/motilal.md` in the design notes):
//!
//! - headless login: M1 `authdirectapi` with the client code, `sha256(password + api_key)`, the
//!   2FA value (date of birth or PAN, extra field `dob_or_pan`) and a fresh TOTP code, all in one
//!   request, sent once (an `MO1093 Invalid TOTP` is not retried: a retry would send the password
//!   again); then M2 `getaccesstoken` when an API secret is set (its failure never
//!   fails the login); then V `getprofile`, which must name the account's client code;
//! - `verify` through V;
//! - assisted login only where the operator configures a partner login page
//!   (`assisted_login_url`, a template; none is documented for individual clients), whose redirect
//!   carries the AuthToken in `authtoken` (setting `assisted_token_param`);
//! - tokens expire at the first 06:00 IST strictly after login.
//!
//! Every call carries the device/client headers of the settings module; `client_public_ip` (the
//! static IP registered with Motilal) has no default and must be configured.

mod errors;
pub mod flow;
mod settings;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity, VerifyOutput,
    VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use zeroize::Zeroize;

pub use flow::{password_hash, two_factor};

/// The Motilal Oswal OpenAPI strategy.
pub struct Motilal;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("motilal: the account has no {field}"),
    )
    .before_credentials()
}

fn api_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key"))
}

fn api_secret(c: &Credentials) -> Option<&str> {
    c.api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

/// The operator-configured assisted login page with `{api_key}`, `{client_code}`, `{state}` and
/// `{redirect_url}` filled in (URL-encoded).
fn assisted_page(
    template: &str,
    api_key: &str,
    client_code: &str,
    state: &str,
    redirect: &str,
) -> String {
    let enc = |v: &str| broker_common::http::form(&[("", v)])[1..].to_owned();
    template
        .replace("{api_key}", &enc(api_key))
        .replace("{client_code}", &enc(client_code))
        .replace("{state}", &enc(state))
        .replace("{redirect_url}", &enc(redirect))
}

impl Strategy for Motilal {
    const ID: &'static str = "motilal";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Motilal Oswal OpenAPI".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Motilal client code (e.g. AA017)",
                    false,
                    true,
                ),
                field("password", "Motilal trading password", true, true),
                field("api_key", "Motilal OpenAPI App API key", true, true),
                field(
                    "api_secret",
                    "Motilal OpenAPI API secret key (optional: enables the accesstoken)",
                    true,
                    false,
                ),
                field(
                    "totp_secret",
                    "Authenticator secret registered in Motilal's API portal (32 characters)",
                    true,
                    true,
                ),
                field(
                    "dob_or_pan",
                    "Motilal 2FA: date of birth DD/MM/YYYY or PAN",
                    true,
                    true,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the first 06:00 Asia/Kolkata after login".into(),
            base_urls: BTreeMap::from([(
                "api_url".into(),
                "https://openapi.motilaloswal.com".into(),
            )]),
            settings: settings::DEFAULTS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            allowed_hosts: vec!["openapi.motilaloswal.com".into()],
            max_concurrency: 2,
            rate_limit_per_sec: 2.0,
            served_extras: vec!["accesstoken".into()],
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let c = &req.credentials;
        let key = api_key(c)?;
        let password = c
            .password
            .as_ref()
            .map(|p| p.expose())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| missing("password"))?;
        let two_fa = flow::two_factor(c.extra("dob_or_pan").ok_or_else(|| missing("dob_or_pan"))?)?;
        if req.broker_user_id.is_empty() {
            return Err(missing("broker_user_id"));
        }
        let client = flow::Client::new(
            host,
            &req.base_urls,
            &req.settings,
            key,
            &req.broker_user_id,
        )?;
        host.log(
            Level::Info,
            &format!("motilal: headless login (attempt {})", req.attempt),
        );
        let mut hash = flow::password_hash(password, key);
        let token = client.login(&req.broker_user_id, &hash, &two_fa);
        hash.zeroize();
        let token = token?;
        let issued = host.now_unix_ms();
        let out = client.complete(token, api_secret(c), &req.broker_user_id, issued)?;
        host.log(
            Level::Info,
            "motilal: logged in; token verified with getprofile",
        );
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let client = flow::Client::new(
            host,
            &req.base_urls,
            &req.settings,
            key,
            &req.broker_user_id,
        )?;
        let (valid, message) = match client.profile(req.access_token.expose(), None) {
            Ok(code) if code.eq_ignore_ascii_case(&req.broker_user_id) => (true, String::new()),
            Ok(code) => (
                false,
                format!("the token belongs to {code}, not {}", req.broker_user_id),
            ),
            Err(Ok(refused)) => (
                false,
                format!(
                    "Motilal refused the token: {} {}",
                    refused.code, refused.message
                ),
            ),
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
        let template = req
            .base_urls
            .get("assisted_login_url")
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "motilal: no assisted login is documented for individual clients; a partner \
                     login page can be configured as [brokers.motilal] assisted_login_url \
                     (a template with {api_key}, {client_code}, {state}, {redirect_url})",
                )
                .before_credentials()
            })?;
        let url = assisted_page(
            template,
            key,
            &req.broker_user_id,
            &req.state,
            &req.redirect_url,
        );
        url::Url::parse(&url).map_err(|e| {
            ErrorOutput::new(
                ErrorClass::Protocol,
                format!("motilal: assisted_login_url does not give a URL: {e}"),
            )
        })?;
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url,
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let client = flow::Client::new(
            host,
            &req.base_urls,
            &req.settings,
            key,
            &req.broker_user_id,
        )?;
        let name = client.settings().get("assisted_token_param").to_owned();
        let token = req
            .query
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(&name) && !v.is_empty())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    format!("motilal: the login redirect has no {name}"),
                )
            })?;
        host.log(Level::Info, "motilal: finishing an assisted login");
        let issued = host.now_unix_ms();
        client.complete(
            token,
            api_secret(&req.credentials),
            &req.broker_user_id,
            issued,
        )
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Motilal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assisted_template_is_filled_and_encoded() {
        let url = assisted_page(
            "https://p.example/login?key={api_key}&cb={redirect_url}&state={state}",
            "K 1",
            "AA017",
            "s&t",
            "https://bot.example/callback/motilal",
        );
        assert_eq!(
            url,
            "https://p.example/login?key=K+1&cb=https%3A%2F%2Fbot.example%2Fcallback%2Fmotilal&state=s%26t"
        );
    }

    #[test]
    fn manifest_declares_dob_or_pan_and_serves_no_refresh_token() {
        let m = Motilal::manifest();
        let dob = m
            .credential_fields
            .iter()
            .find(|f| f.name == "dob_or_pan")
            .unwrap();
        assert!(dob.secret && dob.required && !dob.label.is_empty());
        assert_eq!(m.served_extras, vec!["accesstoken".to_string()]);
        assert!(m.settings.contains_key("client_public_ip"));
        assert!(m.settings.keys().all(|k| !k.ends_with("_url")));
    }
}
