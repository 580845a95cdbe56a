//! The headless steps H1–H3 over Fyers' `vagator` login API: the community-known flow (FyersDev
//! *sample* code and third-party clients, not Fyers' API reference). Provisional: endpoint names,
//! value encoding and the user-id field name are settings (fyers.md, risk 1).

use std::collections::BTreeMap;

use base64::Engine;
use broker_api::wire::{ErrorClass, ErrorOutput, HttpRequest, Sensitive};
use broker_api::{Host, Level};
use broker_common::http::{self, str_field};
use zeroize::Zeroize;

use crate::errors::{self, Step, protocol};

/// Official clients' order of magnitude; vagator answers in well under a second.
const TIMEOUT_MS: u64 = 10_000;

/// How H1 and H3 encode their values (setting `otp_variant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpVariant {
    /// `send_login_otp_v2` / `verify_pin_v2`, values base64-encoded (community, 2023–2025).
    Base64,
    /// `send_login_otp` / `verify_pin`, plain values (FyersDev samples).
    Plain,
}

/// The vagator steps' settings, read from the effective `[brokers.fyers]` settings.
#[derive(Clone, Debug)]
pub struct VagatorSettings {
    /// Value encoding.
    pub variant: OtpVariant,
    /// H1 path under `login_url`.
    pub send_otp_path: String,
    /// H2 path under `login_url`.
    pub verify_otp_path: String,
    /// H3 path under `login_url`.
    pub verify_pin_path: String,
    /// H1's field carrying the user id (`fy_id`; other generations used `mobile_no`,
    /// `identifier_value`).
    pub id_field: String,
}

/// Setting names and defaults.
pub const SETTINGS: &[(&str, &str)] = &[
    ("otp_variant", "base64"),
    ("send_login_otp_path", ""),
    ("verify_otp_path", "verify_otp"),
    ("verify_pin_path", ""),
    ("otp_id_field", "fy_id"),
];

fn setting<'a>(s: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    let default = SETTINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| *d);
    s.get(name).map_or(default, |v| v.trim())
}

impl VagatorSettings {
    /// From the effective settings; an unknown `otp_variant` is a configuration error.
    pub fn from_settings(s: &BTreeMap<String, String>) -> Result<VagatorSettings, ErrorOutput> {
        let variant = match setting(s, "otp_variant") {
            "base64" | "" => OtpVariant::Base64,
            "plain" => OtpVariant::Plain,
            other => {
                return Err(ErrorOutput::new(
                    ErrorClass::Protocol,
                    format!("fyers: setting otp_variant = {other:?}: expected base64 or plain"),
                )
                .before_credentials());
            }
        };
        let or = |name: &str, b64: &str, plain: &str| match setting(s, name) {
            "" if variant == OtpVariant::Base64 => b64.to_owned(),
            "" => plain.to_owned(),
            v => v.to_owned(),
        };
        Ok(VagatorSettings {
            variant,
            send_otp_path: or("send_login_otp_path", "send_login_otp_v2", "send_login_otp"),
            verify_otp_path: or("verify_otp_path", "verify_otp", "verify_otp"),
            verify_pin_path: or("verify_pin_path", "verify_pin_v2", "verify_pin"),
            id_field: or("otp_id_field", "fy_id", "fy_id"),
        })
    }

    fn encode(&self, value: &str) -> String {
        match self.variant {
            OtpVariant::Base64 => base64::engine::general_purpose::STANDARD.encode(value),
            OtpVariant::Plain => value.to_owned(),
        }
    }
}

/// The vagator host of one login.
pub struct Vagator<'a, 'h> {
    host: &'a Host<'h>,
    base: String,
    settings: VagatorSettings,
}

impl<'a, 'h> Vagator<'a, 'h> {
    /// On `login_url` with `settings`.
    pub fn new(host: &'a Host<'h>, base: &str, settings: VagatorSettings) -> Self {
        Vagator {
            host,
            base: base.trim_end_matches('/').to_owned(),
            settings,
        }
    }

    fn exchange(
        &self,
        step: Step,
        path: &str,
        body: serde_json::Value,
    ) -> Result<broker_api::wire::HttpResponse, ErrorOutput> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let mut req = HttpRequest::new("POST", url)
            .header("Accept", "application/json")
            .body("application/json", body.to_string());
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        result.map_err(|e| http::host_failure("fyers", step.name(), &e))
    }

    fn post(
        &self,
        step: Step,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ErrorOutput> {
        errors::ok_body(step, &self.exchange(step, path, body)?)
    }

    /// H1: ask for a login with the client id; returns the first `request_key`.
    pub fn send_otp(&self, fy_id: &str) -> Result<String, ErrorOutput> {
        let step = Step::SendOtp;
        let mut body = serde_json::Map::new();
        body.insert(
            self.settings.id_field.clone(),
            self.settings.encode(fy_id).into(),
        );
        body.insert("app_id".into(), "2".into());
        let out = self.post(step, &self.settings.send_otp_path, body.into())?;
        request_key(step, &out)
    }

    /// H2: the TOTP, from a fresh step; one more try on the next step if it is refused (never
    /// the same step twice: the host guarantees it). Returns the next `request_key`.
    pub fn verify_otp(&self, request_key_1: &str) -> Result<String, ErrorOutput> {
        let step = Step::VerifyOtp;
        let mut key = request_key_1.to_owned();
        let mut refused_once = false;
        loop {
            let code = self.host.totp().map_err(|e| totp_failure(&e))?;
            let body = serde_json::json!({"request_key": key, "otp": code.code.expose()});
            let resp = self.exchange(step, &self.settings.verify_otp_path, body)?;
            // The key rotates at every step (fyers.md H2); a refusal that carries one is obeyed.
            let rotated =
                http::json(&resp).and_then(|b| str_field(&b, "request_key").map(str::to_owned));
            match errors::ok_body(step, &resp) {
                Ok(out) => return request_key(step, &out),
                Err(e) if e.class == ErrorClass::TwofaRejected && !refused_once => {
                    refused_once = true;
                    self.host.log(
                        Level::Warn,
                        "fyers: the TOTP code was refused; trying once more with the next step's code",
                    );
                    if let Some(k) = rotated {
                        key = k;
                    }
                }
                Err(mut e) => {
                    if e.class == ErrorClass::TwofaRejected {
                        e.message.push_str(
                            " (refused on two different steps: check the TOTP secret and the host clock)",
                        );
                    }
                    return Err(e);
                }
            }
        }
    }

    /// H3: the PIN, sent exactly once. Returns the trading-session token (`data.access_token`),
    /// only ever used for H4.
    pub fn verify_pin(&self, request_key_2: &str, pin: &str) -> Result<Sensitive, ErrorOutput> {
        let step = Step::VerifyPin;
        let mut identifier = self.settings.encode(pin);
        let body = serde_json::json!({
            "request_key": request_key_2,
            "identity_type": "pin",
            "identifier": identifier,
            "recaptcha_token": "",
        });
        identifier.zeroize();
        let out = self.post(step, &self.settings.verify_pin_path, body)?;
        let token = out
            .get("data")
            .and_then(|d| str_field(d, "access_token"))
            .ok_or_else(|| protocol(step, "no data.access_token"))?;
        self.host
            .log(Level::Debug, &format!("fyers: {} ok", step.name()));
        Ok(Sensitive::new(token))
    }
}

fn request_key(step: Step, body: &serde_json::Value) -> Result<String, ErrorOutput> {
    str_field(body, "request_key")
        .map(str::to_owned)
        .ok_or_else(|| protocol(step, "no request_key"))
}

fn totp_failure(e: &broker_api::guest::HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "fyers: the account has no totp_secret: store the External 2FA TOTP key, or use assisted login",
        ),
        _ => http::host_failure("fyers", "TOTP", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_pick_their_endpoints_and_encodings() {
        let b = VagatorSettings::from_settings(&BTreeMap::new()).unwrap();
        assert_eq!(b.send_otp_path, "send_login_otp_v2");
        assert_eq!(b.verify_pin_path, "verify_pin_v2");
        assert_eq!(b.encode("XY12345"), "WFkxMjM0NQ==");
        assert_eq!(b.encode("1234"), "MTIzNA==");
        let p = VagatorSettings::from_settings(&BTreeMap::from([(
            "otp_variant".to_string(),
            "plain".to_string(),
        )]))
        .unwrap();
        assert_eq!(p.send_otp_path, "send_login_otp");
        assert_eq!(p.verify_pin_path, "verify_pin");
        assert_eq!(p.encode("XY12345"), "XY12345");
        let bad = BTreeMap::from([("otp_variant".to_string(), "rot13".to_string())]);
        assert!(VagatorSettings::from_settings(&bad).is_err());
    }
}
