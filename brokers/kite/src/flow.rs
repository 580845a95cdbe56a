//! The Kite steps S1–S6 of kite.md, each one HTTP exchange through the host.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, HttpRequest, HttpResponse, LoginOutput, WIRE_VERSION,
};
use broker_api::{Host, Level};
use broker_common::http::{self, StepRetry, form, query_value, str_field};
use broker_common::ist;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroize;

use crate::errors::{self, KiteError, Step, protocol};

/// Most redirect hops followed from `/connect/finish` (kite.md: "at most ~5").
pub const MAX_HOPS: usize = 5;
/// Official clients' timeout (kite.md).
const TIMEOUT_MS: u64 = 7_000;

/// The two Kite hosts of one call.
pub struct Client<'a, 'h> {
    host: &'a Host<'h>,
    /// Web login host (`web_url`).
    pub web: Url,
    /// REST API host (`api_url`).
    pub api: Url,
}

/// What S5 returns.
pub struct Session {
    /// The daily access token.
    pub access_token: String,
    /// Kite's `public_token`, kept as an extra.
    pub public_token: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` in IST.
    pub login_time: Option<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

fn base_url(urls: &BTreeMap<String, String>, name: &str) -> Result<Url, ErrorOutput> {
    let raw = urls.get(name).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("kite: base URL `{name}` is not configured"),
        )
    })?;
    Url::parse(raw).map_err(|e| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            format!("kite: base URL `{name}`: {e}"),
        )
    })
}

/// `sha256(api_key + request_token + api_secret)`, lowercase hex (kite.md S5).
pub fn checksum(api_key: &str, request_token: &str, api_secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(api_key.as_bytes());
    h.update(request_token.as_bytes());
    h.update(api_secret.as_bytes());
    hex::encode(h.finalize())
}

impl<'a, 'h> Client<'a, 'h> {
    /// A client on the effective base URLs `web_url` and `api_url`.
    pub fn new(host: &'a Host<'h>, urls: &BTreeMap<String, String>) -> Result<Self, ErrorOutput> {
        Ok(Client {
            host,
            web: base_url(urls, "web_url")?,
            api: base_url(urls, "api_url")?,
        })
    }

    fn web_url(&self, path_and_query: &str) -> String {
        http::join(self.web.as_str(), path_and_query)
    }

    fn api_url(&self, path: &str) -> String {
        http::join(self.api.as_str(), path)
    }

    fn send(&self, step: Step, req: HttpRequest) -> Result<HttpResponse, ErrorOutput> {
        let mut req = req;
        req.timeout_ms = Some(TIMEOUT_MS);
        let result = self.host.http(&req);
        req.body.zeroize();
        result.map_err(|e| http::host_failure("kite", step.name(), &e))
    }

    /// S1: `GET /connect/login?v=3&api_key=K` -> a redirect whose `Location` carries `sess_id`
    /// (and the `kf_session` cookie, kept by the host's jar).
    pub fn connect_login(&self, api_key: &str) -> Result<String, ErrorOutput> {
        let step = Step::ConnectLogin;
        let start = self.web_url(&format!(
            "/connect/login?{}",
            form(&[("v", "3"), ("api_key", api_key)])
        ));
        self.follow_until(step, &start, "sess_id")
    }

    /// `GET start`, then its redirects by hand on the web host (at most [`MAX_HOPS`]), until a
    /// hop's `Location` carries `param`, whose value is returned. That hop is never fetched: at
    /// S4 it is the app's redirect URL.
    fn follow_until(&self, step: Step, start: &str, param: &str) -> Result<String, ErrorOutput> {
        let mut url = Url::parse(start).map_err(|e| protocol(step, &format!("bad URL: {e}")))?;
        for _hop in 0..=MAX_HOPS {
            if url.origin() != self.web.origin() {
                return Err(protocol(
                    step,
                    &format!("a redirect left the web host without a {param}"),
                ));
            }
            if is_authorize(&url) {
                return Err(not_authorized());
            }
            let resp = self.send(step, HttpRequest::new("GET", url.as_str()))?;
            if http::is_redirect(&resp) {
                let next = location_from(&url, &resp)
                    .ok_or_else(|| protocol(step, "a redirect without a usable Location"))?;
                if let Some(value) = query_value(&next, param).filter(|v| !v.is_empty()) {
                    return Ok(value);
                }
                url = next;
                continue;
            }
            if let Some(e) = http::triage("kite", step.name(), &resp) {
                return Err(e);
            }
            if let Some(error) =
                http::json(&resp).and_then(|b| errors::envelope_error(&b, resp.status))
            {
                return Err(errors::classify(step, &error));
            }
            return Err(protocol(
                step,
                &format!(
                    "HTTP {} where a redirect carrying {param} was expected",
                    resp.status
                ),
            ));
        }
        Err(protocol(
            step,
            &format!("more than {MAX_HOPS} redirects without a {param}"),
        ))
    }

    /// S2: `POST /api/login` with the password, sent exactly once. Returns `(request_id,
    /// twofa_type to echo)`.
    pub fn password(&self, user_id: &str, password: &str) -> Result<(String, String), ErrorOutput> {
        let step = Step::Password;
        let body = form(&[
            ("user_id", user_id),
            ("password", password),
            ("type", "user_id"),
        ]);
        let req = web_json_request(self.web_url("/api/login"))
            .body("application/x-www-form-urlencoded", body);
        let resp = self.send(step, req)?;
        let data = errors::data(step, &resp)?;
        let request_id =
            str_field(&data, "request_id").ok_or_else(|| protocol(step, "no request_id"))?;
        let twofa_type = str_field(&data, "twofa_type");
        let twofa_types: Vec<&str> = data
            .get("twofa_types")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if twofa_type.is_none() && twofa_types.is_empty() {
            return Err(protocol(step, "no twofa_type"));
        }
        // Echo what /api/login offered; only TOTP can be produced headlessly.
        let chosen = match twofa_type {
            Some("totp") => "totp",
            _ if twofa_types.contains(&"totp") => "totp",
            other => {
                let offered = other.map(|t| vec![t]).unwrap_or_default();
                let offered: Vec<&str> = offered
                    .into_iter()
                    .chain(twofa_types.iter().copied())
                    .collect();
                return Err(ErrorOutput::new(
                    ErrorClass::TwofaUnavailable,
                    format!(
                        "kite: the account offers 2FA {:?}, not TOTP: enable external TOTP in Kite \
                         (My profile > Password & Security) and store its secret, or use assisted login",
                        offered
                    ),
                ));
            }
        };
        self.host.log(
            Level::Debug,
            &format!("kite: {} ok, 2FA type {chosen}", step.name()),
        );
        Ok((request_id.to_owned(), chosen.to_owned()))
    }

    /// S3: `POST /api/twofa` with a fresh TOTP code; one more try on a fresh step if the code is
    /// refused (never the same step twice: the host guarantees it). A retryable answer (429,
    /// 5xx, a WAF page, a timeout) is retried here on a fresh step, within the deadline.
    pub fn twofa(
        &self,
        user_id: &str,
        request_id: &str,
        twofa_type: &str,
    ) -> Result<(), ErrorOutput> {
        let step = Step::Twofa;
        let mut refused_once = false;
        let mut retry = StepRetry::default();
        loop {
            let code = self.host.totp().map_err(|e| totp_failure(&e))?;
            let body = form(&[
                ("user_id", user_id),
                ("request_id", request_id),
                ("twofa_value", code.code.expose()),
                ("twofa_type", twofa_type),
            ]);
            let req = web_json_request(self.web_url("/api/twofa"))
                .body("application/x-www-form-urlencoded", body);
            let result = self
                .send(step, req)
                .and_then(|resp| errors::data(step, &resp));
            match result {
                Ok(_) => {
                    self.host
                        .log(Level::Debug, &format!("kite: {} ok", step.name()));
                    return Ok(());
                }
                Err(e) if e.class == ErrorClass::TwofaRejected && !refused_once => {
                    refused_once = true;
                    self.host.log(
                        Level::Warn,
                        "kite: the TOTP code was refused; trying once more with the next step's code",
                    );
                }
                Err(e) if retry.wait(self.host, "kite", step.name(), &e) => {}
                Err(mut e) => {
                    if e.class == ErrorClass::TwofaRejected {
                        e.message.push_str(" (refused on two different steps: check the TOTP secret and the host clock)");
                    }
                    return Err(e);
                }
            }
        }
    }

    /// S4: `GET /connect/finish`, then its redirects by hand, stopping at the first hop whose
    /// `Location` carries `request_token`.
    pub fn finish(&self, api_key: &str, sess_id: &str) -> Result<String, ErrorOutput> {
        let start = self.web_url(&format!(
            "/connect/finish?{}",
            form(&[("api_key", api_key), ("sess_id", sess_id)])
        ));
        self.follow_until(Step::Finish, &start, "request_token")
    }

    /// S5: `POST /session/token` with the checksum.
    pub fn session_token(
        &self,
        api_key: &str,
        request_token: &str,
        api_secret: &str,
    ) -> Result<Session, ErrorOutput> {
        let step = Step::SessionToken;
        let mut sum = checksum(api_key, request_token, api_secret);
        let body = form(&[
            ("api_key", api_key),
            ("request_token", request_token),
            ("checksum", &sum),
        ]);
        sum.zeroize();
        let req = HttpRequest::new("POST", self.api_url("/session/token"))
            .header("X-Kite-Version", "3")
            .body("application/x-www-form-urlencoded", body);
        let resp = self.send(step, req)?;
        let data = errors::data(step, &resp)?;
        let access_token =
            str_field(&data, "access_token").ok_or_else(|| protocol(step, "no access_token"))?;
        let text = |k: &str| str_field(&data, k).map(str::to_owned);
        Ok(Session {
            access_token: access_token.to_owned(),
            public_token: text("public_token"),
            login_time: text("login_time"),
        })
    }

    /// S6: `GET /user/profile`. `Ok(user_id)` when Kite accepts the token; `Err(Ok(error))` when it
    /// refuses it (TokenException); `Err(Err(output))` for any other failure.
    pub fn profile(
        &self,
        api_key: &str,
        access_token: &str,
    ) -> Result<String, Result<KiteError, ErrorOutput>> {
        let step = Step::Profile;
        let mut auth = format!("token {api_key}:{access_token}");
        let req = HttpRequest::new("GET", self.api_url("/user/profile"))
            .header("X-Kite-Version", "3")
            .header("Authorization", auth.as_str());
        auth.zeroize();
        let resp = self.send(step, req).map_err(Err)?;
        if let Some(e) = http::triage("kite", step.name(), &resp) {
            return Err(Err(e));
        }
        let body = http::json_object("kite", step.name(), &resp).map_err(Err)?;
        if let Some(error) = errors::envelope_error(&body, resp.status) {
            return if error.error_type == "TokenException" || resp.status == 403 {
                Err(Ok(error))
            } else {
                Err(Err(errors::classify(step, &error)))
            };
        }
        body.get("data")
            .and_then(|d| str_field(d, "user_id"))
            .map(str::to_owned)
            .ok_or_else(|| Err(protocol(step, "no user_id in the profile")))
    }

    /// S5 then S6: the session for `request_token`, checked to belong to `broker_user_id`.
    pub fn complete(
        &self,
        api_key: &str,
        api_secret: &str,
        request_token: &str,
        broker_user_id: &str,
    ) -> Result<LoginOutput, ErrorOutput> {
        let session =
            StepRetry::run_single_use(self.host, "kite", Step::SessionToken.name(), || {
                self.session_token(api_key, request_token, api_secret)
            })?;
        self.host.log(
            Level::Debug,
            &format!("kite: {} ok", Step::SessionToken.name()),
        );
        let mut retry = StepRetry::default();
        let verified = loop {
            match self.profile(api_key, &session.access_token) {
                Err(Err(e)) if retry.wait(self.host, "kite", Step::Profile.name(), &e) => {}
                other => break other,
            }
        };
        let confirmed = match verified {
            Ok(user) => user,
            Err(Ok(refused)) => {
                return Err(ErrorOutput::new(
                    ErrorClass::Protocol,
                    format!(
                        "kite: {}: the fresh token was refused: {}",
                        Step::Profile.name(),
                        refused.message
                    ),
                ));
            }
            Err(Err(e)) => return Err(e),
        };
        if !confirmed.eq_ignore_ascii_case(broker_user_id) {
            return Err(ErrorOutput::new(
                ErrorClass::InvalidCredentials,
                format!(
                    "kite: the session belongs to {confirmed}, not to the account's {broker_user_id}"
                ),
            ));
        }
        let now = self.host.now_unix_ms();
        let issued = match session.login_time.as_deref().and_then(ist::parse_ist) {
            Some(t) => t,
            None => {
                self.host.log(
                    Level::Warn,
                    "kite: login_time missing or unreadable; using the host clock",
                );
                now
            }
        };
        let mut extras = BTreeMap::new();
        if let Some(public) = &session.public_token {
            extras.insert(
                "public_token".into(),
                serde_json::Value::String(public.clone()),
            );
        }
        if let Some(t) = &session.login_time {
            extras.insert("login_time".into(), serde_json::Value::String(t.clone()));
        }
        Ok(LoginOutput {
            v: WIRE_VERSION,
            access_token: broker_api::wire::Sensitive::new(session.access_token.as_str()),
            broker_user_id: confirmed,
            issued_at_ms: issued,
            expires_at_ms: ist::next_ist_wall_time(issued, 6, 0),
            extras,
        })
    }
}

/// A POST to the web host's JSON API as Kite's own login page makes it: asking for JSON (a server
/// that picks its answer by `Accept` must not pick a page) and naming the API version.
fn web_json_request(url: String) -> HttpRequest {
    HttpRequest::new("POST", url)
        .header("Accept", "application/json, text/plain, */*")
        .header("X-Kite-Version", "3")
}

/// The `Location` of a response resolved against the request URL (it may be relative).
fn location_from(base: &Url, resp: &HttpResponse) -> Option<Url> {
    resp.header("location")
        .and_then(|l| base.join(l.trim()).ok())
}

fn is_authorize(url: &Url) -> bool {
    url.path()
        .trim_end_matches('/')
        .ends_with("/connect/authorize")
}

fn not_authorized() -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::AppNotAuthorized,
        "kite: the login landed on /connect/authorize: this user never authorized the app; \
         authorize it once in a browser (or use assisted login)",
    )
}

fn totp_failure(e: &broker_api::guest::HostCallError) -> ErrorOutput {
    match e.error.kind.as_str() {
        "no_totp_secret" => ErrorOutput::new(
            ErrorClass::TwofaUnavailable,
            "kite: the account has no totp_secret: store one, or use assisted login",
        ),
        _ => http::host_failure("kite", "TOTP", e),
    }
}
