//! IIFL Blaze (XTS) login strategy (iifl.md, generation 2): an interactive session from appKey and
//! secretKey alone (no password, no TOTP).
//!
//! - login: `POST {api_url}/interactive/user/session {"appKey","secretKey","source":"WebAPI"}`;
//! - verify: `GET {api_url}/interactive/user/profile` with the raw token as `Authorization` (no
//!   "Bearer");
//! - expiry: the earlier of the JWT's `exp` (payload decoded, signature not checked) and the next
//!   00:00 IST.
//!
//! Base URL: `api_url` (default `https://ttblaze.iifl.com`).

use std::collections::BTreeMap;

use base64::Engine;
use broker_api::wire::{
    CredentialField, ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, LoginRequest,
    Manifest, Sensitive, VerifyOutput, VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, broker_text, str_field};
use broker_common::ist;
use zeroize::Zeroize;

/// The IIFL Blaze (XTS) strategy.
pub struct IiflXts;

const SESSION_STEP: &str = "/interactive/user/session";
const PROFILE_STEP: &str = "/interactive/user/profile";

/// The `exp` claim (Unix seconds) of a JWT, read without checking the signature.
pub fn jwt_exp_ms(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    secs.checked_mul(1000)
}

fn api_url(urls: &BTreeMap<String, String>) -> Result<&str, ErrorOutput> {
    urls.get("api_url").map(String::as_str).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            "iifl-xts: base URL `api_url` is not configured",
        )
    })
}

fn protocol(step: &str, what: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("iifl-xts: {step}: {what}; the API may have changed"),
    )
}

/// An XTS body: `Ok(result)` for `type == "success"`, else `Err((code, description))`.
fn envelope(
    step: &str,
    resp: &HttpResponse,
) -> Result<Result<serde_json::Value, (String, String)>, ErrorOutput> {
    if let Some(e) = http::triage("iifl-xts", step, resp) {
        return Err(e);
    }
    let body = http::json_object("iifl-xts", step, resp)?;
    match str_field(&body, "type") {
        Some("success") if resp.status < 400 => {
            Ok(Ok(body.get("result").cloned().unwrap_or_default()))
        }
        Some(_) => Ok(Err((
            str_field(&body, "code").unwrap_or_default().to_owned(),
            broker_text(&body).unwrap_or_default(),
        ))),
        None => Err(protocol(step, "no `type` in the answer")),
    }
}

fn classify(step: &str, status: u16, code: &str, description: &str) -> ErrorOutput {
    let lower = description.to_ascii_lowercase();
    let bad_credentials = code == "e-user-0002"
        || (code.starts_with("e-user-") && lower.contains("invalid"))
        || code.starts_with("e-app-")
        || lower.contains("app key")
        || lower.contains("appkey");
    let class = if bad_credentials {
        ErrorClass::InvalidCredentials
    } else if ["blocked", "locked", "frozen", "suspended"]
        .iter()
        .any(|w| lower.contains(w))
    {
        ErrorClass::AccountLocked
    } else if lower.contains("too many") || lower.contains("rate limit") {
        ErrorClass::RateLimited
    } else {
        ErrorClass::Protocol
    };
    let mut out = ErrorOutput::new(
        class,
        format!("iifl-xts: {step}: HTTP {status} {code}: {description}"),
    );
    if class == ErrorClass::InvalidCredentials {
        out.message
            .push_str("; not retried: check the api_key (appKey) and api_secret (secretKey)");
    }
    if class == ErrorClass::RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}

/// `POST /interactive/user/session`, then the token checked with the profile call.
fn open_session(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
    let missing = |f: &str| {
        ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            format!("iifl-xts: the account has no {f}"),
        )
    };
    let key = req
        .credentials
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key"))?;
    let secret = req
        .credentials
        .api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret"))?;
    let api = api_url(&req.base_urls)?;
    host.log(
        Level::Info,
        &format!(
            "iifl-xts: opening an interactive session (attempt {})",
            req.attempt
        ),
    );
    let mut body =
        serde_json::json!({"appKey": key, "secretKey": secret, "source": "WebAPI"}).to_string();
    let mut request = HttpRequest::new("POST", http::join(api, SESSION_STEP))
        .header("Accept", "application/json")
        .body("application/json", body.as_str());
    body.zeroize();
    let resp = host.http(&request);
    request.body.zeroize();
    let resp = resp.map_err(|e| http::host_failure("iifl-xts", SESSION_STEP, &e))?;
    let result = match envelope(SESSION_STEP, &resp)? {
        Ok(result) => result,
        Err((code, description)) => {
            return Err(classify(SESSION_STEP, resp.status, &code, &description));
        }
    };
    let token =
        str_field(&result, "token").ok_or_else(|| protocol(SESSION_STEP, "no result.token"))?;
    let user =
        str_field(&result, "userID").ok_or_else(|| protocol(SESSION_STEP, "no result.userID"))?;
    if !req.broker_user_id.is_empty() && !user.eq_ignore_ascii_case(&req.broker_user_id) {
        return Err(ErrorOutput::new(
            ErrorClass::InvalidCredentials,
            format!(
                "iifl-xts: the app key belongs to {user}, not to the account's {}",
                req.broker_user_id
            ),
        ));
    }
    let issued = host.now_unix_ms();
    let midnight = ist::next_ist_midnight(issued);
    let expires = match jwt_exp_ms(token) {
        Some(exp) => exp.min(midnight),
        None => {
            host.log(
                Level::Warn,
                "iifl-xts: the token is not a readable JWT; using the 00:00 IST rule alone",
            );
            midnight
        }
    };
    let mut extras = BTreeMap::new();
    if let Some(codes) = result.get("clientCodes") {
        extras.insert("client_codes".into(), codes.clone());
    }
    host.log(Level::Info, "iifl-xts: session opened");
    Ok(LoginOutput {
        v: WIRE_VERSION,
        access_token: Sensitive::new(token),
        broker_user_id: user.to_owned(),
        issued_at_ms: issued,
        expires_at_ms: expires,
        extras,
    })
}

impl Strategy for IiflXts {
    const ID: &'static str = "iifl-xts";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "IIFL Blaze (XTS)".into(),
            credential_fields: vec![
                CredentialField {
                    label: String::new(),
                    name: "broker_user_id".into(),
                    secret: false,
                    required: true,
                },
                CredentialField {
                    label: String::new(),
                    name: "api_key".into(),
                    secret: false,
                    required: true,
                },
                CredentialField {
                    label: String::new(),
                    name: "api_secret".into(),
                    secret: true,
                    required: true,
                },
            ],
            schedule: "0 3 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "the earlier of the JWT exp and the next 00:00 Asia/Kolkata".into(),
            base_urls: BTreeMap::from([("api_url".into(), "https://ttblaze.iifl.com".into())]),
            settings: BTreeMap::new(),
            allowed_hosts: vec!["ttblaze.iifl.com".into()],
            max_concurrency: 8,
            rate_limit_per_sec: 5.0,
            served_extras: Vec::new(),
            validity: broker_api::wire::Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        // XTS sends no password or PIN (appKey and secretKey only), so a retryable failure may
        // start a new session within the refresh's attempts, as before ABI 1.1.
        open_session(host, req).map_err(ErrorOutput::before_credentials)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let api = api_url(&req.base_urls)?;
        let request = HttpRequest::new("GET", http::join(api, PROFILE_STEP))
            .header("Accept", "application/json")
            .header("Authorization", req.access_token.expose());
        let resp = host
            .http(&request)
            .map_err(|e| http::host_failure("iifl-xts", PROFILE_STEP, &e))?;
        let (valid, message) = match envelope(PROFILE_STEP, &resp)? {
            Ok(result) => {
                match str_field(&result, "ClientId").or_else(|| str_field(&result, "clientId")) {
                    Some(id) if !id.eq_ignore_ascii_case(&req.broker_user_id) => (
                        false,
                        format!("the token belongs to {id}, not {}", req.broker_user_id),
                    ),
                    _ => (true, String::new()),
                }
            }
            Err((code, description)) => (
                false,
                format!("XTS refused the token: {code} {description}"),
            ),
        };
        Ok(VerifyOutput {
            v: WIRE_VERSION,
            valid,
            message,
        })
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(IiflXts);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jwt_exp() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"userID":"X","exp":1700000000}"#);
        assert_eq!(
            jwt_exp_ms(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")),
            Some(1_700_000_000_000)
        );
        assert_eq!(jwt_exp_ms("not-a-jwt"), None);
    }
}
