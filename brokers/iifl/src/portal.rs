//! The provisional headless driver of the IIFL login portal (iifl.md, step 1): the portal's calls
//! are not publicly documented; this follows the flow of the same vendor's AliceBlue/RMoney
//! portals. Everything portal-specific lives here behind [`headless_auth_code`], so a portal
//! change is a change of this file (and the paths are configurable, see [`PortalUrls`]).
//!
//! 1. `client/verify {"userId"}` -> `result[0].isExist == "Yes"`
//! 2. `client/enckey {"userId"}` -> `result[0].encKey`
//! 3. `v1/pwd/validate {"userId","userData":AES(password, encKey),"source":"WEB"}` -> `result[0].token`
//! 4. `topt/verify {"userId","totp","source":"WEB","vendor":appKey}` with the step 3 token in
//!    `Authorization` -> `result[0].redirectUrl` carrying `authCode`. The header's form is not
//!    documented: third-party code shows `Bearer <userId> WEB <token>` beside `vendor` (the
//!    default) and `Bearer <userId> <token>` (setting `totp_auth_header = "plain"`). A wrong form
//!    is answered EC003, which is therefore not retried at this step.
//!
//! Steps 1 and 2 send no credential: their failures may start a new login. From step 3 on the
//! password may have been sent: failures are retried at their step within the deadline, never by
//! sending the password again.

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput, HttpRequest};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry, str_field};
use serde_json::json;
use url::Url;
use zeroize::Zeroize;

use crate::errors::{self, Step, protocol};
use crate::{AuthCode, auth_code_from_pairs, crypto};

/// Default paths under `portal_url`.
pub const CLIENT_VERIFY_PATH: &str = "/omk/auth/access/client/verify";
/// See [`CLIENT_VERIFY_PATH`].
pub const ENCKEY_PATH: &str = "/omk/auth/access/client/enckey";
/// See [`CLIENT_VERIFY_PATH`].
pub const PASSWORD_PATH: &str = "/omk/auth/access/v1/pwd/validate";
/// See [`CLIENT_VERIFY_PATH`].
pub const TOTP_PATH: &str = "/omk/auth/access/topt/verify";

/// How the step 3 token is sent to `topt/verify` (setting `totp_auth_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpAuthHeader {
    /// `Bearer <userId> WEB <token>` (with `vendor` in the body): the default.
    Web,
    /// `Bearer <userId> <token>`.
    Plain,
}

impl TotpAuthHeader {
    /// Name of the setting.
    pub const SETTING: &'static str = "totp_auth_header";

    /// From the effective settings (absent: the default).
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self, ErrorOutput> {
        match settings
            .get(Self::SETTING)
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => Ok(TotpAuthHeader::Web),
            Some(v) if v == "web" => Ok(TotpAuthHeader::Web),
            Some(v) if v == "plain" => Ok(TotpAuthHeader::Plain),
            Some(v) => Err(ErrorOutput::new(
                ErrorClass::Protocol,
                format!(
                    "iifl: setting {} = {v:?}: must be \"web\" or \"plain\"",
                    Self::SETTING
                ),
            )
            .before_credentials()),
        }
    }

    fn header(self, user_id: &str, token: &str) -> String {
        match self {
            TotpAuthHeader::Web => format!("Bearer {user_id} WEB {token}"),
            TotpAuthHeader::Plain => format!("Bearer {user_id} {token}"),
        }
    }
}

/// The four portal endpoints. Each is `portal_url` + its default path unless the base URLs name it
/// in full: `portal_client_verify_url`, `portal_enckey_url`, `portal_password_url`,
/// `portal_totp_url` (e.g. `[brokers.iifl] portal_totp_url = "https://.../omk/auth/access/topt/verify"`).
pub struct PortalUrls {
    /// `portal_url` itself.
    pub portal: String,
    client_verify: String,
    enckey: String,
    password: String,
    totp: String,
}

impl PortalUrls {
    /// From the effective base URLs.
    pub fn new(urls: &BTreeMap<String, String>) -> Result<PortalUrls, ErrorOutput> {
        let portal = urls
            .get("portal_url")
            .ok_or_else(|| {
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    "iifl: base URL `portal_url` is not configured",
                )
            })?
            .clone();
        let pick = |key: &str, path: &str| {
            urls.get(key)
                .cloned()
                .unwrap_or_else(|| http::join(&portal, path))
        };
        Ok(PortalUrls {
            client_verify: pick("portal_client_verify_url", CLIENT_VERIFY_PATH),
            enckey: pick("portal_enckey_url", ENCKEY_PATH),
            password: pick("portal_password_url", PASSWORD_PATH),
            totp: pick("portal_totp_url", TOTP_PATH),
            portal,
        })
    }
}

fn post(
    host: &Host<'_>,
    step: Step,
    url: &str,
    body: &serde_json::Value,
    auth: Option<&str>,
) -> Result<serde_json::Value, ErrorOutput> {
    let mut req = HttpRequest::new("POST", url).header("Accept", "application/json");
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    let mut req = req.body("application/json", body.to_string());
    let resp = host.http(&req);
    req.body.zeroize();
    for [name, value] in &mut req.headers {
        if name.eq_ignore_ascii_case("authorization") {
            value.zeroize();
        }
    }
    let resp = resp.map_err(|e| http::host_failure("iifl", step.name(), &e))?;
    errors::ok_body(step, &resp)
}

/// `result[0]` of a portal answer.
///
/// The portal's answers are undocumented (iifl.md [UNK]): the vendor's other portals send `result`
/// as a one-element array, and a `result` object is taken as that element.
fn first_result(step: Step, body: &serde_json::Value) -> Result<serde_json::Value, ErrorOutput> {
    match body.get("result") {
        Some(serde_json::Value::Array(items)) => items.first().cloned(),
        Some(object @ serde_json::Value::Object(_)) => Some(object.clone()),
        _ => None,
    }
    .ok_or_else(|| protocol(step, "no result[0]"))
}

/// `isExist` as `"Yes"`/`"No"` (the vendor's form), `"Y"`/`"N"`, or a JSON boolean.
fn client_exists(result: &serde_json::Value) -> Option<bool> {
    match result.get("isExist")? {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" => Some(true),
            "no" | "n" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The `authCode` of `topt/verify`'s answer: in its `redirectUrl` (the vendor's form), or, failing
/// that, as `authCode`/`clientId` fields of the result itself.
fn auth_code_of(
    step: Step,
    portal: &str,
    result: &serde_json::Value,
) -> Result<AuthCode, ErrorOutput> {
    if let Some(redirect) = str_field(result, "redirectUrl") {
        let base = Url::parse(portal).map_err(|e| protocol(step, &format!("portal_url: {e}")))?;
        let redirect = base
            .join(redirect)
            .map_err(|_| protocol(step, "an unreadable redirectUrl"))?;
        let pairs: Vec<(String, String)> = redirect
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        return auth_code_from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .ok_or_else(|| protocol(step, "the redirectUrl carries no authCode"));
    }
    let fields: Vec<(&str, &str)> = result
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect();
    auth_code_from_pairs(fields).ok_or_else(|| protocol(step, "no redirectUrl nor authCode"))
}

/// Drive the portal headlessly: the password is sent once, TOTP codes come from the host (one more
/// try on a fresh step if IIFL refuses the first with EC036).
pub fn headless_auth_code(
    host: &Host<'_>,
    urls: &PortalUrls,
    user_id: &str,
    password: &str,
    app_key: &str,
    auth_form: TotpAuthHeader,
) -> Result<AuthCode, ErrorOutput> {
    let mut enc_key =
        before_password(host, urls, user_id).map_err(ErrorOutput::before_credentials)?;

    let step = Step::Password;
    let user_data = crypto::openssl_encrypt(password.as_bytes(), enc_key.as_bytes()).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("iifl: no randomness for the salt: {e}"),
        )
        .before_credentials()
    });
    enc_key.zeroize();
    let mut user_data = user_data?;
    let body = json!({"userId": user_id, "userData": user_data, "source": "WEB"});
    user_data.zeroize();
    let validated = first_result(step, &post(host, step, &urls.password, &body, None)?)?;
    let mut token = str_field(&validated, "token")
        .ok_or_else(|| protocol(step, "no token"))?
        .to_owned();
    host.log(Level::Debug, "iifl: password accepted by the portal");

    let step = Step::Totp;
    let mut auth = auth_form.header(user_id, &token);
    token.zeroize();
    let answer = totp_verify(host, urls, user_id, app_key, &auth);
    auth.zeroize();
    let result = first_result(step, &answer?)?;
    auth_code_of(step, &urls.portal, &result)
}

/// Steps 1 and 2, which send no credential: the client exists, and its `encKey`.
fn before_password(
    host: &Host<'_>,
    urls: &PortalUrls,
    user_id: &str,
) -> Result<String, ErrorOutput> {
    let step = Step::ClientVerify;
    let verified = first_result(
        step,
        &post(
            host,
            step,
            &urls.client_verify,
            &json!({"userId": user_id}),
            None,
        )?,
    )?;
    match client_exists(&verified) {
        Some(true) => {}
        Some(false) => {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!("iifl: {}: IIFL does not know client {user_id}", step.name()),
            ));
        }
        None => return Err(protocol(step, "no isExist")),
    }
    let step = Step::EncKey;
    let keyed = first_result(
        step,
        &post(host, step, &urls.enckey, &json!({"userId": user_id}), None)?,
    )?;
    str_field(&keyed, "encKey")
        .map(str::to_owned)
        .ok_or_else(|| protocol(step, "no encKey"))
}

/// Step 4: a fresh code per try; a refused code gets one more try, a retryable answer is retried
/// within the deadline (EC003 is not retryable here: see `errors::classify`).
fn totp_verify(
    host: &Host<'_>,
    urls: &PortalUrls,
    user_id: &str,
    app_key: &str,
    auth: &str,
) -> Result<serde_json::Value, ErrorOutput> {
    let step = Step::Totp;
    let mut refused_once = false;
    let mut retry = StepRetry::default();
    loop {
        let code = host.totp().map_err(|e| match e.error.kind.as_str() {
            "no_totp_secret" => ErrorOutput::new(
                ErrorClass::TwofaUnavailable,
                "iifl: the account has no totp_secret: store one, or use assisted login",
            ),
            _ => http::host_failure("iifl", "TOTP", &e),
        })?;
        let body = json!({"userId": user_id, "totp": code.code.expose(), "source": "WEB", "vendor": app_key});
        match post(host, step, &urls.totp, &body, Some(auth)) {
            Ok(body) => return Ok(body),
            Err(e) if e.class == ErrorClass::TwofaRejected && !refused_once => {
                refused_once = true;
                host.log(
                    Level::Warn,
                    "iifl: the TOTP code was refused; trying once more with the next step's code",
                );
            }
            Err(e) if retry.wait(host, "iifl", step.name(), &e) => {}
            Err(mut e) => {
                if e.class == ErrorClass::TwofaRejected {
                    e.message.push_str(" (refused on two different steps)");
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_the_forms_the_vendors_portals_use_are_read() {
        let step = Step::ClientVerify;
        for body in [
            json!({"status": "Ok", "result": [{"isExist": "Yes"}]}),
            json!({"status": "Ok", "result": {"isExist": true}}),
            json!({"status": "Ok", "result": [{"isExist": "Y"}]}),
        ] {
            assert_eq!(
                client_exists(&first_result(step, &body).unwrap()),
                Some(true),
                "{body}"
            );
        }
        assert_eq!(client_exists(&json!({"isExist": "No"})), Some(false));
        assert_eq!(client_exists(&json!({"isExist": "maybe"})), None);
        assert!(first_result(step, &json!({"result": []})).is_err());

        let step = Step::Totp;
        let portal = "https://markets.example.com";
        let code = auth_code_of(
            step,
            portal,
            &json!({"redirectUrl": "/cb?authCode=A1&clientId=C1"}),
        )
        .unwrap();
        assert_eq!(
            (code.auth_code.as_str(), code.client_id.as_deref()),
            ("A1", Some("C1"))
        );
        let code =
            auth_code_of(step, portal, &json!({"authCode": "A2", "clientId": "C2"})).unwrap();
        assert_eq!(
            (code.auth_code.as_str(), code.client_id.as_deref()),
            ("A2", Some("C2"))
        );
        assert!(auth_code_of(step, portal, &json!({"other": "x"})).is_err());
    }
}
