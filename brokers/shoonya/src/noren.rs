//! The Noren OMS steps of shoonya.md, each one HTTP exchange through the host: Q1 `QuickAuth`,
//! O2 `GenAcsTok`, V `Limits`; their `jData=` bodies, `stat`/`emsg` envelopes and error classes.

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput, HttpRequest, HttpResponse};
use broker_api::{Host, Level};
use broker_common::http::{self, str_field};
use broker_common::ist;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Request timeout.
const TIMEOUT_MS: u64 = 15_000;
/// `expires_in` is believed only within this far ahead (shoonya.md, Validity [INF]).
const EXPIRES_IN_HORIZON_MS: i64 = 36 * 3_600_000;

/// Which request an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Q1 `QuickAuth` (password hash, TOTP, vendor code, app key).
    QuickAuth,
    /// O2 `GenAcsTok` (the OAuth code and its checksum).
    GenAcsTok,
    /// V `Limits`.
    Limits,
}

impl Step {
    /// Name used in messages (never a body: Q1's carries the password hash).
    pub fn name(self) -> &'static str {
        match self {
            Step::QuickAuth => "Q1 QuickAuth",
            Step::GenAcsTok => "O2 GenAcsTok",
            Step::Limits => "V Limits",
        }
    }
}

/// Lowercase hex SHA-256 of the parts concatenated, as Noren wants every hash.
pub fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// How a session is presented to V: legacy `&jKey=` in the body, or OAuth's Bearer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `jKey=<susertoken>` (QuickAuth generation).
    JKey,
    /// `Authorization: Bearer <access_token>` (OAuth generation).
    Bearer,
}

/// The emsg's reason, as shoonya.md says to match it: lowercase, whitespace collapsed.
fn reason(emsg: &str) -> String {
    emsg.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Refusals that say this account may not use QuickAuth: the person must log in through OAuth.
pub fn refuses_quickauth(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::AutomationBlocked | ErrorClass::AppNotAuthorized
    )
}

/// The class of an `emsg`, by shoonya.md's table (first match wins; "User Blocked due to multiple
/// wrong attempts" is checked before the password texts it would also match).
pub fn classify(step: Step, status: u16, emsg: &str) -> ErrorOutput {
    use ErrorClass::*;
    let r = reason(emsg);
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    let (class, advice) = if has(&["rate_limit", "rate limit", "too many"]) || status == 429 {
        (RateLimited, "")
    } else if has(&["user blocked", "blocked due to"]) {
        (
            AccountLocked,
            "; not retried: unblock the account with Shoonya (reset the password), then store it",
        )
    } else if has(&["invalid otp", "otp"]) {
        (TwofaRejected, "")
    } else if has(&["password expired", "change password"]) {
        (
            InvalidCredentials,
            "; change the password on Shoonya's site, then store the new one",
        )
    } else if has(&["wrong password", "invalid password"]) {
        (
            InvalidCredentials,
            "; not retried (a retry could lock the account): store the right password",
        )
    } else if has(&["invalid access type"]) {
        (
            AutomationBlocked,
            "; Shoonya refuses QuickAuth for this account",
        )
    } else if has(&["not enabled on", "invalid vendor code", "invalid app key"]) {
        (
            AppNotAuthorized,
            "; QuickAuth is not open to this account (ask Shoonya to enable API access, or \
             regenerate the API key in Prism)",
        )
    } else if has(&["invalid_verifier"]) {
        (
            Protocol,
            ": the checksum, the secret_code, the uid or the client id is wrong, or the code was \
             used already",
        )
    } else if status >= 500 {
        (BrokerUnavailable, "")
    } else {
        (Protocol, "; an answer this strategy does not know")
    };
    let quoted = if emsg.trim().is_empty() {
        "no emsg".to_owned()
    } else {
        format!("\"{}\"", http::truncate(emsg.trim(), 200))
    };
    let mut out = ErrorOutput::new(
        class,
        format!("shoonya: {}: HTTP {status} {quoted}{advice}", step.name()),
    );
    if class == RateLimited {
        out.retry_after_ms = Some(http::DEFAULT_RETRY_AFTER_MS);
    }
    out
}

/// A text field that Noren sends as a string, or as a number.
pub fn text_field(body: &serde_json::Value, key: &str) -> Option<String> {
    match body.get(key)? {
        serde_json::Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// When a session issued at `now_ms` ends: `expires_in`, read as epoch seconds, when it falls in
/// (now, now + 36 h], capped at the next `hour`:00 IST; else that next `hour`:00 IST. The field is
/// described both as a duration and as an instant, and shown as a 10-digit number (shoonya.md).
pub fn expires_at(now_ms: i64, expires_in: Option<&str>, hour: u32) -> i64 {
    let cut = ist::next_ist_wall_time(now_ms, hour, 0);
    let epoch_ms = expires_in
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| s.checked_mul(1000));
    match epoch_ms {
        Some(t) if t > now_ms && t <= now_ms + EXPIRES_IN_HORIZON_MS => t.min(cut),
        _ => cut,
    }
}

/// A base URL by name, or a `protocol` failure naming it.
pub fn base_url(urls: &BTreeMap<String, String>, name: &str) -> Result<String, ErrorOutput> {
    let raw = urls.get(name).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("shoonya: base URL `{name}` is not configured"),
        )
        .before_credentials()
    })?;
    url::Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("shoonya: base URL `{name}`: {e}"),
        )
        .before_credentials()
    })?;
    Ok(raw.clone())
}

/// The `jData=` body as the official SDKs send it: the JSON is not URL-encoded (shoonya.md).
/// Values go in raw, so one holding a form delimiter would be read differently by a server that
/// form-decodes: the strategy refuses such operator-given values first ([`form_safe`]).
fn jdata(payload: &serde_json::Value) -> String {
    format!("jData={payload}")
}

/// Whether `value` survives a raw `jData=` body whether or not the server form-decodes it.
pub fn form_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '&' | '%' | '+' | '=' | '"' | '\\'))
}

/// What Q1 returns.
pub struct Session {
    /// `susertoken`: the legacy session key, sent as `jKey`.
    pub susertoken: String,
    /// `actid`.
    pub actid: Option<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.susertoken.zeroize();
    }
}

/// What O2 returns. The tokens are secret.
pub struct Granted {
    /// `access_token`, sent as `Authorization: Bearer`.
    pub access_token: String,
    /// `susertoken`, if sent.
    pub susertoken: Option<String>,
    /// `USERID`: whose login the code came from.
    pub user_id: Option<String>,
    /// `actid`.
    pub actid: Option<String>,
    /// `expires_in` as sent.
    pub expires_in: Option<String>,
}

impl Drop for Granted {
    fn drop(&mut self) {
        self.access_token.zeroize();
        if let Some(s) = &mut self.susertoken {
            s.zeroize();
        }
    }
}

/// The Noren hosts of one call.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    /// `legacy_url`: the QuickAuth generation.
    legacy: String,
    /// `api_url`: GenAcsTok and OAuth-era calls.
    api: String,
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on the effective `legacy_url` and `api_url`.
    pub fn new(host: &'a Host<'h>, urls: &BTreeMap<String, String>) -> Result<Self, ErrorOutput> {
        Ok(Client {
            host,
            legacy: base_url(urls, "legacy_url")?,
            api: base_url(urls, "api_url")?,
        })
    }

    /// POST `body` to `base` + `path`; the body (hashes, codes, session keys) and the headers
    /// (a Bearer token) are wiped once sent.
    fn post(
        &self,
        step: Step,
        url: String,
        mut body: String,
        bearer: Option<&str>,
    ) -> Result<HttpResponse, ErrorOutput> {
        let mut req = HttpRequest::new("POST", url)
            .header("Accept", "application/json")
            .body("application/x-www-form-urlencoded", body.clone());
        body.zeroize();
        if let Some(token) = bearer {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for [_, value] in &mut req.headers {
            value.zeroize();
        }
        result.map_err(|e| http::host_failure("shoonya", step.name(), &e))
    }

    /// The answer as a JSON object, or the failure a non-JSON answer (HTML, 5xx, 429) means.
    fn object(step: Step, resp: &HttpResponse) -> Result<serde_json::Value, ErrorOutput> {
        if let Some(e) = http::triage("shoonya", step.name(), resp) {
            return Err(e);
        }
        http::json_object("shoonya", step.name(), resp)
    }

    /// Q1: `POST {legacy}/QuickAuth`. `api_key` is the Prism API key, hashed into `appkey`.
    pub fn quick_auth(
        &self,
        uid: &str,
        password: &str,
        totp: &str,
        vendor_code: &str,
        api_key: &str,
        imei: &str,
    ) -> Result<Session, ErrorOutput> {
        let step = Step::QuickAuth;
        let mut pwd = sha256_hex(&[password]);
        let mut appkey = sha256_hex(&[uid, "|", api_key]);
        let payload = serde_json::json!({
            "source": "API", "apkversion": "1.0.0", "uid": uid, "pwd": pwd, "factor2": totp,
            "vc": vendor_code, "appkey": appkey, "imei": imei,
        });
        pwd.zeroize();
        appkey.zeroize();
        let resp = self.post(
            step,
            http::join(&self.legacy, "/QuickAuth"),
            jdata(&payload),
            None,
        )?;
        drop(payload);
        let body = Self::object(step, &resp)?;
        let ok = str_field(&body, "stat").is_some_and(|s| s.eq_ignore_ascii_case("ok"));
        let emsg = str_field(&body, "emsg").unwrap_or_default();
        if !ok {
            // Noren sends `Not_Ok` envelopes with HTTP 200 and 400 alike.
            return Err(classify(step, resp.status, emsg));
        }
        // A password due for change is reported with `stat: Ok` (shoonya.md [OFF N2]).
        if str_field(&body, "spasswordreset").is_some_and(|v| v.eq_ignore_ascii_case("y")) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                "shoonya: Q1 QuickAuth: Shoonya asks for a password change (spasswordreset); \
                 change it on Shoonya's site, then store the new one",
            ));
        }
        let susertoken = str_field(&body, "susertoken")
            .ok_or_else(|| classify(step, 200, "stat Ok without a susertoken"))?
            .to_owned();
        Ok(Session {
            susertoken,
            actid: text_field(&body, "actid"),
        })
    }

    /// O2: `POST {api}/GenAcsTok` with the code, its checksum and the uid. Success is keyed on
    /// `access_token` alone: the answer may carry no `stat` (shoonya.md).
    pub fn gen_acs_tok(
        &self,
        uid: &str,
        client_id: &str,
        secret_code: &str,
        code: &str,
    ) -> Result<Granted, ErrorOutput> {
        let step = Step::GenAcsTok;
        let mut checksum = sha256_hex(&[client_id, secret_code, code]);
        let payload = serde_json::json!({"code": code, "checksum": checksum, "uid": uid});
        checksum.zeroize();
        let resp = self.post(
            step,
            http::join(&self.api, "/GenAcsTok"),
            jdata(&payload),
            None,
        )?;
        let body = Self::object(step, &resp)?;
        match str_field(&body, "access_token") {
            Some(token) => Ok(Granted {
                access_token: token.to_owned(),
                susertoken: str_field(&body, "susertoken").map(str::to_owned),
                user_id: text_field(&body, "USERID").or_else(|| text_field(&body, "uid")),
                actid: text_field(&body, "actid"),
                expires_in: text_field(&body, "expires_in"),
            }),
            None => Err(classify(
                step,
                resp.status,
                str_field(&body, "emsg").unwrap_or_default(),
            )),
        }
    }

    /// V: `POST {legacy|api}/Limits`. `Ok(())` when the session works; `Err(Ok(text))` when
    /// Noren refuses it (any `Not_Ok`: shoonya.md treats every one as a dead session);
    /// `Err(Err(_))` for any other failure.
    pub fn limits(
        &self,
        auth: Auth,
        token: &str,
        uid: &str,
        actid: &str,
    ) -> Result<(), Result<String, ErrorOutput>> {
        let step = Step::Limits;
        let payload = serde_json::json!({"uid": uid, "actid": actid});
        let resp = match auth {
            Auth::JKey => {
                let mut body = format!("{}&jKey={token}", jdata(&payload));
                let sent = self.post(
                    step,
                    http::join(&self.legacy, "/Limits"),
                    body.clone(),
                    None,
                );
                body.zeroize();
                sent
            }
            Auth::Bearer => self.post(
                step,
                http::join(&self.api, "/Limits"),
                jdata(&payload),
                Some(token),
            ),
        }
        .map_err(Err)?;
        // A refused Bearer token may come back as a bare 401 with no envelope.
        if resp.status == 401 && http::json(&resp).is_none() {
            return Err(Ok(format!("shoonya: {}: HTTP 401", step.name())));
        }
        let body = Self::object(step, &resp).map_err(Err)?;
        if str_field(&body, "stat").is_some_and(|s| s.eq_ignore_ascii_case("ok")) {
            return Ok(());
        }
        let emsg = str_field(&body, "emsg").unwrap_or_default();
        if resp.status == 429 || reason(emsg).contains("rate_limit") {
            return Err(Err(classify(step, resp.status, emsg)));
        }
        Err(Ok(format!(
            "shoonya: {}: HTTP {} \"{}\"",
            step.name(),
            resp.status,
            http::truncate(emsg, 200)
        )))
    }

    /// V with step retries for a session just obtained: `Err` when it does not work.
    pub fn check_fresh(
        &self,
        auth: Auth,
        token: &str,
        uid: &str,
        actid: &str,
    ) -> Result<(), ErrorOutput> {
        let mut retry = http::StepRetry::default();
        loop {
            match self.limits(auth, token, uid, actid) {
                Ok(()) => {
                    self.host.log(Level::Debug, "shoonya: V Limits ok");
                    return Ok(());
                }
                Err(Err(e)) if retry.wait(self.host, "shoonya", Step::Limits.name(), &e) => {}
                Err(Err(e)) => return Err(e),
                Err(Ok(refused)) => {
                    return Err(ErrorOutput::new(
                        ErrorClass::Protocol,
                        format!("{refused}: the fresh session was refused at once"),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_docs_vectors() {
        assert_eq!(
            sha256_hex(&["Passw0rd!"]),
            "e66860546f18cdbbcd86b35e18b525bffc67f772c650cedfe3ff7a0026fa1dee"
        );
        assert_eq!(
            sha256_hex(&["FA12345", "|", "APIKEY123"]),
            "7b432a022d201e5efa62427bbdcec5936f764f776a6eba6700766ead9cbb4011"
        );
        assert_eq!(
            sha256_hex(&[
                "FA12345_U",
                "S3CR3T",
                "4604773e-4ee3-4d48-a920-f31dd6fb4abf"
            ]),
            "1ac519be5007d5cc80fe75f6121b8f5d46aa96d97ef37a65b5c5252226652289"
        );
    }

    #[test]
    fn emsg_table() {
        use ErrorClass::*;
        let c = |m: &str| classify(Step::QuickAuth, 200, m).class;
        assert_eq!(c("Invalid Input : Invalid OTP"), TwofaRejected);
        assert_eq!(c("Invalid Input :  Wrong Password"), InvalidCredentials);
        assert_eq!(
            c("Invalid Input : User Blocked due to multiple wrong attempts"),
            AccountLocked
        );
        assert_eq!(c("Invalid Input : Password Expired"), InvalidCredentials);
        assert_eq!(c("Invalid Input : Change Password"), InvalidCredentials);
        assert_eq!(c("Invalid Input : Invalid Vendor code"), AppNotAuthorized);
        assert_eq!(c("Invalid Input : Invalid App Key"), AppNotAuthorized);
        assert_eq!(
            c("Invalid Input : User Not enabled on : API"),
            AppNotAuthorized
        );
        assert_eq!(c("Invalid Input : INVALID ACCESS TYPE"), AutomationBlocked);
        assert_eq!(c("Invalid Input : INVALID_VERIFIER"), Protocol);
        assert_eq!(c("Rate_Limited"), RateLimited);
        assert_eq!(c("Something new"), Protocol);
        assert_eq!(classify(Step::QuickAuth, 503, "").class, BrokerUnavailable);
    }

    #[test]
    fn expiry_is_the_earlier_of_expires_in_and_the_cut_off() {
        // 2026-03-30 08:30 IST.
        let now = ist::parse_ist("2026-03-30 08:30:00").unwrap();
        let six = ist::parse_ist("2026-03-31 06:00:00").unwrap();
        assert_eq!(expires_at(now, None, 6), six);
        let at = |s: &str| ((ist::parse_ist(s).unwrap()) / 1000).to_string();
        let evening = at("2026-03-30 23:00:00");
        assert_eq!(
            expires_at(now, Some(&evening), 6),
            ist::parse_ist("2026-03-30 23:00:00").unwrap()
        );
        // Later than the cut-off, past, beyond 36 h, a duration, or unreadable: the cut-off.
        for other in [
            at("2026-03-31 07:00:00"),
            at("2026-03-30 08:00:00"),
            at("2026-04-02 08:00:00"),
            "86400".to_owned(),
            "soon".to_owned(),
        ] {
            assert_eq!(expires_at(now, Some(&other), 6), six, "{other}");
        }
        assert_eq!(
            expires_at(now, None, 0),
            ist::parse_ist("2026-03-31 00:00:00").unwrap()
        );
    }

    #[test]
    fn raw_jdata_values_must_not_hold_form_delimiters() {
        assert!(form_safe("FA12345"));
        assert!(form_safe("abc1234-xy"));
        for bad in ["", "a&b", "a+b", "50%", "a b", "x=y", "q\""] {
            assert!(!form_safe(bad), "{bad}");
        }
    }
}
