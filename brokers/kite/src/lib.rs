//! Zerodha Kite Connect login strategy (`../shared/protocols/kite.md` in the design notes):
//!
//! - headless login S1–S6: `/connect/login` (session cookie), `/api/login` (password, sent once),
//!   `/api/twofa` (TOTP from the host, echoing the offered `twofa_type`; one more try on a fresh
//!   step if refused), `/connect/finish` and its redirects followed by hand on the web host until a
//!   hop carries `request_token`, `/session/token` with the checksum, `/user/profile`;
//! - `verify` through `/user/profile`;
//! - assisted login: the Kite login URL with `redirect_params=state=<state>` (Kite echoes it to the
//!   app's redirect URL, which must be the daemon's `/callback/kite`), then S5 and S6 from the
//!   callback's `request_token`.
//!
//! Tokens expire at the first 06:00 IST strictly after `login_time`.
//! Base URLs: `web_url` (default `https://kite.zerodha.com`), `api_url` (`https://api.kite.trade`).

mod errors;
pub mod flow;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, VerifyOutput, VerifyRequest,
    WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{StepRetry, form};

pub use flow::checksum;

/// The Kite strategy.
pub struct Kite;

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("kite: the account has no {field}"),
    )
    .before_credentials()
}

fn api_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key"))
}

fn api_secret(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret"))
}

impl Strategy for Kite {
    const ID: &'static str = "kite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Zerodha Kite".into(),
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
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the first 06:00 Asia/Kolkata after login".into(),
            base_urls: BTreeMap::from([
                ("web_url".into(), "https://kite.zerodha.com".into()),
                ("api_url".into(), "https://api.kite.trade".into()),
            ]),
            settings: BTreeMap::new(),
            allowed_hosts: vec!["kite.zerodha.com".into(), "api.kite.trade".into()],
            max_concurrency: 8,
            rate_limit_per_sec: 10.0,
            served_extras: Vec::new(),
            validity: broker_api::wire::Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let secret = api_secret(&req.credentials)?;
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
        let client = flow::Client::new(host, &req.base_urls)?;
        host.log(
            Level::Info,
            &format!("kite: headless login (attempt {})", req.attempt),
        );
        // Until S2 no credential has left: a failure there may start a new login. From S2 on,
        // the password may have been sent, so failures are retried at their step, never by a
        // new login (ErrorOutput::credentials_sent).
        let sess_id = client
            .connect_login(key)
            .map_err(ErrorOutput::before_credentials)?;
        let (request_id, twofa_type) = client.password(&req.broker_user_id, password)?;
        client.twofa(&req.broker_user_id, &request_id, &twofa_type)?;
        let request_token = StepRetry::run(host, "kite", errors::Step::Finish.name(), || {
            client.finish(key, &sess_id)
        })?;
        let out = client.complete(key, secret, &request_token, &req.broker_user_id)?;
        host.log(
            Level::Info,
            "kite: logged in; token verified with /user/profile",
        );
        Ok(out)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let client = flow::Client::new(host, &req.base_urls)?;
        let (valid, message) = match client.profile(key, req.access_token.expose()) {
            Ok(user) if user.eq_ignore_ascii_case(&req.broker_user_id) => (true, String::new()),
            Ok(user) => (
                false,
                format!("the token belongs to {user}, not {}", req.broker_user_id),
            ),
            Err(Ok(refused)) => (
                false,
                format!("Kite refused the token: {}", refused.message),
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
        host: &Host<'_>,
        req: AssistedUrlRequest,
    ) -> Result<AssistedUrlOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let client = flow::Client::new(host, &req.base_urls)?;
        let redirect_params = form(&[("state", &req.state)]);
        let query = form(&[
            ("v", "3"),
            ("api_key", key),
            ("redirect_params", &redirect_params),
        ]);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: broker_common::http::join(client.web.as_str(), &format!("/connect/login?{query}")),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let key = api_key(&req.credentials)?;
        let secret = api_secret(&req.credentials)?;
        if let Some(status) = req.query.get("status").filter(|s| *s != "success") {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                format!("kite: the login redirect reports status={status}: log in again"),
            ));
        }
        let request_token = req
            .query
            .get("request_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "kite: the login redirect has no request_token",
                )
            })?;
        let client = flow::Client::new(host, &req.base_urls)?;
        host.log(Level::Info, "kite: finishing an assisted login");
        client.complete(key, secret, request_token, &req.broker_user_id)
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Kite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_sha256_of_key_token_secret() {
        // sha256("abc") split over the three parts.
        assert_eq!(
            checksum("a", "b", "c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
