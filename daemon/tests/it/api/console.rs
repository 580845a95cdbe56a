//! The operator console through `api::app(state)` with `oneshot`: sign-in and its cookie, the
//! session's expiry on the API's clock, sign-out, CSRF on every form, "Log in now" against the
//! fake Kite, a wrong-password account under "needs attention" with its remedy, and no page or
//! response body holding a credential or a token of the test accounts.

use axum::http::Method;
use secrecy::ExposeSecret;
use tokenbot::clock::Clock;
use tokenbot::vault::AccountKey;

use super::support::*;

const MINUTE: u64 = 60_000;

pub(super) fn get(
    path: &str,
    session: Option<&ConsoleSession>,
) -> axum::http::Request<axum::body::Body> {
    console_request(Method::GET, path, session, None)
}

pub(super) fn post(
    path: &str,
    session: Option<&ConsoleSession>,
    form: &str,
) -> axum::http::Request<axum::body::Body> {
    console_request(Method::POST, path, session, Some(form))
}

fn is_html(r: &Reply) -> bool {
    r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html")
}

fn is_sign_in_page(r: &Reply) -> bool {
    r.text.contains("action=\"/console/sign-in\"") && !r.text.contains("/console/sign-out")
}

#[tokio::test]
async fn without_a_session_the_console_answers_the_sign_in_form() {
    let t = TestApi::new();
    let r = t.send(get("/console", None)).await;
    r.expect(200);
    assert!(is_html(&r));
    assert!(is_sign_in_page(&r), "{}", r.text);
    assert!(r.text.contains("<form") && r.text.contains("name=\"key\""));
    assert!(!r.headers.contains_key("set-cookie"));
    let h = &r.headers;
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // Its stylesheet is in the binary.
    let css = t.send(get("/console/console.css", None)).await;
    css.expect(200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.text.contains("body"));
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_counts_in_the_failed_authentication_limit() {
    let t = TestApi::new();
    let r = t
        .send(post("/console/sign-in", None, "key=not-a-key"))
        .await;
    r.expect(401);
    assert!(is_html(&r) && is_sign_in_page(&r));
    assert!(r.text.contains("not a valid API key"));
    assert!(!r.headers.contains_key("set-cookie"));
    // A JWT is no console key either.
    let As::Jwt(jwt) = jwt("u1") else { panic!() };
    let r = t
        .send(post("/console/sign-in", None, &format!("key={jwt}")))
        .await;
    r.expect(401);
    for _ in 2..tokenbot::api::auth::MAX_FAILURES {
        t.send(post("/console/sign-in", None, "key=wrong"))
            .await
            .expect(401);
    }
    // The limit is the API's: the next failure from this address, on any route, is 429.
    let r = t
        .send(request(Method::GET, "/api/users", &As::Key("wrong"), None))
        .await;
    r.expect_error(429, "too_many_failed_authentications");
    let r = t.send(post("/console/sign-in", None, "key=wrong")).await;
    r.expect(429);
    assert!(r.headers.contains_key("retry-after"));
    assert!(is_html(&r));
    // A good key is still served.
    t.console_sign_in(BACKEND_KEY).await;
}

#[tokio::test]
async fn a_good_key_gets_a_session_cookie_with_exactly_the_specified_attributes() {
    let t = TestApi::new();
    let r = t
        .send(post("/console/sign-in", None, &format!("key={ENV_KEY}")))
        .await;
    r.expect(303);
    assert_eq!(r.headers["location"], "/console");
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (id, attributes) = cookies[0]
        .strip_prefix("tokenbot_console=")
        .unwrap()
        .split_once(';')
        .unwrap();
    assert_eq!(id.len(), 64, "256 bits in hex: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        attributes,
        " HttpOnly; SameSite=Strict; Path=/console; Secure"
    );
    // A sign-in form posted from another site is refused, even with a good key.
    let mut cross = post("/console/sign-in", None, &format!("key={ENV_KEY}"));
    cross
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    let r = t.send(cross).await;
    r.expect(403);
    assert!(!r.headers.contains_key("set-cookie"));
    let mut same = post("/console/sign-in", None, &format!("key={ENV_KEY}"));
    same.headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    t.send(same).await.expect(303);
    // Another sign-in, another id.
    let other = t.console_sign_in(BACKEND_KEY).await;
    assert_ne!(other.cookie, format!("tokenbot_console={id}"));

    // Without an https public URL, no `Secure`.
    let t = TestApi::with(|c| c.server.public_url = Some("http://127.0.0.1:3000".parse().unwrap()));
    let r = t
        .send(post(
            "/console/sign-in",
            None,
            &format!("key={BACKEND_KEY}"),
        ))
        .await;
    r.expect(303);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/console"),
        "{cookie}"
    );
}

#[tokio::test]
async fn pages_and_forms_need_the_session_not_an_api_key() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let forged = ConsoleSession {
        cookie: format!("tokenbot_console={}", "ab".repeat(32)),
        csrf: "00".repeat(32),
    };
    for path in [
        "/console/accounts",
        "/console/accounts/u1/kite",
        "/console/accounts/u1/kite/remove",
    ] {
        for session in [None, Some(&forged)] {
            let r = t.send(get(path, session)).await;
            r.expect(303);
            assert_eq!(r.headers["location"], "/console", "{path}");
        }
        let mut with_key = get(path, None);
        with_key
            .headers_mut()
            .insert("x-api-key", BACKEND_KEY.parse().unwrap());
        t.send(with_key).await.expect(303);
    }
    let r = t.send(get("/console", Some(&forged))).await;
    r.expect(200);
    assert!(is_sign_in_page(&r));
    for (path, form) in [
        ("/console/sign-out", String::new()),
        ("/console/accounts/u1/kite/login", String::new()),
        ("/console/accounts/u1/kite/assisted", String::new()),
        ("/console/accounts/u1/kite/flags", "action=pause".into()),
        ("/console/accounts/u1/kite/remove", "confirm=yes".into()),
    ] {
        let form = format!("{form}&csrf={}", forged.csrf);
        for session in [None, Some(&forged)] {
            let r = t.send(post(path, session, &form)).await;
            r.expect(403);
            assert!(is_html(&r), "{path}");
        }
    }
    let key = AccountKey::parse("u1", "kite").unwrap();
    let account = t.vault().get_account(&key).unwrap().unwrap();
    assert!(account.auto_refresh);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_403_and_changes_nothing() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let key = AccountKey::parse("u1", "kite").unwrap();
    let s = t.console_sign_in(BACKEND_KEY).await;
    let other = t.console_sign_in(ENV_KEY).await;
    assert_ne!(s.csrf, other.csrf);
    let wrong = "0".repeat(64);
    for (path, form) in [
        ("/console/accounts/u1/kite/flags", "action=pause"),
        ("/console/accounts/u1/kite/remove", "confirm=yes"),
        ("/console/accounts/u1/kite/login", ""),
        ("/console/accounts/u1/kite/assisted", ""),
        ("/console/sign-out", ""),
    ] {
        for csrf in [
            None,
            Some(""),
            Some(wrong.as_str()),
            Some("nothex"),
            Some(other.csrf.as_str()),
        ] {
            let form = match csrf {
                None => form.to_owned(),
                Some(c) => format!("{form}&csrf={c}"),
            };
            let r = t.send(post(path, Some(&s), &form)).await;
            r.expect(403);
            assert!(r.text.contains("CSRF"), "{path}: {}", r.text);
        }
    }
    let account = t.vault().get_account(&key).unwrap().unwrap();
    assert!(account.auto_refresh, "nothing changed");
    assert!(t.vault().get_token(&key).unwrap().is_some());
    assert!(
        t.vault().attempts(&key, 10).unwrap().is_empty(),
        "no login was tried"
    );
    t.send(get("/console", Some(&s))).await.expect(200);

    // With it: pause, resume; remove asks first, then removes.
    let flags = "/console/accounts/u1/kite/flags";
    let r = t
        .send(post(
            flags,
            Some(&s),
            &format!("action=pause&csrf={}", s.csrf),
        ))
        .await;
    r.expect(303);
    assert_eq!(r.headers["location"], "/console/accounts/u1/kite");
    assert!(!t.vault().get_account(&key).unwrap().unwrap().auto_refresh);
    let page = t.send(get("/console/accounts/u1/kite", Some(&s))).await;
    assert!(
        page.text.contains("Scheduled logins paused."),
        "{}",
        page.text
    );
    assert!(page.text.contains("paused"));
    t.send(post(
        flags,
        Some(&s),
        &format!("action=resume&csrf={}", s.csrf),
    ))
    .await
    .expect(303);
    assert!(t.vault().get_account(&key).unwrap().unwrap().auto_refresh);
    let remove = "/console/accounts/u1/kite/remove";
    let confirm = t.send(get(remove, Some(&s))).await;
    confirm.expect(200);
    assert!(confirm.text.contains("name=\"confirm\" value=\"yes\""));
    let r = t
        .send(post(remove, Some(&s), &format!("csrf={}", s.csrf)))
        .await;
    r.expect(200);
    assert!(r.text.contains("Yes, remove it"));
    assert!(
        t.vault().get_account(&key).unwrap().is_some(),
        "asked, not removed"
    );
    let r = t
        .send(post(
            remove,
            Some(&s),
            &format!("confirm=yes&csrf={}", s.csrf),
        ))
        .await;
    r.expect(303);
    assert!(t.vault().get_account(&key).unwrap().is_none());
}

#[tokio::test]
async fn a_session_ends_after_its_idle_time_and_after_its_maximum_age_on_the_api_clock() {
    let t = TestApi::new();
    let s = t.console_sign_in(BACKEND_KEY).await;
    let signed_in = |r: &Reply| r.status.as_u16() == 200 && !is_sign_in_page(r);
    t.clock.advance(29 * MINUTE);
    assert!(signed_in(&t.send(get("/console", Some(&s))).await));
    t.clock.advance(30 * MINUTE + 1_000);
    let r = t.send(get("/console", Some(&s))).await;
    assert!(is_sign_in_page(&r), "idle 30 min: signed out");
    t.send(get("/console/accounts", Some(&s))).await.expect(303);

    // Used every 29 minutes, a session still ends 12 h after sign-in.
    let s = t.console_sign_in(BACKEND_KEY).await;
    for _ in 0..24 {
        t.clock.advance(29 * MINUTE);
        assert!(signed_in(&t.send(get("/console/accounts", Some(&s))).await));
    }
    t.clock.advance(29 * MINUTE);
    let r = t.send(get("/console", Some(&s))).await;
    assert!(is_sign_in_page(&r), "12 h after sign-in: signed out");
}

#[tokio::test]
async fn the_session_config_is_honoured() {
    let t = TestApi::with(|c| {
        c.console.session_idle_secs = 60;
        c.console.session_max_secs = 120;
    });
    let s = t.console_sign_in(BACKEND_KEY).await;
    t.clock.advance(61_000);
    assert!(is_sign_in_page(&t.send(get("/console", Some(&s))).await));
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let t = TestApi::new();
    let s = t.console_sign_in(BACKEND_KEY).await;
    let r = t
        .send(post(
            "/console/sign-out",
            Some(&s),
            &format!("csrf={}", s.csrf),
        ))
        .await;
    r.expect(303);
    assert_eq!(r.headers["location"], "/console");
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("tokenbot_console=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    let r = t.send(get("/console", Some(&s))).await;
    assert!(is_sign_in_page(&r));
    t.send(post(
        "/console/sign-out",
        Some(&s),
        &format!("csrf={}", s.csrf),
    ))
    .await
    .expect(403);
}

pub(super) async fn log_in_now(t: &TestApi, s: &ConsoleSession, user: &str) -> Reply {
    let r = t
        .send(post(
            &format!("/console/accounts/{user}/kite/login"),
            Some(s),
            &format!("csrf={}", s.csrf),
        ))
        .await;
    r.expect(303);
    assert_eq!(
        r.headers["location"],
        format!("/console/accounts/{user}/kite")
    );
    t.send(get(&format!("/console/accounts/{user}/kite"), Some(s)))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_now_logs_a_kite_account_in_against_the_fake() {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    let key = AccountKey::parse("u1", "kite").unwrap();
    assert!(t.vault().get_token(&key).unwrap().is_none());
    let page = log_in_now(&t, &s, "u1").await;
    page.expect(200);
    assert!(
        page.text.contains("Logged in: a new token is stored."),
        "{}",
        page.text
    );
    let token = t.vault().get_token(&key).unwrap().expect("a token");
    assert!(token.expires_at_ms > t.clock.now_ms());
    assert!(!page.text.contains(token.access_token.expose_secret()));
    assert!(page.text.contains("IST"));
    // The attempt is listed, and the flash shows once.
    assert!(page.text.contains("success"));
    let again = t.send(get("/console/accounts/u1/kite", Some(&s))).await;
    assert!(!again.text.contains("Logged in: a new token is stored."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_account_shows_first_under_needs_attention_with_its_remedy() {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    let page = log_in_now(&t, &s, "u2").await;
    assert!(page.text.contains("The login failed"), "{}", page.text);
    assert!(
        page.text.contains("Needs attention: wrong password"),
        "{}",
        page.text
    );
    assert!(page.text.contains("update it"));
    // The lockout rules: after "wrong password" only new credentials resume logins, so the
    // console offers no "Clear attention", and refuses one posted anyway.
    assert!(!page.text.contains("Clear attention"), "{}", page.text);
    let form = format!("csrf={}&action=clear_attention", s.csrf);
    let refused = t
        .send(console_request(
            Method::POST,
            "/console/accounts/u2/kite/flags",
            Some(&s),
            Some(&form),
        ))
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        refused.text.contains("same password again"),
        "{}",
        refused.text
    );
    let key = AccountKey::parse("u2", "kite").unwrap();
    assert!(
        t.vault()
            .get_account(&key)
            .unwrap()
            .unwrap()
            .attention
            .is_some()
    );

    let list = t.send(get("/console/accounts", Some(&s))).await;
    list.expect(200);
    let (u1, u2) = (
        list.text.find(">u1</a>").expect("u1 listed"),
        list.text.find(">u2</a>").expect("u2 listed"),
    );
    assert!(u2 < u1, "needing attention first");
    assert!(
        list.text
            .contains("<strong>wrong password</strong>: update it"),
        "{}",
        list.text
    );
    // Filters: by state, by broker, by user id.
    let only = t
        .send(get("/console/accounts?state=needs_attention", Some(&s)))
        .await;
    assert!(only.text.contains(">u2</a>") && !only.text.contains(">u1</a>"));
    let none = t.send(get("/console/accounts?broker=iifl", Some(&s))).await;
    assert!(!none.text.contains(">u2</a>") && !none.text.contains(">u1</a>"));
    let search = t.send(get("/console/accounts?q=U1", Some(&s))).await;
    assert!(search.text.contains(">u1</a>") && !search.text.contains(">u2</a>"));
    // The overview counts it.
    let overview = t.send(get("/console", Some(&s))).await;
    assert!(
        overview
            .text
            .contains("<span class=\"n\">1</span> need attention"),
        "{}",
        overview.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_or_response_holds_a_credential_or_a_token_of_the_test_accounts() {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    let mut bodies = Vec::new();
    bodies.push(log_in_now(&t, &s, "u1").await.text);
    bodies.push(log_in_now(&t, &s, "u2").await.text);
    for path in [
        "/console",
        "/console/console.css",
        "/console/accounts",
        "/console/accounts?state=needs_attention",
        "/console/accounts?broker=kite&q=u",
        "/console/accounts/u1/kite",
        "/console/accounts/u2/kite",
        "/console/accounts/u1/kite/remove",
        "/console/accounts/u1/kite/credentials",
        "/console/accounts/u2/kite/credentials",
        "/console/accounts/new?broker=kite",
    ] {
        let r = t.send(get(path, Some(&s))).await;
        r.expect(200);
        bodies.push(r.text);
    }
    for (path, form) in [
        ("/console/accounts/u1/kite/flags", "action=pause"),
        ("/console/accounts/u1/kite/flags", "action=resume"),
        ("/console/accounts/u2/kite/flags", "action=nonsense"),
        ("/console/accounts/u1/kite/remove", ""),
        ("/console/refresh-all", ""),
        // Refused: the page shows the form again, without the secrets it was given.
        (
            "/console/accounts/u2/kite/credentials",
            "password=the-real-password-2&totp_secret=otpauth%3A%2F%2Ftotp%2Fx%3Fsecret%3DJBSWY3DPEHPK3PXP%26digits%3D8",
        ),
        (
            "/console/accounts/new",
            "broker=kite&user_id=u9&password=the-real-password-2&api_secret=kite-api-secret-0001",
        ),
    ] {
        let r = t
            .send(post(path, Some(&s), &format!("{form}&csrf={}", s.csrf)))
            .await;
        bodies.push(r.text);
    }
    // The refresh-all the form above started: its events, then its page once it has finished.
    for path in ["/console/refresh-all/events", "/console/refresh-all"] {
        let r = t.send(get(path, Some(&s))).await;
        r.expect(200);
        bodies.push(r.text);
    }
    bodies.push(t.send(get("/console", None)).await.text);
    bodies.push(
        t.send(post("/console/sign-in", None, "key=wrong"))
            .await
            .text,
    );

    let u1 = AccountKey::parse("u1", "kite").unwrap();
    let token = t.vault().get_token(&u1).unwrap().expect("u1 logged in");
    let secrets = secrets_of(&t);
    assert!(secrets.contains(&token.access_token.expose_secret().to_owned()));
    for body in &bodies {
        assert_holds_no_secret("a page", body, &secrets);
    }
}

#[tokio::test]
async fn the_overview_shows_counts_schedules_breakers_the_mirror_and_the_plugins() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(8 * HOUR));
    t.seed("u2", "iifl", Some(HOUR / 2));
    t.seed("u3", "kite", None);
    t.vault()
        .set_flags(
            &AccountKey::parse("u3", "kite").unwrap(),
            tokenbot::vault::Flags {
                auto_refresh: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let s = t.console_sign_in(BACKEND_KEY).await;
    let r = t.send(get("/console", Some(&s))).await;
    r.expect(200);
    let count = |n: usize, label: &str| format!("<span class=\"n\">{n}</span> {label}");
    for (n, label) in [
        (2, "logged in"),
        (1, "expiring within the hour"),
        (0, "need attention"),
        (1, "paused"),
        (0, "managed externally"),
        (0, "awaiting approval"),
    ] {
        assert!(r.text.contains(&count(n, label)), "{label}: {}", r.text);
    }
    // The next runs in IST (Kite's is 07:30 IST by default, the clock is 08:00 IST: tomorrow).
    assert!(
        r.text.contains("<td>kite</td><td>2025-03-11 "),
        "{}",
        r.text
    );
    assert!(r.text.contains(" IST</td><td>closed</td>"), "{}", r.text);
    // The mirror's backlog (one outbox record per token put) and every plugin's version.
    assert!(r.text.contains("Backlog: 2 token changes"), "{}", r.text);
    for plugin in t.state.plugins.all().values() {
        assert!(
            r.text.contains(&format!(
                "<td>{}</td><td>{}</td>",
                plugin.id, plugin.version
            )),
            "{}",
            plugin.id
        );
    }
    assert!(!r.text.contains("tok-u1-kite"));
}
