//! The steps K1, K2 and V of kotak-neo.md, each one HTTP exchange through the host.

use std::collections::BTreeMap;

use broker_api::abi::Status;
use broker_api::guest::HostCallError;
use broker_api::wire::{ErrorClass, ErrorOutput, HttpRequest, HttpResponse, Sensitive};
use broker_api::{Host, Level};
use broker_common::http::{self, str_field};
use zeroize::Zeroize;

use crate::errors::{self, Step, protocol};

/// The SDK's timeout (kotak-neo.md, Conventions).
const TIMEOUT_MS: u64 = 30_000;

/// Settings and defaults (kotak-neo.md: the docs and the SDK disagree on these).
pub const SETTINGS: &[(&str, &str)] = &[
    ("neo_fin_key", "neotradeapi"),
    ("mobile_format", "international"),
    ("login_path", "tradeApiLogin"),
    ("validate_path", "tradeApiValidate"),
    ("verify_path", "quick/user/limits"),
];

/// An effective setting.
pub fn setting<'a>(s: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    let default = SETTINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| *d);
    s.get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

/// The registered mobile as K1 wants it: `+91` and 10 digits (`international`, the docs), or the
/// 10 digits alone (`national`, the SDK sample).
pub fn mobile_number(raw: &str, format: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let national = match digits.len() {
        10 => digits,
        12 if digits.starts_with("91") => digits[2..].to_owned(),
        _ => return None,
    };
    match format {
        "national" => Some(national),
        "international" => Some(format!("+91{national}")),
        _ => None,
    }
}

/// A session (view after K1, trade after K2).
pub struct Session {
    /// `data.token`.
    pub token: Sensitive,
    /// `data.sid`.
    pub sid: Sensitive,
    /// `data.hsServerId`.
    pub hs_server_id: String,
    /// `data.dataCenter`.
    pub data_center: String,
    /// `data.baseUrl`.
    pub base_url: Option<String>,
}

/// The Kotak Neo hosts of one call.
pub struct Neo<'a, 'h> {
    host: &'a Host<'h>,
    login: String,
    fin_key: String,
    settings: &'a BTreeMap<String, String>,
}

impl<'a, 'h> Neo<'a, 'h> {
    /// On `login_url` with the effective settings.
    pub fn new(host: &'a Host<'h>, login: &str, settings: &'a BTreeMap<String, String>) -> Self {
        Neo {
            host,
            login: login.trim_end_matches('/').to_owned(),
            fin_key: setting(settings, "neo_fin_key").to_owned(),
            settings,
        }
    }

    fn send_raw(&self, mut req: HttpRequest) -> Result<HttpResponse, HostCallError> {
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        for h in &mut req.headers {
            h[1].zeroize();
        }
        result
    }

    fn send(&self, step: Step, req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        self.send_raw(req)
            .map_err(|e| http::host_failure("kotak-neo", step.name(), &e))
    }

    fn login_request(&self, path_setting: &str, api_token: &str) -> HttpRequest {
        let path = setting(self.settings, path_setting).trim_start_matches('/');
        HttpRequest::new("POST", format!("{}/{path}", self.login))
            .header("Accept", "application/json")
            .header("Authorization", api_token)
            .header("neo-fin-key", self.fin_key.as_str())
    }

    /// K1 with a fresh TOTP. The documented 401 "Invalid credentials or TOTP." cannot tell a
    /// wrong mobile/UCC from a wrong code: the first is `twofa_rejected` and gets one more try on
    /// the next step; a second is `invalid_credentials` (kotak-neo.md). No MPIN is sent here.
    pub fn view_session(
        &self,
        api_token: &str,
        mobile: &str,
        ucc: &str,
    ) -> Result<Session, ErrorOutput> {
        let step = Step::Login;
        let mut refused_once = false;
        loop {
            let code = self.host.totp().map_err(|e| totp_failure(&e))?;
            let body =
                serde_json::json!({"mobileNumber": mobile, "ucc": ucc, "totp": code.code.expose()});
            let req = self
                .login_request("login_path", api_token)
                .body("application/json", body.to_string());
            let result = self
                .send(step, req)
                .and_then(|resp| errors::ok_body(step, &resp))
                .and_then(|body| session(step, &body, "View", ucc));
            match result {
                Ok(s) => return Ok(s),
                Err(e) if e.class == ErrorClass::TwofaRejected && !refused_once => {
                    refused_once = true;
                    self.host.log(
                        Level::Warn,
                        "kotak-neo: K1 refused the credentials or the TOTP (Kotak does not say which); \
                         trying once more with the next step's code",
                    );
                }
                // No MPIN was sent, but K1 was refused on two steps: no new login this refresh.
                Err(e) if e.class == ErrorClass::TwofaRejected => {
                    return Err(ErrorOutput::new(
                        ErrorClass::InvalidCredentials,
                        format!(
                            "{}; refused on two different TOTP steps, so not retried: check \
                             mobile, broker_user_id (UCC), totp_secret and the host clock",
                            e.message
                        ),
                    ));
                }
                // After a refused K1, a new login would send more identity and TOTP tries
                // (Kotak counts them): only a failure of the first K1 may start one.
                Err(e) if refused_once => return Err(e),
                Err(e) => return Err(e.before_credentials()),
            }
        }
    }

    /// K2: the MPIN, sent exactly once, on the view session.
    pub fn trade_session(
        &self,
        api_token: &str,
        view: &Session,
        mpin: &str,
        ucc: &str,
    ) -> Result<Session, ErrorOutput> {
        let step = Step::Validate;
        let mut body = serde_json::json!({ "mpin": mpin }).to_string();
        let req = self
            .login_request("validate_path", api_token)
            .header("sid", view.sid.expose())
            .header("Auth", view.token.expose())
            .body("application/json", body.as_str());
        body.zeroize();
        let resp = self.send(step, req)?;
        let out = errors::ok_body(step, &resp)?;
        let data = out.get("data").cloned().unwrap_or_default();
        if data.get("isUserPwdExpired").is_some_and(errors::truthy) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                "kotak-neo: K2: the password has expired; reset it in the Neo app",
            ));
        }
        session(step, &out, "Trade", ucc)
    }

    /// V: the limits call on the trade session's `baseUrl`. `Ok(())` when Kotak accepts the
    /// session; `Err(Ok(message))` when it refuses it (stCode 1003/100022, HTTP 401);
    /// `Err(Err(_))` for any other failure.
    pub fn check(
        &self,
        base_url: &str,
        trade: &Session,
    ) -> Result<(), Result<String, ErrorOutput>> {
        let step = Step::Verify;
        let path = setting(self.settings, "verify_path").trim_start_matches('/');
        let mut url = format!("{}/{path}", base_url.trim_end_matches('/'));
        if !trade.hs_server_id.is_empty() {
            url.push_str(&format!("?{}", http::form(&[("sId", &trade.hs_server_id)])));
        }
        let jdata = serde_json::json!({"seg": "ALL", "exch": "ALL", "prod": "ALL"}).to_string();
        let req = HttpRequest::new("POST", url)
            .header("accept", "application/json")
            .header("Auth", trade.token.expose())
            .header("Sid", trade.sid.expose())
            .header("neo-fin-key", self.fin_key.as_str())
            .body(
                "application/x-www-form-urlencoded",
                http::form(&[("jData", &jdata)]),
            );
        let resp = match self.send_raw(req) {
            Ok(resp) => resp,
            Err(e) if e.status == Status::DENIED => return Err(Err(not_allowed(base_url))),
            Err(e) => return Err(Err(http::host_failure("kotak-neo", step.name(), &e))),
        };
        if let Some(e) = errors::triage(step, &resp) {
            return Err(Err(e));
        }
        // A 401 refuses the session whatever its body (a gateway's bare 401 carries no JSON).
        if resp.status == 401 && http::json(&resp).is_none_or(|b| !b.is_object()) {
            return Err(Ok("Kotak refused the session: HTTP 401".to_owned()));
        }
        let body = http::json_object("kotak-neo", step.name(), &resp).map_err(Err)?;
        match errors::envelope_error(&body, resp.status) {
            None => Ok(()),
            Some(e)
                if resp.status == 401 || matches!(e.code.as_deref(), Some("1003" | "100022")) =>
            {
                Err(Ok(format!("Kotak refused the session: {}", e.message)))
            }
            Some(e) => Err(Err(errors::classify(step, &e))),
        }
    }
}

/// The session in a K1/K2 success: HTTP 2xx and `data.token` (the SDK's rule), `data.kType` as
/// expected when present, `data.ucc` the account's when present.
fn session(
    step: Step,
    body: &serde_json::Value,
    k_type: &str,
    ucc: &str,
) -> Result<Session, ErrorOutput> {
    let data = body.get("data").ok_or_else(|| protocol(step, "no data"))?;
    if let Some(t) = str_field(data, "kType").filter(|t| !t.eq_ignore_ascii_case(k_type)) {
        return Err(protocol(step, &format!("kType {t}, expected {k_type}")));
    }
    if let Some(u) = str_field(data, "ucc").filter(|u| !u.eq_ignore_ascii_case(ucc)) {
        return Err(protocol(
            step,
            &format!("the session is for UCC {u}, not {ucc}"),
        ));
    }
    let token = str_field(data, "token").ok_or_else(|| protocol(step, "no data.token"))?;
    let sid = str_field(data, "sid").ok_or_else(|| protocol(step, "no data.sid"))?;
    // `hsServerId` may come as a number (`2`) as well as a string (`"server2"`).
    let text = |k: &str| data.get(k).and_then(errors::text).unwrap_or_default();
    Ok(Session {
        token: Sensitive::new(token),
        sid: Sensitive::new(sid),
        hs_server_id: text("hsServerId"),
        data_center: text("dataCenter"),
        base_url: str_field(data, "baseUrl")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned),
    })
}

fn not_allowed(base_url: &str) -> ErrorOutput {
    let host = url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!(
            "kotak-neo: the session's baseUrl host {host} is not an allowed host: set \
             [brokers.kotak-neo] api_url to that base URL so the host allows it"
        ),
    )
}

fn totp_failure(e: &broker_api::guest::HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "kotak-neo: the account has no totp_secret: register TOTP in the Neo API dashboard and store its secret",
        )
        .before_credentials(),
        _ => http::host_failure("kotak-neo", "TOTP", e).before_credentials(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_numbers_in_both_formats() {
        assert_eq!(
            mobile_number("98765 43210", "international").as_deref(),
            Some("+919876543210")
        );
        assert_eq!(
            mobile_number("+91-9876543210", "international").as_deref(),
            Some("+919876543210")
        );
        assert_eq!(
            mobile_number("+919876543210", "national").as_deref(),
            Some("9876543210")
        );
        assert_eq!(mobile_number("12345", "international"), None);
        assert_eq!(mobile_number("9876543210", "e164"), None);
    }
}
