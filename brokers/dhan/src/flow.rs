//! The Dhan steps of dhan.md, each one HTTP exchange through the host: D1 (mint with PIN and
//! TOTP), D2 (profile), and the consent flow's C1 and C3.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, Sensitive, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry, form, str_field};
use broker_common::ist;
use zeroize::Zeroize;

use crate::errors::{self, Failure, Step, WafSeen, Waits, protocol};

/// Request timeout.
const TIMEOUT_MS: u64 = 10_000;
/// Validity of a minted token (dhan.md: 24 hours from generation).
pub const VALIDITY_MS: i64 = 24 * 3_600_000;

/// What D1 and C3 return. The token is secret.
pub struct Minted {
    /// `accessToken`.
    pub access_token: String,
    /// `dhanClientId` the token was minted for.
    pub client_id: Option<String>,
    /// `dhanClientName`.
    pub client_name: Option<String>,
    /// `expiryTime` as returned (IST, no offset).
    pub expiry_time: Option<String>,
}

impl Drop for Minted {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

/// What D2 confirms.
pub struct Profile {
    /// `dhanClientId`.
    pub client_id: String,
    /// `tokenValidity` (`dd/MM/yyyy HH:mm` IST), recorded as is.
    pub token_validity: Option<String>,
}

/// IST's offset from UTC.
const IST_OFFSET_MS: i64 = 19_800_000;

/// A `±HH:MM` or `±HHMM` UTC offset in ms.
fn parse_offset(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = b[1..].iter().copied().filter(|c| *c != b':').collect();
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) || b.len() > 6 {
        return None;
    }
    let n = |i: usize| i64::from(digits[i] - b'0');
    let (h, m) = (n(0) * 10 + n(1), n(2) * 10 + n(3));
    (h <= 14 && m < 60).then_some(sign * (h * 3_600_000 + m * 60_000))
}

/// `expiryTime` (`YYYY-MM-DDTHH:MM:SS[.fff]`, IST) in Unix ms. The docs' sample has no offset;
/// one that names it (`Z`, `+05:30`) is honoured rather than the value dropped.
pub fn parse_expiry(text: &str) -> Option<i64> {
    let t = text.trim();
    let head = t.get(..19)?;
    let mut tail = &t[19..];
    let mut offset_ms = IST_OFFSET_MS;
    if let Some(rest) = tail.strip_suffix(['Z', 'z']) {
        tail = rest;
        offset_ms = 0;
    } else if let Some(at) = tail.rfind(['+', '-'])
        && let Some(off) = parse_offset(&tail[at..])
    {
        tail = &tail[..at];
        offset_ms = off;
    }
    let fraction_ok = tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    fraction_ok
        .then(|| ist::parse_ist(head))
        .flatten()
        .map(|t| t + IST_OFFSET_MS - offset_ms)
}

/// When a token issued at `issued` dies: 24 h later, or the earlier `expiryTime` (dhan.md).
pub fn expires_at(issued: i64, expiry_time: Option<&str>) -> i64 {
    let rolling = issued + VALIDITY_MS;
    match expiry_time.and_then(parse_expiry) {
        Some(t) if t > issued && t < rolling => t,
        _ => rolling,
    }
}

/// A client id field: the doc's samples quote it (`"1000000401"`), but it is all digits and a
/// server that keeps it as a number sends `1000000401`; both are the same id.
pub fn id_field(body: &serde_json::Value, key: &str) -> Option<String> {
    match body.get(key)? {
        serde_json::Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        serde_json::Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An auth-host failure's text: `message` as observed, or the API host's `errorMessage`.
fn auth_text(body: &serde_json::Value) -> String {
    http::broker_text(body)
        .or_else(|| str_field(body, "errorMessage").map(|m| http::truncate(m, 200)))
        .unwrap_or_default()
}

/// A base URL by name, or a `protocol` failure naming it.
pub fn base_url(urls: &BTreeMap<String, String>, name: &str) -> Result<String, ErrorOutput> {
    let raw = urls.get(name).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("dhan: base URL `{name}` is not configured"),
        )
    })?;
    url::Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("dhan: base URL `{name}`: {e}"),
        )
    })?;
    Ok(raw.clone())
}

/// Both Dhan hosts of one call.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    /// `auth_url` (default `https://auth.dhan.co`).
    pub auth: String,
    api: String,
    waits: Waits,
    /// HTML 403 pages seen in this call.
    waf: WafSeen,
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on the effective `auth_url` and `api_url`.
    pub fn new(
        host: &'a Host<'h>,
        urls: &BTreeMap<String, String>,
        waits: Waits,
    ) -> Result<Self, ErrorOutput> {
        Ok(Client {
            host,
            auth: base_url(urls, "auth_url")?,
            api: base_url(urls, "api_url")?,
            waits,
            waf: WafSeen::default(),
        })
    }

    fn send(&self, step: Step, mut req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        // D1's URL carries the PIN and the TOTP code; C1/C3's headers the app secret.
        req.url.zeroize();
        for [_, value] in &mut req.headers {
            value.zeroize();
        }
        result.map_err(|e| http::host_failure("dhan", step.name(), &e))
    }

    /// D1: `POST {auth}/app/generateAccessToken?dhanClientId=..&pin=..&totp=..`, no body.
    pub fn mint(&self, client_id: &str, pin: &str, totp: &str) -> Result<Minted, ErrorOutput> {
        let step = Step::Mint;
        let mut query = form(&[("dhanClientId", client_id), ("pin", pin), ("totp", totp)]);
        let url = http::join(&self.auth, &format!("/app/generateAccessToken?{query}"));
        query.zeroize();
        let req = HttpRequest::new("POST", url).header("Accept", "application/json");
        let resp = self.send(step, req)?;
        let minted = self.minted(step, &resp)?;
        if let Some(id) = &minted.client_id
            && id.trim() != client_id
        {
            return Err(protocol(
                step,
                &format!("the token was minted for client {id}, not {client_id}"),
            ));
        }
        Ok(minted)
    }

    /// The D1/C3 body: success iff HTTP 200 and a non-empty `accessToken`.
    fn minted(&self, step: Step, resp: &HttpResponse) -> Result<Minted, ErrorOutput> {
        let body = errors::auth_json(step, resp, &self.waf, self.waits)?;
        match str_field(&body, "accessToken") {
            Some(token) if resp.status == 200 => {
                let text = |k: &str| str_field(&body, k).map(str::to_owned);
                Ok(Minted {
                    access_token: token.to_owned(),
                    client_id: id_field(&body, "dhanClientId"),
                    client_name: text("dhanClientName"),
                    expiry_time: text("expiryTime"),
                })
            }
            _ => {
                let message = auth_text(&body);
                Err(errors::classify_text(
                    step,
                    resp.status,
                    &message,
                    self.waits,
                ))
            }
        }
    }

    /// D2: `Ok(profile)` when Dhan accepts the token; `Err(Ok(message))` when it refuses it
    /// (`DH-901`); `Err(Err(_))` for any other failure.
    pub fn profile(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Profile, Result<String, ErrorOutput>> {
        let step = Step::Profile;
        let req = HttpRequest::new("GET", http::join(&self.api, "/profile"))
            .header("Accept", "application/json")
            .header("access-token", token)
            .header("client-id", client_id)
            .header("dhanClientId", client_id);
        let resp = self.send(step, req).map_err(Err)?;
        let body = http::json(&resp).filter(serde_json::Value::is_object);
        if resp.status == 200
            && let Some(b) = &body
            && str_field(b, "errorCode").is_none()
        {
            return match id_field(b, "dhanClientId") {
                Some(id) => Ok(Profile {
                    client_id: id,
                    token_validity: str_field(b, "tokenValidity").map(str::to_owned),
                }),
                None => Err(Err(protocol(step, "no dhanClientId in the profile"))),
            };
        }
        match errors::api_failure(step, &resp, &self.waf, self.waits) {
            Failure::TokenInvalid(what) => Err(Ok(what)),
            Failure::Other(e) => Err(Err(e)),
        }
    }

    /// D2 with step retries for a token just obtained, then the login's output.
    pub fn complete(&self, minted: &Minted, client_id: &str) -> Result<LoginOutput, ErrorOutput> {
        let issued = self.host.now_unix_ms();
        let mut retry = StepRetry::default();
        let verified = loop {
            match self.profile(&minted.access_token, client_id) {
                Err(Err(e)) if retry.wait(self.host, "dhan", Step::Profile.name(), &e) => {}
                other => break other,
            }
        };
        let profile = match verified {
            Ok(p) => p,
            Err(Ok(refused)) => {
                return Err(protocol(
                    Step::Profile,
                    &format!(
                        "the fresh token was refused (another minter may have rotated it): {refused}"
                    ),
                ));
            }
            // D1 minted, and a mint kills the account's earlier token at once: throwing this one
            // away for a profile outage would leave the vault serving a dead token. It is kept,
            // unverified, and says so; the next D2 (a consumer's first call) checks it.
            Err(Err(e)) if e.class.is_retryable() => {
                self.host.log(
                    Level::Warn,
                    &format!(
                        "dhan: D2 /profile stayed unavailable ({}); keeping the freshly minted \
                         token unverified, since the mint already revoked the previous one",
                        e.message
                    ),
                );
                Profile {
                    client_id: client_id.to_owned(),
                    token_validity: None,
                }
            }
            Err(Err(e)) => return Err(e),
        };
        if profile.client_id.trim() != client_id {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "dhan: the token belongs to client {}, not to the account's {client_id}",
                    profile.client_id
                ),
            ));
        }
        self.host.log(Level::Debug, "dhan: D2 profile ok");
        let mut extras = BTreeMap::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                extras.insert(k.to_owned(), serde_json::Value::String(v.clone()));
            }
        };
        put("expiry_time", &minted.expiry_time);
        put("dhan_client_name", &minted.client_name);
        put("token_validity", &profile.token_validity);
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: Sensitive::new(minted.access_token.as_str()),
            broker_user_id: profile.client_id,
            issued_at_ms: issued,
            expires_at_ms: expires_at(issued, minted.expiry_time.as_deref()),
            extras,
        })
    }

    /// C1: `POST {auth}/app/generate-consent?client_id=..` with the app's id and secret.
    pub fn consent(
        &self,
        client_id: &str,
        app_id: &str,
        secret: &str,
    ) -> Result<String, ErrorOutput> {
        let step = Step::Consent;
        let url = http::join(
            &self.auth,
            &format!(
                "/app/generate-consent?{}",
                form(&[("client_id", client_id)])
            ),
        );
        let req = HttpRequest::new("POST", url)
            .header("Accept", "application/json")
            .header("app_id", app_id)
            .header("app_secret", secret);
        let resp = self.send(step, req)?;
        let body = errors::auth_json(step, &resp, &self.waf, self.waits)?;
        let ok = resp.status == 200
            && str_field(&body, "status").is_some_and(|s| s.eq_ignore_ascii_case("success"));
        match str_field(&body, "consentAppId") {
            Some(id) if ok => Ok(id.to_owned()),
            _ => {
                let message = auth_text(&body);
                Err(errors::classify_text(
                    step,
                    resp.status,
                    &message,
                    self.waits,
                ))
            }
        }
    }

    /// C3: `GET {auth}/app/consumeApp-consent?tokenId=..`; one more try with POST on a 405 (the
    /// docs disagree on the method, dhan.md).
    pub fn consume(
        &self,
        token_id: &str,
        app_id: &str,
        secret: &str,
    ) -> Result<Minted, ErrorOutput> {
        let step = Step::Consume;
        let url = http::join(
            &self.auth,
            &format!("/app/consumeApp-consent?{}", form(&[("tokenId", token_id)])),
        );
        let request = |method: &str| {
            HttpRequest::new(method, url.clone())
                .header("Accept", "application/json")
                .header("app_id", app_id)
                .header("app_secret", secret)
        };
        let mut resp = self.send(step, request("GET"))?;
        if resp.status == 405 {
            self.host
                .log(Level::Info, "dhan: C3 answered 405 to GET; trying POST");
            resp = self.send(step, request("POST"))?;
        }
        self.minted(step, &resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_read_quoted_or_as_a_number() {
        let body = serde_json::json!({"a": "1000000401", "b": 1000000401u64, "c": " 1000000401 ",
            "d": null, "e": "", "f": -1});
        for k in ["a", "b", "c"] {
            assert_eq!(id_field(&body, k).as_deref(), Some("1000000401"), "{k}");
        }
        for k in ["d", "e", "f", "g"] {
            assert_eq!(id_field(&body, k), None, "{k}");
        }
        let api_shape = serde_json::json!({"errorType": "Input_Exception", "errorCode": "DH-905",
            "errorMessage": "Invalid TOTP"});
        assert_eq!(auth_text(&api_shape), "Invalid TOTP");
    }

    #[test]
    fn expiry_is_24_hours_or_the_earlier_expiry_time() {
        let issued = ist::parse_ist("2026-03-30 08:30:00").unwrap();
        assert_eq!(expires_at(issued, None), issued + VALIDITY_MS);
        assert_eq!(
            expires_at(issued, Some("2026-03-31T08:00:00.000")),
            ist::parse_ist("2026-03-31 08:00:00").unwrap()
        );
        // The same instant with or without milliseconds, or with a named offset.
        let eight = ist::parse_ist("2026-03-31 08:00:00").unwrap();
        for same in [
            "2026-03-31T08:00:00",
            "2026-03-31 08:00:00.5",
            "2026-03-31T08:00:00.000+05:30",
            "2026-03-31T08:00:00+0530",
            "2026-03-31T02:30:00Z",
            "2026-03-31T02:30:00.000+00:00",
        ] {
            assert_eq!(expires_at(issued, Some(same)), eight, "{same}");
        }
        // Later than 24 h, unreadable, or before issue: the 24 h rule.
        for other in [
            "2026-04-01T08:00:00.000",
            "31/03/2026 08:00",
            "2026-03-29T08:00:00",
            "2026-03-31T08:00:00+5:30",
            "2026-03-31T08:00:0",
            "2026-03-31T08:00:00éx",
        ] {
            assert_eq!(
                expires_at(issued, Some(other)),
                issued + VALIDITY_MS,
                "{other}"
            );
        }
    }
}
