//! Shared by the `api` tests: an API over a temporary vault on a manual clock, requests through
//! `tower::ServiceExt::oneshot` (with the peer address `serve` would insert), JWTs, fixtures.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenbot::AppState;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::Config;
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken, SecretJson,
    Vault, VaultOptions,
};
use tower::ServiceExt;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghij";
pub const BACKEND_KEY: &str = "backend-key-0123456789abcdef";
pub const ENV_KEY: &str = "env-key-fedcba9876543210";
pub const BODY_LIMIT: usize = 4096;
/// 2025-03-10 08:00:05 IST.
pub const MORNING: i64 = 1_741_573_805_000;
pub const HOUR: i64 = 3_600_000;

/// An API over a fresh vault.
pub struct TestApi {
    pub app: Router,
    pub state: Arc<AppState>,
    pub clock: Arc<ManualClock>,
    pub peer: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The configuration of a test API: JWT secret, a named key and the env key, a small body limit,
/// an https public URL, an empty plugins directory.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.auth.jwt_secret = Some(JWT_SECRET.into());
    config.auth.api_key = Some(ENV_KEY.into());
    config.auth.api_keys.insert(
        "backend".into(),
        hex::encode(Sha256::digest(BACKEND_KEY.as_bytes())),
    );
    config.server.body_limit_bytes = BODY_LIMIT;
    config.server.public_url = Some("https://tokenbot.example.com".parse().unwrap());
    config.plugins.dir = dir.join("plugins");
    config.vault.path = dir.join("vault.redb");
    config
}

impl TestApi {
    pub fn new() -> TestApi {
        TestApi::with(|_| {})
    }

    /// With the test configuration changed by `change`.
    pub fn with(change: impl FnOnce(&mut Config)) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        change(&mut config);
        let clock = Arc::new(ManualClock::new(MORNING));
        let vault = Vault::create(
            &config.vault.path,
            Engine::Redb,
            &KeyMaterial::Key(MasterKey::from_bytes([7; 32])),
            VaultOptions {
                clock: clock.clone(),
                ..VaultOptions::default()
            },
        )
        .unwrap();
        let services = Arc::new(PluginEnv::new(clock.clone(), CallLimits::default()));
        let plugins = Arc::new(Registry::load(&config.plugins));
        let state = Arc::new(AppState::from_parts(
            Arc::new(config),
            Arc::new(vault),
            plugins,
            services,
        ));
        TestApi {
            app: tokenbot::api::app(state.clone()),
            state,
            clock,
            peer: "192.0.2.10:50000".parse().unwrap(),
            _dir: dir,
        }
    }

    pub fn vault(&self) -> &Vault {
        &self.state.vault
    }

    /// Send `req` from this API's peer address.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        self.send_from(self.peer, req).await
    }

    pub async fn send_from(&self, peer: SocketAddr, mut req: Request<Body>) -> Reply {
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// The status of `req` from `peer`, without reading the body (a stream's never ends).
    pub async fn status_from(&self, peer: SocketAddr, mut req: Request<Body>) -> StatusCode {
        req.extensions_mut().insert(ConnectInfo(peer));
        self.app.clone().oneshot(req).await.unwrap().status()
    }

    /// Store an account with a token valid for `valid_ms` from now (no token when `None`).
    pub fn seed(&self, user: &str, broker: &str, valid_ms: Option<i64>) -> AccountKey {
        let key = AccountKey::parse(user, broker).unwrap();
        self.vault()
            .put_account(&NewAccount {
                key: key.clone(),
                broker_user_id: format!("BU-{user}"),
                credentials: Credentials {
                    password: Some("pw-secret-1".into()),
                    api_key: Some("apikey-1".into()),
                    api_secret: Some("apisecret-1".into()),
                    totp_secret: Some("JBSWY3DPEHPK3PXPJBSWY3DP".into()),
                    extra: Default::default(),
                },
                auto_refresh: true,
                managed_externally: false,
            })
            .unwrap();
        if let Some(valid) = valid_ms {
            let now = self.clock.now_ms();
            self.vault()
                .put_token(
                    &key,
                    &NewToken {
                        access_token: format!("tok-{user}-{broker}").into(),
                        issued_at_ms: now - HOUR,
                        expires_at_ms: now + valid,
                        extras: SecretJson::empty(),
                        served_extras: Default::default(),
                    },
                )
                .unwrap();
        }
        key
    }
}

/// A response, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// The error code of an error body (asserting the shape).
    pub fn code(&self) -> &str {
        let error = &self.json["error"];
        assert!(
            error["message"].is_string(),
            "not the error shape ({}): {}",
            self.status,
            self.text
        );
        error["code"].as_str().expect("error.code")
    }

    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }

    /// Assert an error with this status and code.
    pub fn expect_error(&self, status: u16, code: &str) -> &Reply {
        self.expect(status);
        assert_eq!(self.code(), code, "body: {}", self.text);
        self
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum As {
    Nobody,
    Key(&'static str),
    BearerKey(&'static str),
    Jwt(String),
}

pub fn request(method: Method, path: &str, who: &As, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    builder = match who {
        As::Nobody => builder,
        As::Key(k) => builder.header("x-api-key", *k),
        As::BearerKey(k) => builder.header("authorization", format!("Bearer {k}")),
        As::Jwt(t) => builder.header("authorization", format!("Bearer {t}")),
    };
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// A raw-body request.
pub fn raw(method: Method, path: &str, who: &As, content_type: &str, body: &str) -> Request<Body> {
    let mut req = request(method, path, who, None);
    req.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    *req.body_mut() = Body::from(body.to_owned());
    req
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HS256 JWT with `claims`, signed with `secret`.
pub fn jwt_with(claims: Value, secret: &str) -> String {
    tokenbot::api::auth::install_jwt_crypto();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid user JWT (`sub`, an hour to live).
pub fn jwt(user: &str) -> As {
    As::Jwt(jwt_with(
        json!({"sub": user, "exp": now_secs() + 3600}),
        JWT_SECRET,
    ))
}

/// An unsigned `alg: none` token.
pub fn jwt_none(user: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": user, "exp": now_secs() + 3600}).to_string())
    )
}

pub const KEY: As = As::Key(BACKEND_KEY);

/// A complete set of Kite fields.
pub fn kite_fields(user: &str) -> Value {
    json!({
        "broker_user_id": format!("AB{user}"),
        "password": "pass-word-1!",
        "api_key": "kiteapikey0001",
        "api_secret": "kite-api-secret-0001",
        "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    })
}

/// An API serving the fake Kite (configured as `change` leaves it), with account `u1` at `kite`
/// (`kite_fields("1")`, broker user `AB1`) provisioned. The fake reads the API's clock,
/// `ahead_ms` on: a broker whose clock is off by that much.
pub async fn api_with_kite(
    ahead_ms: i64,
    change: impl FnOnce(&mut Config),
) -> (TestApi, fake_brokers::FakeKite) {
    // The API's clock exists only once the API does, after the fake's URLs are configured.
    let api_clock: Arc<std::sync::OnceLock<Arc<ManualClock>>> = Arc::default();
    let read = api_clock.clone();
    let fake = fake_brokers::FakeKite::start_with(fake_brokers::FakeOptions {
        now: Arc::new(move || read.get().map_or(MORNING, |c| c.now_ms()) + ahead_ms),
        latency: std::time::Duration::ZERO,
        ..fake_brokers::FakeOptions::default()
    })
    .await;
    let fields = kite_fields("1");
    let field = |name: &str| fields[name].as_str().unwrap().to_owned();
    fake.add_user(fake_brokers::KiteUser::new(
        "AB1",
        &field("password"),
        &field("api_key"),
        &field("api_secret"),
        &field("totp_secret"),
    ));
    let urls = fake.base_urls();
    let api = TestApi::with(|c| {
        c.brokers.insert(
            "kite".into(),
            tokenbot::config::BrokerConfig {
                urls,
                ..tokenbot::config::BrokerConfig::default()
            },
        );
        change(c);
    });
    assert!(api_clock.set(api.clock.clone()).is_ok());
    api.send(request(
        Method::PUT,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(fields),
    ))
    .await
    .expect(201);
    (api, fake)
}

/// The password the fake Kite of [`api_with_two_kite_accounts`] expects for `AB2`, which `u2`'s
/// stored one is not. No page may show it either.
pub const KITE_REAL_PASSWORD_2: &str = "the-real-password-2";

/// An API (configured as `change` leaves it) whose Kite section points at a fake Kite with `AB1`
/// (the fields of `kite_fields("1")`) and `AB2` (whose password is [`KITE_REAL_PASSWORD_2`], not
/// the one provisioned), and accounts `u1` and `u2` for them: one that logs in, one that is told
/// "wrong password".
pub async fn api_with_two_kite_accounts(
    change: impl FnOnce(&mut Config),
) -> (TestApi, fake_brokers::FakeKite) {
    let (api, fake) = api_with_kite(0, |c| {
        // Two logins in a row: no wait for the broker's request rate.
        if let Some(kite) = c.brokers.get_mut("kite") {
            kite.rate_limit_per_sec = Some(1_000.0);
        }
        change(c);
    })
    .await;
    let fields = kite_fields("2");
    let field = |name: &str| fields[name].as_str().unwrap().to_owned();
    fake.add_user(fake_brokers::KiteUser::new(
        "AB2",
        KITE_REAL_PASSWORD_2,
        &field("api_key"),
        &field("api_secret"),
        &field("totp_secret"),
    ));
    api.send(request(
        Method::PUT,
        "/api/users/u2/accounts/kite",
        &KEY,
        Some(fields),
    ))
    .await
    .expect(201);
    (api, fake)
}

/// What no page or response may hold, read from `t`'s vault as it is now (so a token stored a
/// moment ago is among them): every stored credential field of every account (password, API key
/// and secret, TOTP secret, and the extra fields such as a PIN), every token with the fields of
/// its extras named `*token*` (Kite's `public_token`; not `login_time`, which pages rightly show
/// as a time), the API keys that sign in, and [`KITE_REAL_PASSWORD_2`].
pub fn secrets_of(t: &TestApi) -> Vec<String> {
    let mut secrets: Vec<String> = vec![
        BACKEND_KEY.into(),
        ENV_KEY.into(),
        KITE_REAL_PASSWORD_2.into(),
    ];
    for account in t.vault().list_accounts().unwrap() {
        let key = account.key();
        let c = t.vault().credentials(&key).unwrap().expect("credentials");
        let fields = [&c.password, &c.api_key, &c.api_secret, &c.totp_secret];
        for field in fields.into_iter().flatten().chain(c.extra.values()) {
            secrets.push(field.expose_secret().to_owned());
        }
        if let Some(token) = t.vault().get_token(&key).unwrap() {
            secrets.push(token.access_token.expose_secret().to_owned());
            let extras: Value = serde_json::from_str(token.extras.expose_text()).unwrap();
            for (name, value) in extras.as_object().into_iter().flatten() {
                if let (true, Some(value)) = (name.contains("token"), value.as_str()) {
                    secrets.push(value.to_owned());
                }
            }
        }
    }
    secrets
}

/// Fail if `text` (what `what` names: a page, its visible text, a response body) holds one of
/// `secrets`, or the start of the test TOTP secrets' base32, which no page has a reason to show.
pub fn assert_holds_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret} in {what}:\n{text}"
        );
    }
    assert!(
        !text.contains("JBSWY3DP"),
        "a TOTP secret in {what}:\n{text}"
    );
}

/// A console session: its cookie (`name=value`) and CSRF token.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub cookie: String,
    pub csrf: String,
}

/// A console request: `body` as a form (`None`: a `GET`-style request without one), with the
/// session's cookie when given.
pub fn console_request(
    method: Method,
    path: &str,
    session: Option<&ConsoleSession>,
    form: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(s) = session {
        builder = builder.header("cookie", &s.cookie);
    }
    match form {
        Some(form) => builder
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// The first `name="csrf" value="..."` of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 64].to_owned()
}

impl TestApi {
    /// Sign in to the console with `key`; the session's cookie and CSRF token.
    pub async fn console_sign_in(&self, key: &str) -> ConsoleSession {
        let form = format!("key={}", key);
        let r = self
            .send(console_request(
                Method::POST,
                "/console/sign-in",
                None,
                Some(&form),
            ))
            .await;
        assert_eq!(r.status.as_u16(), 303, "{}", r.text);
        let set = r.headers["set-cookie"].to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        let session = ConsoleSession {
            cookie,
            csrf: String::new(),
        };
        let page = self
            .send(console_request(
                Method::GET,
                "/console",
                Some(&session),
                None,
            ))
            .await;
        assert_eq!(page.status.as_u16(), 200, "{}", page.text);
        ConsoleSession {
            csrf: csrf_of(&page.text),
            ..session
        }
    }
}
