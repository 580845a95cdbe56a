//! Dhan (DhanHQ v2) login strategy (`../shared/protocols/dhan.md` in the design notes):
//!
//! - headless login: D1 `POST {auth_url}/app/generateAccessToken` with the client id, the PIN
//!   (`pin`) and a TOTP code in the query (sent once: a refused code is not retried, since a
//!   retry would send the PIN again), then D2 `GET {api_url}/profile` to check the token before
//!   returning it;
//! - `verify` through D2;
//! - assisted login: the API-key consent flow. `assisted_url` runs C1 (`generate-consent`) and
//!   returns the consent login page; `assisted_finish` exchanges the redirect's `tokenId` (C3),
//!   then D2.
//!
//! Tokens live 24 h from issue, or until the earlier `expiryTime` (`Validity::Rolling`). Dhan
//! mints at most one token per account every 2 minutes (`min_login_interval_ms`), and a new
//! token kills the previous one. Base URLs: `auth_url` (default `https://auth.dhan.co`),
//! `api_url` (`https://api.dhan.co/v2`).

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

pub use errors::wait_in_text;
use flow::{Client, Minted};

/// The Dhan strategy.
pub struct Dhan;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("dhan: the account has no {field}"),
    )
    .before_credentials()
}

fn client_id(id: &str) -> Result<&str, ErrorOutput> {
    Some(id.trim())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| missing("broker_user_id (the Dhan client id)"))
}

/// The consent flow's app id and secret.
fn app(c: &Credentials) -> Result<(&str, &str), ErrorOutput> {
    let id = c
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key (the API key for the consent flow)"))?;
    let secret = c
        .api_secret
        .as_ref()
        .map(Sensitive::expose)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret (the API secret for the consent flow)"))?;
    Ok((id, secret))
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
            "dhan: the account has no totp_secret: set up TOTP on Dhan Web and store its secret, \
             or use assisted login",
        ),
        _ => http::host_failure("dhan", "TOTP", e),
    }
}

/// D1 with a fresh code, sent once. A refused code is not retried: D1 takes the PIN with the
/// code, so a second D1 would send the PIN twice in one refresh. A throttle answer is not retried
/// here either (it may re-arm the 2 minutes).
fn mint_with_totp(
    host: &Host<'_>,
    client: &Client<'_, '_>,
    id: &str,
    pin: &str,
) -> Result<Minted, ErrorOutput> {
    let code = host
        .totp()
        .map_err(|e| totp_failure(&e).before_credentials())?;
    client
        .mint(id, pin, code.code.expose())
        .map_err(|e| http::code_refused_with_secret(e, "PIN"))
}

impl Strategy for Dhan {
    const ID: &'static str = "dhan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Dhan (DhanHQ v2)".into(),
            credential_fields: vec![
                field("broker_user_id", "Dhan client id (digits)", false, true),
                field("pin", "Dhan PIN (6 digits)", true, true),
                field(
                    "totp_secret",
                    "TOTP secret (base32, from Dhan Web > Access DhanHQ APIs > Setup TOTP)",
                    true,
                    true,
                ),
                field(
                    "api_key",
                    "API key (app_id), for the consent login only",
                    false,
                    false,
                ),
                field(
                    "api_secret",
                    "API secret (app_secret), for the consent login only",
                    true,
                    false,
                ),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "24 hours from issue (or the earlier expiryTime Dhan returns)".into(),
            base_urls: BTreeMap::from([
                ("auth_url".into(), "https://auth.dhan.co".into()),
                ("api_url".into(), "https://api.dhan.co/v2".into()),
            ]),
            settings: settings::defaults(),
            allowed_hosts: vec!["auth.dhan.co".into(), "api.dhan.co".into()],
            max_concurrency: 4,
            rate_limit_per_sec: 5.0,
            served_extras: Vec::new(),
            validity: Validity::Rolling,
            min_login_interval_ms: 120_000,
            // The consent flow redirects with `?tokenId=` only [OFF docs].
            callback_has_state: false,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let id = client_id(&req.broker_user_id)?;
        let pin = req
            .credentials
            .extra("pin")
            .ok_or_else(|| missing("pin (the Dhan PIN)"))?;
        let waits = settings::waits(&req.settings)?;
        let client =
            Client::new(host, &req.base_urls, waits).map_err(ErrorOutput::before_credentials)?;
        host.log(
            Level::Info,
            &format!("dhan: headless login (attempt {})", req.attempt),
        );
        let minted = mint_with_totp(host, &client, id, pin)?;
        let out = client.complete(&minted, id)?;
        host.log(Level::Info, "dhan: logged in; token verified with /profile");
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let id = client_id(&req.broker_user_id)?;
        let client = Client::new(host, &req.base_urls, settings::waits(&req.settings)?)?;
        let (valid, message) = match client.profile(req.access_token.expose(), id) {
            Ok(p) if p.client_id.trim() == id => (true, String::new()),
            Ok(p) => (
                false,
                format!("the token belongs to client {}, not {id}", p.client_id),
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
        host: &Host<'_>,
        req: AssistedUrlRequest,
    ) -> Result<AssistedUrlOutput, ErrorOutput> {
        let id = client_id(&req.broker_user_id)?;
        let (app_id, secret) = app(&req.credentials)?;
        let client = Client::new(host, &req.base_urls, settings::waits(&req.settings)?)?;
        let consent = client.consent(id, app_id, secret)?;
        host.log(Level::Info, "dhan: consent generated (C1)");
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: http::join(
                &client.auth,
                &format!(
                    "/login/consentApp-login?{}",
                    form(&[("consentAppId", &consent)])
                ),
            ),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let id = client_id(&req.broker_user_id)?;
        let (app_id, secret) = app(&req.credentials)?;
        let token_id = req
            .query
            .get("tokenId")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "dhan: the consent redirect has no tokenId",
                )
            })?;
        let client = Client::new(host, &req.base_urls, settings::waits(&req.settings)?)?;
        host.log(Level::Info, "dhan: finishing a consent login");
        let minted = client.consume(token_id, app_id, secret)?;
        if let Some(other) = minted.client_id.as_deref().filter(|c| c.trim() != id) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!("dhan: the consent was given by client {other}, not by the account's {id}"),
            ));
        }
        client.complete(&minted, id)
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Dhan);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_rolling_with_a_two_minute_interval() {
        let m = Dhan::manifest();
        assert_eq!(m.validity, Validity::Rolling);
        assert_eq!(m.min_login_interval_ms, 120_000);
        assert!(m.served_extras.is_empty());
        assert!(
            m.credential_fields
                .iter()
                .any(|f| f.name == "pin" && f.secret && f.required)
        );
    }
}
