//! The fakes' realistic mode (the default) against a cookie-jar client like the daemon's, and on
//! the wire; and the new behaviours.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fake_brokers::{
    FakeIifl, FakeKite, FakeOptions, FakeXts, IiflBehaviour, IiflTotpAuth, IiflUser, KiteBehaviour,
    KiteUser, Realism, XtsUser, ist, totp,
};
use serde_json::{Value, json};

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// A settable clock, 10 s into a TOTP step.
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn new() -> Clock {
        Clock(Arc::new(AtomicI64::new(ist::at(2026, 11, 23, 8, 0, 10))))
    }
    fn options(&self, realism: Realism) -> FakeOptions {
        let t = self.0.clone();
        FakeOptions {
            now: Arc::new(move || t.load(Ordering::SeqCst)),
            realism,
            ..FakeOptions::default()
        }
    }
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// The current code, then the next step's (a step is accepted once).
    fn code(&self) -> String {
        let step = (self.now() / 30_000) as u64;
        totp::code_at_step(&totp::secret_bytes(SECRET), step)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn query(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A raw HTTP/1.1 exchange: status, lowercase headers, the de-chunked body. Blocking I/O off the
/// runtime the fake runs on.
async fn raw(base: &str, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (base, request) = (base.to_owned(), request.to_owned());
    tokio::task::spawn_blocking(move || raw_blocking(&base, &request))
        .await
        .unwrap()
}

fn raw_blocking(base: &str, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let addr = addr.split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = request.replace("HOST", addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let mut body = all[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    (status, headers, body)
}

fn get_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn gunzip(bytes: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn kite_user(id: &str, behaviour: KiteBehaviour) -> KiteUser {
    KiteUser::new(id, "pw-1", &format!("key-{id}"), "secret-1", SECRET).with_behaviour(behaviour)
}

/// S1-S4 with a cookie jar; the request token.
async fn kite_request_token(
    kite: &FakeKite,
    c: &reqwest::Client,
    user: &KiteUser,
    clock: &Clock,
) -> String {
    let web = kite.web_url();
    let r = c
        .get(format!("{web}/connect/login?v=3&api_key={}", user.api_key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let sess_id = query(header(&r, "location"))["sess_id"].clone();
    let r = c
        .post(format!("{web}/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", &user.user_id),
            ("password", &user.password),
            ("type", "user_id"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let login: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let request_id = login["data"]["request_id"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{web}/api/twofa"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", &user.user_id),
            ("request_id", &request_id),
            ("twofa_value", &clock.code()),
            ("twofa_type", "totp"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = c
        .get(format!(
            "{web}/connect/finish?api_key={}&sess_id={sess_id}",
            user.api_key
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    query(header(&r, "location"))["request_token"].clone()
}

async fn kite_session_token(
    kite: &FakeKite,
    user: &KiteUser,
    request_token: &str,
) -> reqwest::Response {
    let checksum = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(
            format!("{}{request_token}{}", user.api_key, user.api_secret).as_bytes(),
        ))
    };
    client()
        .post(format!("{}/session/token", kite.api_url()))
        .header("x-kite-version", "3")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("api_key", &user.api_key),
            ("request_token", request_token),
            ("checksum", &checksum),
        ]))
        .send()
        .await
        .unwrap()
}

async fn kite_profile(kite: &FakeKite, user: &KiteUser, access_token: &str) -> reqwest::Response {
    client()
        .get(format!("{}/user/profile", kite.api_url()))
        .header("x-kite-version", "3")
        .header(
            "authorization",
            format!("token {}:{access_token}", user.api_key),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn kite_realistic_login_with_a_cookie_jar() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::Happy);
    kite.add_user(user.clone());
    let c = client();

    // S1 by itself, to look at the redirect.
    let r = c
        .get(format!(
            "{}/connect/login?v=3&api_key={}",
            kite.web_url(),
            user.api_key
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "server"), "nginx");
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(header(&r, "date").ends_with(" GMT"));
    assert_eq!(header(&r, "x-request-id").len(), 32);
    let cookies = set_cookies(&r);
    let kf = cookies
        .iter()
        .find(|c| c.starts_with("kf_session="))
        .unwrap();
    for attr in [
        "; Domain=127.0.0.1;",
        "; Path=/;",
        "; Expires=",
        "; Max-Age=28800;",
        "; HttpOnly;",
        "; Secure;",
        "; SameSite=None",
    ] {
        assert!(kf.contains(attr), "{kf} lacks {attr}");
    }
    assert!(cookies.iter().any(|c| c.starts_with("AWSALB=")));
    assert!(cookies.iter().any(|c| c.starts_with("AWSALBCORS=")));
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("_cfuvid=") && c.contains("Domain=.zerodha.com"))
    );
    let location = header(&r, "location").to_owned();
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        format!(
            "<a href=\"{}\">Found</a>.\n",
            location.replace('&', "&amp;")
        )
    );

    // The whole flow on a fresh jar (cookies sent back, LB cookies included).
    let rt = kite_request_token(&kite, &client(), &user, &clock).await;
    let r = kite_session_token(&kite, &user, &rt).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type"),
        "application/json; charset=utf-8"
    );
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let access = body["data"]["access_token"].as_str().unwrap().to_owned();
    let r = kite_profile(&kite, &user, &access).await;
    assert_eq!(r.status(), 200);
    assert!(kite.token_is_valid(&user.api_key, &access));
    assert_eq!(
        kite.recorder().requests_with_status("/session/token", 200),
        1
    );
}

#[tokio::test]
async fn kite_twofa_cookies_carry_attributes() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::Happy);
    kite.add_user(user.clone());
    let c = client();
    let web = kite.web_url();
    let r = c
        .get(format!("{web}/connect/login?v=3&api_key={}", user.api_key))
        .send()
        .await
        .unwrap();
    drop(r);
    let r = c
        .post(format!("{web}/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", "AB1234"),
            ("password", "pw-1"),
            ("type", "user_id"),
        ]))
        .send()
        .await
        .unwrap();
    let login: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let r = c
        .post(format!("{web}/api/twofa"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", "AB1234"),
            ("request_id", login["data"]["request_id"].as_str().unwrap()),
            ("twofa_value", &clock.code()),
            ("twofa_type", "totp"),
        ]))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&r);
    for name in ["enctoken", "public_token", "user_id"] {
        let c = cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap();
        for attr in [
            "; Domain=127.0.0.1;",
            "; Path=/;",
            "; Secure;",
            "; SameSite=None",
        ] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        assert_eq!(c.contains("HttpOnly"), name == "enctoken", "{c}");
    }
}

#[tokio::test]
async fn realistic_wire_is_chunked_and_gzipped() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::Happy);
    kite.add_user(user.clone());
    let path = format!("/connect/login?v=3&api_key={}", user.api_key);
    let (status, headers, body) = raw(
        kite.web_url(),
        &format!(
            "GET {path} HTTP/1.1\r\nHost: HOST\r\nAccept-Encoding: gzip, deflate\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(get_header(&headers, "transfer-encoding"), Some("chunked"));
    assert_eq!(get_header(&headers, "content-length"), None);
    assert_eq!(get_header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(get_header(&headers, "vary"), Some("Accept-Encoding"));
    let html = gunzip(&body);
    assert!(html.starts_with("<a href=\"http://127.0.0.1:"), "{html}");
    assert!(html.ends_with("\">Found</a>.\n"), "{html}");

    // Without Accept-Encoding: plain, still chunked.
    let (_, headers, body) = raw(
        kite.api_url(),
        "GET /user/profile HTTP/1.1\r\nHost: HOST\r\nX-Kite-Version: 3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(get_header(&headers, "transfer-encoding"), Some("chunked"));
    assert_eq!(get_header(&headers, "content-encoding"), None);
    assert_eq!(
        get_header(&headers, "content-type"),
        Some("application/json; charset=utf-8")
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error_type"], "TokenException");
}

#[tokio::test]
async fn ideal_is_tidy() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Ideal)).await;
    let user = kite_user("AB1234", KiteBehaviour::Happy);
    kite.add_user(user.clone());
    let (status, headers, body) = raw(
        kite.web_url(),
        &format!(
            "GET /connect/login?v=3&api_key={} HTTP/1.1\r\nHost: HOST\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
            user.api_key
        ),
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(get_header(&headers, "content-length"), Some("0"));
    assert!(body.is_empty());
    assert_eq!(get_header(&headers, "server"), None);
    assert_eq!(get_header(&headers, "content-encoding"), None);
    let cookies: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].ends_with("; Path=/; HttpOnly; SameSite=None"));
    // A whole login still works.
    let rt = kite_request_token(&kite, &client(), &user, &clock).await;
    let r = kite_session_token(&kite, &user, &rt).await;
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn kite_session_token_rate_limited_for_five_seconds() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::SessionTokenRateLimited);
    kite.add_user(user.clone());
    let rt = kite_request_token(&kite, &client(), &user, &clock).await;
    for _ in 0..3 {
        let r = kite_session_token(&kite, &user, &rt).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_none());
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"status":"error","message":"Too many requests","data":null,"error_type":"NetworkException"})
        );
        clock.advance(1_000);
    }
    clock.advance(2_000);
    let r = kite_session_token(&kite, &user, &rt).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        kite.recorder().requests_with_status("/session/token", 429),
        3
    );
    assert_eq!(kite.recorder().requests("/session/token"), 4);
}

#[tokio::test]
async fn kite_session_token_always_rate_limited() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::SessionTokenAlwaysRateLimited);
    kite.add_user(user.clone());
    let rt = kite_request_token(&kite, &client(), &user, &clock).await;
    for _ in 0..3 {
        assert_eq!(kite_session_token(&kite, &user, &rt).await.status(), 429);
        clock.advance(60_000);
    }
}

#[tokio::test]
async fn kite_profile_unavailable_twice() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::ProfileUnavailable);
    kite.add_user(user.clone());
    let rt = kite_request_token(&kite, &client(), &user, &clock).await;
    let r = kite_session_token(&kite, &user, &rt).await;
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let access = body["data"]["access_token"].as_str().unwrap().to_owned();
    // A wrong token is refused as usual, and does not use up a 503.
    assert_eq!(kite_profile(&kite, &user, "nope").await.status(), 403);
    for _ in 0..2 {
        let r = kite_profile(&kite, &user, &access).await;
        assert_eq!(r.status(), 503);
        assert!(header(&r, "content-type").starts_with("text/html"));
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("503 Service Temporarily Unavailable")
        );
    }
    assert_eq!(kite_profile(&kite, &user, &access).await.status(), 200);
}

#[tokio::test]
async fn kite_login_waf_403() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Realistic)).await;
    let user = kite_user("AB1234", KiteBehaviour::LoginWaf403);
    kite.add_user(user.clone());
    let c = client();
    let web = kite.web_url();
    c.get(format!("{web}/connect/login?v=3&api_key={}", user.api_key))
        .send()
        .await
        .unwrap();
    for _ in 0..6 {
        let r = c
            .post(format!("{web}/api/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("user_id", "AB1234"),
                ("password", "pw-1"),
                ("type", "user_id"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(header(&r, "content-type"), "text/html");
        assert!(r.text().await.unwrap().contains("Access Denied"));
    }
    assert_eq!(kite.recorder().passwords("AB1234").len(), 6);
    assert_eq!(kite.recorder().requests("/api/login"), 6);
    assert!(!kite.is_blocked("AB1234"));
}

// ---- IIFL ----

fn openssl_encrypt(plain: &str, passphrase: &str) -> String {
    use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    use base64::Engine;
    use md5::{Digest, Md5};
    let salt = *b"8bytesal";
    let mut key_iv = Vec::new();
    let mut prev: Vec<u8> = Vec::new();
    while key_iv.len() < 48 {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(passphrase.as_bytes());
        h.update(salt);
        prev = h.finalize().to_vec();
        key_iv.extend_from_slice(&prev);
    }
    let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key_iv[..32], &key_iv[32..48])
        .unwrap()
        .encrypt_padded_vec::<Pkcs7>(plain.as_bytes());
    let mut raw = b"Salted__".to_vec();
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(&ct);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

async fn post_json(
    c: &reqwest::Client,
    url: String,
    auth: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Steps 1-3 of the portal; the password step's token.
async fn iifl_password(iifl: &FakeIifl, c: &reqwest::Client) -> String {
    let portal = iifl.portal_url();
    let r = post_json(
        c,
        format!("{portal}/omk/auth/access/client/verify"),
        None,
        json!({"userId": "TEST101"}),
    )
    .await;
    assert_eq!(json_of(r).await["result"][0]["isExist"], "Yes");
    let r = post_json(
        c,
        format!("{portal}/omk/auth/access/client/enckey"),
        None,
        json!({"userId": "TEST101"}),
    )
    .await;
    let key = json_of(r).await["result"][0]["encKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post_json(
        c,
        format!("{portal}/omk/auth/access/v1/pwd/validate"),
        None,
        json!({"userId": "TEST101", "userData": openssl_encrypt("pw-2", &key), "source": "WEB"}),
    )
    .await;
    json_of(r).await["result"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn iifl_totp(
    iifl: &FakeIifl,
    c: &reqwest::Client,
    auth: &str,
    clock: &Clock,
) -> reqwest::Response {
    post_json(
        c,
        format!("{}/omk/auth/access/topt/verify", iifl.portal_url()),
        Some(auth),
        json!({"userId": "TEST101", "totp": clock.code(), "source": "WEB", "vendor": "app-1"}),
    )
    .await
}

async fn iifl_session(iifl: &FakeIifl, redirect: &str) -> reqwest::Response {
    let q = query(redirect);
    let checksum = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(
            format!("{}{}app-secret", q["clientId"], q["authCode"]).as_bytes(),
        ))
    };
    post_json(
        &client(),
        format!("{}/getusersession", iifl.api_url()),
        None,
        json!({"checkSum": checksum}),
    )
    .await
}

fn iifl_user(behaviour: IiflBehaviour) -> IiflUser {
    IiflUser::new("TEST101", "pw-2", "app-1", "app-secret", SECRET).with_behaviour(behaviour)
}

#[tokio::test]
async fn iifl_realistic_login() {
    let clock = Clock::new();
    let iifl = FakeIifl::start_with(clock.options(Realism::Realistic)).await;
    iifl.add_user(iifl_user(IiflBehaviour::Happy));
    let c = client();
    let r = post_json(
        &c,
        format!("{}/omk/auth/access/client/verify", iifl.portal_url()),
        None,
        json!({"userId": "TEST101"}),
    )
    .await;
    assert_eq!(header(&r, "content-type"), "text/plain;charset=UTF-8");
    let cookies = set_cookies(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("JSESSIONID=") && c.ends_with("; Path=/; Secure; HttpOnly")),
        "{cookies:?}"
    );
    assert!(cookies.iter().any(|c| c.starts_with("AWSALB=")));
    let r = post_json(
        &c,
        format!("{}/omk/auth/access/client/verify", iifl.portal_url()),
        None,
        json!({"userId": "TEST101"}),
    )
    .await;
    // The jar sent JSESSIONID back: no new one.
    assert!(!set_cookies(&r).iter().any(|c| c.starts_with("JSESSIONID=")));
    let token = iifl_password(&iifl, &c).await;

    // The wrong form: EC003, HTTP 200, an HTML content type, not a TOTP use.
    let r = iifl_totp(&iifl, &c, &format!("Bearer TEST101 {token}"), &clock).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html;charset=UTF-8");
    assert_eq!(
        json_of(r).await,
        json!({"status":"Not_Ok","code":"EC003","message":"Something went wrong. Please try again.","result":[]})
    );
    assert!(iifl.recorder().totp_uses("TEST101").is_empty());
    // A wrong token: EC044 with HTTP 200.
    let r = iifl_totp(&iifl, &c, "Bearer TEST101 WEB nope", &clock).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["code"], "EC044");

    let r = iifl_totp(&iifl, &c, &format!("Bearer TEST101 WEB {token}"), &clock).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/plain;charset=UTF-8");
    let body = json_of(r).await;
    let redirect = body["result"][0]["redirectUrl"].as_str().unwrap();
    let r = iifl_session(&iifl, redirect).await;
    assert_eq!(
        header(&r, "content-type"),
        "application/json; charset=utf-8"
    );
    let body = json_of(r).await;
    assert_eq!(body["status"], "Ok");
    assert!(iifl.token_is_valid(body["userSession"].as_str().unwrap()));
    assert_eq!(iifl.recorder().passwords("TEST101"), vec!["pw-2"]);
    assert_eq!(
        iifl.recorder()
            .requests_with_status("/omk/auth/access/topt/verify", 200),
        3
    );
}

#[tokio::test]
async fn iifl_plain_totp_auth() {
    let clock = Clock::new();
    let iifl = FakeIifl::start_with(clock.options(Realism::Realistic)).await;
    iifl.add_user(iifl_user(IiflBehaviour::Happy));
    iifl.set_totp_auth(IiflTotpAuth::Plain);
    assert_eq!(iifl.totp_auth(), IiflTotpAuth::Plain);
    let c = client();
    let token = iifl_password(&iifl, &c).await;
    let r = iifl_totp(&iifl, &c, &format!("Bearer TEST101 WEB {token}"), &clock).await;
    assert_eq!(json_of(r).await["code"], "EC003");
    let r = iifl_totp(&iifl, &c, &format!("Bearer TEST101 {token}"), &clock).await;
    assert_eq!(json_of(r).await["status"], "Ok");
}

#[tokio::test]
async fn iifl_user_session_unavailable_once() {
    let clock = Clock::new();
    let iifl = FakeIifl::start_with(clock.options(Realism::Realistic)).await;
    iifl.add_user(iifl_user(IiflBehaviour::UserSessionUnavailable));
    let c = client();
    let token = iifl_password(&iifl, &c).await;
    let r = iifl_totp(&iifl, &c, &format!("Bearer TEST101 WEB {token}"), &clock).await;
    let body = json_of(r).await;
    let redirect = body["result"][0]["redirectUrl"].as_str().unwrap();
    let r = iifl_session(&iifl, redirect).await;
    assert_eq!(r.status(), 503);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let r = iifl_session(&iifl, redirect).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["status"], "Ok");
    // Used up now.
    assert_eq!(iifl_session(&iifl, redirect).await.status(), 400);
}

#[tokio::test]
async fn iifl_portal_totp_unavailable_once() {
    let clock = Clock::new();
    let iifl = FakeIifl::start_with(clock.options(Realism::Realistic)).await;
    iifl.add_user(iifl_user(IiflBehaviour::PortalTotpUnavailable));
    let c = client();
    let token = iifl_password(&iifl, &c).await;
    let auth = format!("Bearer TEST101 WEB {token}");
    let r = iifl_totp(&iifl, &c, &auth, &clock).await;
    assert_eq!(r.status(), 500);
    assert_eq!(json_of(r).await["status"], 500);
    assert!(iifl.recorder().totp_uses("TEST101").is_empty());
    let r = iifl_totp(&iifl, &c, &auth, &clock).await;
    assert_eq!(json_of(r).await["status"], "Ok");
    assert_eq!(iifl.recorder().totp_uses("TEST101").len(), 1);
}

#[tokio::test]
async fn iifl_ideal_keeps_old_statuses() {
    let clock = Clock::new();
    let iifl = FakeIifl::start_with(clock.options(Realism::Ideal)).await;
    iifl.add_user(iifl_user(IiflBehaviour::Happy));
    let c = client();
    let r = post_json(
        &c,
        format!("{}/omk/auth/access/client/verify", iifl.portal_url()),
        None,
        json!({"userId": "TEST101"}),
    )
    .await;
    assert_eq!(header(&r, "content-type"), "application/json");
    assert!(set_cookies(&r).is_empty());
    let token = iifl_password(&iifl, &client()).await;
    let _ = token;
    let r = iifl_totp(&iifl, &c, "Bearer TEST101 WEB nope", &clock).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "content-type"), "application/json");
}

// ---- XTS ----

#[tokio::test]
async fn xts_realistic() {
    let clock = Clock::new();
    let xts = FakeXts::start_with(clock.options(Realism::Realistic)).await;
    xts.add_user(XtsUser::new("XTS001", "app-x", "secret-x"));
    let c = client();
    let r = post_json(
        &c,
        format!("{}/interactive/user/session", xts.api_url()),
        None,
        json!({"appKey": "app-x", "secretKey": "secret-x", "source": "WebAPI"}),
    )
    .await;
    assert_eq!(
        header(&r, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(header(&r, "server"), "nginx");
    assert!(set_cookies(&r).iter().any(|c| c.starts_with("AWSALBCORS=")));
    let token = json_of(r).await["result"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .get(format!("{}/interactive/user/profile", xts.api_url()))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["result"]["ClientId"], "XTS001");

    let (_, headers, body) = raw(
        xts.api_url(),
        "GET /nowhere HTTP/1.1\r\nHost: HOST\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(get_header(&headers, "server"), Some("nginx"));
    assert_eq!(
        get_header(&headers, "content-encoding"),
        None,
        "empty 404: nothing to compress"
    );
    assert!(body.is_empty());
}

/// S1 and S2 of a Kite login in a cookie jar of its own: the jar, `sess_id` and `request_id`.
async fn kite_password_step(kite: &FakeKite, user: &KiteUser) -> (reqwest::Client, String, String) {
    let (c, web) = (client(), kite.web_url());
    let r = c
        .get(format!("{web}/connect/login?v=3&api_key={}", user.api_key))
        .send()
        .await
        .unwrap();
    let sess_id = query(header(&r, "location"))["sess_id"].clone();
    let r = c
        .post(format!("{web}/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", &user.user_id),
            ("password", &user.password),
            ("type", "user_id"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let login: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let request_id = login["data"]["request_id"].as_str().unwrap().to_owned();
    (c, sess_id, request_id)
}

/// S3, S4 and S5 of a login begun by [`kite_password_step`]; the access token.
async fn kite_finish_login(
    kite: &FakeKite,
    user: &KiteUser,
    (c, sess_id, request_id): &(reqwest::Client, String, String),
    code: &str,
) -> String {
    let web = kite.web_url();
    let r = c
        .post(format!("{web}/api/twofa"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("user_id", &user.user_id),
            ("request_id", request_id),
            ("twofa_value", code),
            ("twofa_type", "totp"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = c
        .get(format!(
            "{web}/connect/finish?api_key={}&sess_id={sess_id}",
            user.api_key
        ))
        .send()
        .await
        .unwrap();
    let request_token = query(header(&r, "location"))["request_token"].clone();
    let r = kite_session_token(kite, user, &request_token).await;
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    body["data"]["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn kite_counts_the_logins_of_one_account_in_flight_at_once() {
    let clock = Clock::new();
    let kite = FakeKite::start_with(clock.options(Realism::Ideal)).await;
    let (a, b) = (
        kite_user("AC0001", KiteBehaviour::Happy),
        kite_user("AC0002", KiteBehaviour::Happy),
    );
    kite.add_user(a.clone());
    kite.add_user(b.clone());
    let recorder = kite.recorder();
    assert_eq!(recorder.max_concurrent_logins_per_account(), 0);

    // One after the other, and two accounts at once: one login per account at a time.
    for _ in 0..2 {
        let (first, second) = (
            kite_password_step(&kite, &a).await,
            kite_password_step(&kite, &b).await,
        );
        let code = clock.code();
        let token = kite_finish_login(&kite, &a, &first, &code).await;
        assert!(kite.token_is_valid(&a.api_key, &token));
        kite_finish_login(&kite, &b, &second, &code).await;
        clock.advance(30_000);
    }
    assert_eq!(recorder.password_posts("AC0001"), 2);
    assert_eq!(recorder.max_concurrent_logins_per_account(), 1);

    // A login abandoned after its password (its client killed) is not in flight beside the next.
    let _abandoned = kite_password_step(&kite, &a).await;
    let next = kite_password_step(&kite, &a).await;
    kite_finish_login(&kite, &a, &next, &clock.code()).await;
    clock.advance(30_000);
    assert_eq!(recorder.max_concurrent_logins_per_account(), 1);

    // Two logins of one account interleaved: both in flight at once.
    let (first, second) = (
        kite_password_step(&kite, &b).await,
        kite_password_step(&kite, &b).await,
    );
    kite_finish_login(&kite, &b, &first, &clock.code()).await;
    clock.advance(30_000);
    kite_finish_login(&kite, &b, &second, &clock.code()).await;
    assert_eq!(recorder.max_concurrent_logins_per_account(), 2);
    assert_eq!(
        recorder.concurrent_logins_per_account(),
        [("AC0001".to_owned(), 1), ("AC0002".to_owned(), 2)].into(),
    );
    recorder.reset();
    assert_eq!(recorder.max_concurrent_logins_per_account(), 0);
}
