//! The SmartAPI steps A1 (`loginByPassword`) and A2 (`getProfile`) of angelone.md, each one HTTP
//! exchange through the host, with the headers every SDK sends.

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput, HttpRequest, HttpResponse};
use broker_api::{Host, Level};
use broker_common::http::{self, str_field};
use zeroize::Zeroize;

use crate::errors::{self, Failure, Step, WafSeen, protocol};
use crate::settings::Settings;

/// Official SDKs' timeout (angelone.md).
const TIMEOUT_MS: u64 = 7_000;

const LOGIN_PATH: &str = "/rest/auth/angelbroking/user/v1/loginByPassword";
const PROFILE_PATH: &str = "/rest/secure/angelbroking/user/v1/getProfile";

/// What A1 returns. Every field is secret.
pub struct Tokens {
    /// `jwtToken`, the access token.
    pub jwt: String,
    /// `refreshToken`: stored, never served.
    pub refresh: Option<String>,
    /// `feedToken`: websocket consumers need it.
    pub feed: Option<String>,
}

impl Drop for Tokens {
    fn drop(&mut self) {
        self.jwt.zeroize();
        if let Some(r) = &mut self.refresh {
            r.zeroize();
        }
        if let Some(f) = &mut self.feed {
            f.zeroize();
        }
    }
}

/// A token with any `Bearer ` prefix removed (the python SDK adds one in what it returns).
pub fn bare_token(token: &str) -> &str {
    let t = token.trim();
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim_start(),
        _ => t,
    }
}

/// The API host of one call, with the headers every request carries.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    api: String,
    api_key: &'a str,
    settings: &'a Settings,
    /// HTML pages seen in this call (the second is `automation_blocked`).
    waf: WafSeen,
}

/// A base URL by name, or a `protocol` failure naming it.
pub fn base_url<'u>(
    urls: &'u BTreeMap<String, String>,
    name: &str,
) -> Result<&'u str, ErrorOutput> {
    let raw = urls.get(name).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("angelone: base URL `{name}` is not configured"),
        )
    })?;
    url::Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("angelone: base URL `{name}`: {e}"),
        )
    })?;
    Ok(raw)
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on the effective `api_url`.
    pub fn new(
        host: &'a Host<'h>,
        urls: &BTreeMap<String, String>,
        api_key: &'a str,
        settings: &'a Settings,
    ) -> Result<Self, ErrorOutput> {
        Ok(Client {
            host,
            api: base_url(urls, "api_url")?.to_owned(),
            api_key,
            settings,
            waf: WafSeen::default(),
        })
    }

    /// A request with the headers all three SDKs send (angelone.md "Conventions").
    fn request(&self, method: &str, path: &str) -> HttpRequest {
        let s = self.settings;
        HttpRequest::new(method, http::join(&self.api, path))
            .header("Accept", "application/json")
            .header("X-UserType", "USER")
            .header("X-SourceID", "WEB")
            .header("X-ClientLocalIP", s.local_ip.as_str())
            .header("X-ClientPublicIP", s.public_ip.as_str())
            .header("X-MACAddress", s.mac_address.as_str())
            .header("X-PrivateKey", self.api_key)
    }

    fn send(&self, step: Step, mut req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for [name, value] in &mut req.headers {
            if name.eq_ignore_ascii_case("authorization") {
                value.zeroize();
            }
        }
        result.map_err(|e| http::host_failure("angelone", step.name(), &e))
    }

    /// A1: MPIN and TOTP in one JSON POST. The caller decides about retries.
    pub fn login(&self, client_code: &str, pin: &str, totp: &str) -> Result<Tokens, ErrorOutput> {
        let step = Step::Login;
        let mut body = serde_json::json!({
            "clientcode": client_code,
            "password": pin,
            "totp": totp,
        })
        .to_string();
        let req = self
            .request("POST", LOGIN_PATH)
            .body("application/json", body.as_str());
        body.zeroize();
        let resp = self.send(step, req)?;
        let data = errors::data(step, &resp, &self.waf, self.settings.waf_retry_after_ms)
            .map_err(|f| f.into_output(step))?;
        let jwt = str_field(&data, "jwtToken")
            .map(bare_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| protocol(step, "a success without data.jwtToken"))?;
        let text = |k: &str| str_field(&data, k).map(|t| bare_token(t).to_owned());
        Ok(Tokens {
            jwt: jwt.to_owned(),
            refresh: text("refreshToken"),
            feed: text("feedToken"),
        })
    }

    /// A2: `Ok(clientcode)` when the token is accepted; `Err(Ok(message))` when Angel One
    /// refuses the token (dialect B `AG800x`, `AB1010`, `AB1011`); `Err(Err(_))` otherwise.
    pub fn profile(&self, jwt: &str) -> Result<String, Result<String, ErrorOutput>> {
        let step = Step::Profile;
        let mut auth = format!("Bearer {jwt}");
        let req = self
            .request("GET", PROFILE_PATH)
            .header("Content-Type", "application/json")
            .header("Authorization", auth.as_str());
        auth.zeroize();
        let resp = self.send(step, req).map_err(Err)?;
        match errors::data(step, &resp, &self.waf, self.settings.waf_retry_after_ms) {
            Ok(data) => str_field(&data, "clientcode")
                .map(str::to_owned)
                .ok_or_else(|| Err(protocol(step, "no data.clientcode in the profile"))),
            Err(Failure::TokenInvalid(e)) => Err(Ok(format!(
                "Angel One refused the token: {} {}",
                e.code, e.message
            ))),
            Err(Failure::Other(e)) => Err(Err(e)),
        }
    }

    /// A2 with step retries, for a token just obtained: checked to belong to `client_code`.
    pub fn confirm(&self, jwt: &str, client_code: &str) -> Result<String, ErrorOutput> {
        let step = Step::Profile;
        let mut retry = broker_common::http::StepRetry::default();
        let verified = loop {
            match self.profile(jwt) {
                Err(Err(e)) if retry.wait(self.host, "angelone", step.name(), &e) => {}
                other => break other,
            }
        };
        let confirmed = match verified {
            Ok(code) => code,
            Err(Ok(refused)) => {
                return Err(protocol(
                    step,
                    &format!("the login did not stick ({refused})"),
                ));
            }
            Err(Err(e)) => return Err(e),
        };
        if !confirmed.eq_ignore_ascii_case(client_code) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "angelone: the session belongs to {confirmed}, not to the account's {client_code}"
                ),
            ));
        }
        self.host
            .log(Level::Debug, &format!("angelone: {} ok", step.name()));
        Ok(confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::bare_token;

    #[test]
    fn bearer_prefix_is_stripped() {
        assert_eq!(bare_token("Bearer eyJabc"), "eyJabc");
        assert_eq!(bare_token("bearer  eyJabc "), "eyJabc");
        assert_eq!(bare_token("eyJabc"), "eyJabc");
    }
}
