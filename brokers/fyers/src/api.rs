//! The official API host's steps: H4 `/token` (the headless path's auth code), H5/A2
//! `/validate-authcode`, and V `/profile` (fyers.md).

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, Sensitive, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry, query_value, str_field};
use broker_common::{ist, jwt};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::errors::{self, Step, protocol};

const TIMEOUT_MS: u64 = 10_000;

/// The App ID as Fyers uses it in three forms.
#[derive(Clone, Debug)]
pub struct App {
    /// With its type suffix, `ABCD1234EF-100` (`client_id`, `appIdHash`, `Authorization`).
    pub id: String,
    /// Without it, `ABCD1234EF` (H4's `app_id`).
    pub bare: String,
    /// The type, `100` (H4's `appType`).
    pub app_type: String,
}

impl App {
    /// From `api_key`, which must carry the type suffix (fyers.md: never strip it for H5).
    pub fn parse(api_key: &str) -> Option<App> {
        let id = api_key.trim();
        let (bare, app_type) = id.rsplit_once('-')?;
        (!bare.is_empty() && !app_type.is_empty() && app_type.chars().all(|c| c.is_ascii_digit()))
            .then(|| App {
                id: id.to_owned(),
                bare: bare.to_owned(),
                app_type: app_type.to_owned(),
            })
    }
}

/// `appIdHash`: lowercase hex SHA-256 of `"<APPID-TYPE>:<secret>"`.
pub fn app_id_hash(app_id: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(app_id.as_bytes());
    h.update(b":");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// What H5 returns.
pub struct Tokens {
    /// The API access token.
    pub access_token: Sensitive,
    /// The refresh token (kept only with `keep_refresh_token = true`).
    pub refresh_token: Option<Sensitive>,
}

/// The API host of one call.
pub struct Api<'a, 'h> {
    host: &'a Host<'h>,
    base: String,
}

impl<'a, 'h> Api<'a, 'h> {
    /// On `api_url`.
    pub fn new(host: &'a Host<'h>, base: &str) -> Self {
        Api {
            host,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// `api_url` + `/path`.
    pub fn url(&self, path: &str) -> String {
        http::join(&self.base, path)
    }

    fn send(&self, step: Step, mut req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for h in &mut req.headers {
            h[1].zeroize();
        }
        result.map_err(|e| http::host_failure("fyers", step.name(), &e))
    }

    /// H4: `POST /token` with the trading-session token; the answer (HTTP 308, not followed)
    /// carries `Url` = the redirect URL with `auth_code`, read by name (never `code`, a status).
    pub fn token(
        &self,
        session: &Sensitive,
        fy_id: &str,
        app: &App,
        redirect_uri: &str,
        state: &str,
    ) -> Result<String, ErrorOutput> {
        let step = Step::Token;
        let body = serde_json::json!({
            "fyers_id": fy_id, "app_id": app.bare, "redirect_uri": redirect_uri,
            "appType": app.app_type, "code_challenge": "", "state": state, "scope": "",
            "nonce": "", "response_type": "code", "create_cookie": true,
        });
        let req = HttpRequest::new("POST", self.url("/token"))
            .header("Accept", "application/json")
            .header("Authorization", format!("Bearer {}", session.expose()))
            .body("application/json", body.to_string());
        let resp = self.send(step, req)?;
        if let Some(e) = errors::triage(step, &resp) {
            return Err(e);
        }
        let body = http::json(&resp);
        if let Some(e) = body
            .as_ref()
            .and_then(|b| errors::envelope_error(b, resp.status))
        {
            return Err(errors::classify(step, &e));
        }
        // The JSON `Url` (Fyers' shape); a `Location` header when the body is not JSON (a proxy
        // that rewrote the redirect's body).
        let target = body
            .as_ref()
            .and_then(|b| {
                // `Url` in fyers.md; any spelling of the key (`url`, `URL`) is the same field.
                b.as_object()?
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("url"))
                    .find_map(|(_, v)| v.as_str().filter(|u| !u.trim().is_empty()))
                    .map(str::to_owned)
            })
            .or_else(|| resp.header("location").map(str::to_owned));
        let Some(target) = target else {
            return Err(not_authorized_or_protocol(resp.status, body.as_ref()));
        };
        let target = url::Url::parse(&self.base)
            .and_then(|b| b.join(target.trim()))
            .map_err(|_| protocol(step, "an unreadable Url"))?;
        if query_value(&target, "state").is_some_and(|s| s != state) {
            return Err(protocol(step, "the redirect's state is not the one sent"));
        }
        let code = query_value(&target, "auth_code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| not_authorized_or_protocol(resp.status, body.as_ref()))?;
        if resp.status != 308 {
            self.host.log(
                Level::Debug,
                &format!(
                    "fyers: {}: HTTP {} (not 308) with an auth_code",
                    step.name(),
                    resp.status
                ),
            );
        }
        Ok(code)
    }

    /// H5 / A2: `POST /validate-authcode`. The code is single use: a retry after a retryable
    /// failure that is then refused reports the first failure.
    pub fn validate_authcode(
        &self,
        app_id: &str,
        secret: &str,
        code: &str,
    ) -> Result<Tokens, ErrorOutput> {
        let step = Step::ValidateAuthcode;
        let mut hash = app_id_hash(app_id, secret);
        let mut body = serde_json::json!({
            "grant_type": "authorization_code", "appIdHash": hash, "code": code,
        })
        .to_string();
        hash.zeroize();
        let result = StepRetry::run_single_use(self.host, "fyers", step.name(), || {
            let req = HttpRequest::new("POST", self.url("/validate-authcode"))
                .header("Accept", "application/json")
                .body("application/json", body.as_str());
            errors::ok_body(step, &self.send(step, req)?)
        });
        body.zeroize();
        let out = result?;
        let access =
            str_field(&out, "access_token").ok_or_else(|| protocol(step, "no access_token"))?;
        Ok(Tokens {
            access_token: Sensitive::new(access),
            refresh_token: str_field(&out, "refresh_token").map(Sensitive::new),
        })
    }

    /// V: `GET /profile`. `Ok(fy_id)` when Fyers accepts the token; `Err(Ok(message))` when it
    /// refuses it (HTTP 401/403, codes -8/-15/-16/-17); `Err(Err(_))` for any other failure.
    pub fn profile(
        &self,
        app_id: &str,
        token: &str,
    ) -> Result<String, Result<String, ErrorOutput>> {
        let step = Step::Profile;
        let req = HttpRequest::new("GET", self.url("/profile"))
            .header("Accept", "application/json")
            .header("version", "3")
            .header("Authorization", format!("{app_id}:{token}"));
        let resp = self.send(step, req).map_err(Err)?;
        // A 401 refuses the token (fyers.md, errors) whatever its body: a gateway in front of the
        // API may answer it with its own HTML or plain-text page instead of Fyers' envelope.
        if resp.status == 401 && http::json(&resp).is_none_or(|b| !b.is_object()) {
            return Err(Ok("Fyers refused the token: HTTP 401".to_owned()));
        }
        if let Some(e) = errors::triage(step, &resp) {
            return Err(Err(e));
        }
        let body = http::json_object("fyers", step.name(), &resp).map_err(Err)?;
        if let Some(e) = errors::envelope_error(&body, resp.status) {
            let refused =
                matches!(resp.status, 401 | 403) || matches!(e.code, Some(-8 | -15 | -16 | -17));
            return Err(if refused {
                Ok(format!("Fyers refused the token: {}", e.message))
            } else {
                Err(errors::classify(step, &e))
            });
        }
        body.get("data")
            .and_then(|d| str_field(d, "fy_id"))
            .map(str::to_owned)
            .ok_or_else(|| Err(protocol(step, "no data.fy_id in the profile")))
    }

    /// H5 then V: the token for `code`, checked to belong to `fy_id`, with its expiry.
    pub fn complete(
        &self,
        app: &App,
        secret: &str,
        code: &str,
        fy_id: &str,
        keep_refresh_token: bool,
    ) -> Result<LoginOutput, ErrorOutput> {
        let tokens = self.validate_authcode(&app.id, secret, code)?;
        let issued = self.host.now_unix_ms();
        let mut retry = StepRetry::default();
        let verified = loop {
            match self.profile(&app.id, tokens.access_token.expose()) {
                Err(Err(e)) if retry.wait(self.host, "fyers", Step::Profile.name(), &e) => {}
                other => break other,
            }
        };
        let confirmed = match verified {
            Ok(id) => id,
            Err(Ok(refused)) => {
                return Err(protocol(
                    Step::Profile,
                    &format!("the fresh token was refused ({refused})"),
                ));
            }
            Err(Err(e)) => return Err(e),
        };
        if !confirmed.eq_ignore_ascii_case(fy_id) {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                format!("fyers: the token belongs to another user ({confirmed}, not {fy_id})"),
            ));
        }
        let token = tokens.access_token.expose();
        let mut extras = BTreeMap::new();
        if let Some(exp) = jwt::exp_ms(token) {
            extras.insert("jwt_exp_ms".into(), exp.into());
        }
        if keep_refresh_token && let Some(rt) = &tokens.refresh_token {
            extras.insert("refresh_token".into(), rt.expose().into());
        }
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: tokens.access_token.clone(),
            broker_user_id: confirmed,
            issued_at_ms: issued,
            expires_at_ms: jwt::expiry_min(token, issued, ist::next_ist_wall_time(issued, 6, 0)),
            extras,
        })
    }
}

fn not_authorized_or_protocol(status: u16, body: Option<&serde_json::Value>) -> ErrorOutput {
    let text = body.and_then(http::broker_text).unwrap_or_default();
    let lower = text.to_ascii_lowercase();
    if ["authoriz", "consent", "app"]
        .iter()
        .any(|w| lower.contains(w))
    {
        ErrorOutput::new(
            ErrorClass::AppNotAuthorized,
            format!(
                "fyers: {}: HTTP {status}: {text}; authorize the app once in a browser (assisted login)",
                Step::Token.name()
            ),
        )
    } else {
        protocol(Step::Token, &format!("HTTP {status} without an auth_code"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_hash_matches_the_postman_vector() {
        assert_eq!(
            app_id_hash("abcd1234-100", "qwerty6789"),
            "ac1a1574cd73775611a8a532f2334b8e29f743783ad20c56c1d5c4763f745e9b"
        );
    }

    #[test]
    fn the_app_id_needs_its_type_suffix() {
        let a = App::parse("ABCD1234EF-100").unwrap();
        assert_eq!(
            (a.id.as_str(), a.bare.as_str(), a.app_type.as_str()),
            ("ABCD1234EF-100", "ABCD1234EF", "100")
        );
        assert!(App::parse("ABCD1234EF").is_none());
        assert!(App::parse("ABCD-XY").is_none());
    }
}
