//! The Shoonya strategy against `FakeShoonya` (realistic mode): through the plugin ABI, and the
//! OAuth assisted login end to end through the daemon's HTTP API (login URL, the fake's login
//! page, `/callback/shoonya?code=`, the token served).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeOptions, FakeShoonya, ShoonyaBehaviour, ShoonyaUser, ist, totp};
use serde_json::json;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::BrokerConfig;

use super::common::*;
use crate::api::support::{As, KEY, MORNING, Reply, TestApi, request};

/// 2026-03-30 08:30:05 IST, 5 s into a TOTP step.
fn morning() -> i64 {
    ist::at(2026, 3, 30, 8, 30, 5)
}

const PASSWORD_PREFIX: &str = "Shoonya-pw-";

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn account(n: u32) -> (Account, ShoonyaUser) {
    let uid = format!("FA{:05}", 12_000 + n);
    let account = Account {
        user_id: format!("user-{n}"),
        broker_user_id: uid.clone(),
        password: Some(format!("{PASSWORD_PREFIX}{n:04}!x")),
        api_key: format!("{uid}_U"),
        api_secret: format!("prism-api-key-{n:04}-q"),
        totp_secret: Some(totp_secret(n + 900)),
        extra: BTreeMap::from([(
            "secret_code".to_string(),
            format!("{}{n:04}", "S3cr3tC0de".repeat(6)),
        )]),
    };
    let fake = ShoonyaUser::new(
        &uid,
        account.password.as_deref().unwrap(),
        account.totp_secret.as_deref().unwrap(),
        &account.api_secret,
        &account.extra["secret_code"],
    );
    (account, fake)
}

/// The code a person's authenticator shows at `now_ms`, one step back (the fake accepts ±1), so
/// the step the daemon's own TOTP would use stays fresh.
fn person_otp(secret: &str, now_ms: i64) -> String {
    totp::code_at_step(&totp::secret_bytes(secret), (now_ms / 30_000) as u64 - 1)
}

/// A person in a browser: open the login URL (the fake's page), submit the form, and return the
/// redirect's `Location` (the 302 carries an HTML body, and no `state`).
async fn browser_login(login_url: &str, uid: &str, password: &str, otp: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(login_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form"));
    let client_id = query_of(login_url)["client_id"].clone();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &client_id)
        .append_pair("uid", uid)
        .append_pair("pwd", password)
        .append_pair("otp", otp)
        .finish();
    let submitted = client
        .post(login_url.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 302);
    let location = submitted.headers()["location"].to_str().unwrap().to_owned();
    assert!(submitted.text().await.unwrap().contains("<a href="));
    // The registered redirect URL's own query (an account tag) is kept, then a code, no state.
    let query = query_of(&location);
    assert!(
        query.contains_key("code") && query.keys().all(|k| ["a", "code"].contains(&k.as_str())),
        "a code and no state: {location}"
    );
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_url_then_code_then_a_token_checked_with_limits() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();
    let callback = "https://tokenbot.example.com/callback/shoonya";

    let url = h
        .assisted_url("shoonya", &acct, &urls, "st4te", callback)
        .await
        .unwrap()
        .url;
    assert_eq!(
        url,
        format!("{}?client_id={}", fake.oauth_url(), acct.api_key)
    );
    let password = acct.password.as_deref().unwrap();
    let otp = person_otp(acct.totp_secret.as_deref().unwrap(), morning());
    let redirect = browser_login(&url, &acct.broker_user_id, password, &otp).await;
    assert!(redirect.starts_with(callback), "{redirect}");
    let query = query_of(&redirect);
    let out = h
        .assisted_finish("shoonya", &acct, &urls, query.clone())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    // expires_in (issue + 8 h) is earlier than the next 06:00 IST: it wins.
    assert_eq!(out.expires_at_ms, morning() + 8 * 3_600_000);
    assert_eq!(out.extras["flow"], "oauth");
    assert_eq!(out.extras["actid"], acct.broker_user_id.as_str());
    let susertoken = out.extras["susertoken"].as_str().unwrap();
    remember(susertoken);
    assert!(!out.extras.keys().any(|k| k.contains("refresh")));

    let r = fake.recorder();
    assert_eq!(r.requests("/NorenWClientAPI/GenAcsTok"), 1);
    assert_eq!(r.requests("/NorenWClientAPI/Limits"), 1);
    assert!(r.passwords(&acct.broker_user_id).is_empty());

    // The code is single use.
    let again = h.assisted_finish("shoonya", &acct, &urls, query).await;
    let e = failure(&again);
    assert_eq!(e.class, ErrorClass::Protocol, "{e:?}");
    assert!(e.message.contains("INVALID_VERIFIER"), "{}", e.message);

    let verified = h
        .verify("shoonya", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    h.clock.set(ist::at(2026, 3, 31, 6, 0, 0));
    let dead = h
        .verify("shoonya", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!dead.valid);
    assert!(dead.message.contains("Session Expired"), "{}", dead.message);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_expires_in_the_token_lives_to_the_next_cut_off_hour() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    fake.set_expires_in(None);
    let (acct, user) = account(2);
    fake.add_user(user);
    let urls = fake.base_urls();
    h.set_setting("expiry_hour_ist", "5");
    let url = h
        .assisted_url("shoonya", &acct, &urls, "s", "https://x.invalid/cb")
        .await
        .unwrap()
        .url;
    let otp = person_otp(acct.totp_secret.as_deref().unwrap(), morning());
    let redirect = browser_login(
        &url,
        &acct.broker_user_id,
        acct.password.as_deref().unwrap(),
        &otp,
    )
    .await;
    let out = h
        .assisted_finish("shoonya", &acct, &urls, query_of(&redirect))
        .await
        .unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2026, 3, 31, 5, 0, 0));

    // A wrong secret code: the checksum fails, and nothing is retried with the spent code.
    let (mut other, user) = account(3);
    fake.add_user(user);
    other
        .extra
        .insert("secret_code".into(), "Wr0ngSecretCode-0003".into());
    let url = h
        .assisted_url("shoonya", &other, &urls, "s", "https://x.invalid/cb")
        .await
        .unwrap()
        .url;
    let otp = person_otp(other.totp_secret.as_deref().unwrap(), morning());
    let redirect = browser_login(
        &url,
        &other.broker_user_id,
        other.password.as_deref().unwrap(),
        &otp,
    )
    .await;
    let code = query_of(&redirect)["code"].clone();
    let result = h
        .assisted_finish("shoonya", &other, &urls, query_of(&redirect))
        .await;
    assert_eq!(class_of(&result), ErrorClass::Protocol);
    assert_eq!(fake.code_uses(&code), 1);

    // No secret code: refused before the person is sent to log in.
    other.extra.clear();
    let result = h
        .assisted_url("shoonya", &other, &urls, "s", "https://x.invalid/cb")
        .await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quickauth_off_a_scheduled_login_contacts_nobody_and_asks_for_assisted_login() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    let (acct, user) = account(4);
    fake.add_user(user);
    let result = h.login("shoonya", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::AutomationBlocked, "{e:?}");
    assert!(!e.credentials_sent);
    assert!(
        e.message.contains("/api/login/shoonya/user-4/url"),
        "{}",
        e.message
    );
    assert_eq!(fake.recorder().total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickauth_when_turned_on_logs_in_headless_and_checks_the_session() {
    for (n, (name, value)) in [(5, ("headless", "true")), (6, ("flow", "quickauth"))] {
        let h = Harness::new(morning());
        let fake = FakeShoonya::start_with(h.fake_options()).await;
        h.set_setting(name, value);
        let (acct, user) = account(n);
        fake.add_user(user);
        let urls = fake.base_urls();
        let out = h.login("shoonya", &acct, &urls).await.unwrap();
        assert!(fake.token_is_valid(out.access_token.expose()));
        assert_eq!(out.extras["flow"], "quickauth");
        assert_eq!(out.extras["susertoken"], out.access_token.expose());
        assert_eq!(out.expires_at_ms, ist::at(2026, 3, 31, 6, 0, 0));
        let r = fake.recorder();
        assert_eq!(r.requests("/NorenWClientTP/QuickAuth"), 1);
        assert_eq!(r.requests("/NorenWClientTP/Limits"), 1);
        // The password goes as its SHA-256, once.
        assert_eq!(
            r.passwords(&acct.broker_user_id),
            vec![sha256_hex(acct.password.as_deref().unwrap())]
        );
        assert_one_password_distinct_steps(r, &acct.broker_user_id);
        let verified = h
            .verify("shoonya", &acct, &urls, out.access_token.expose())
            .await
            .unwrap();
        assert!(verified.valid, "{}", verified.message);
    }
    assert_no_secret_logged();
}

/// The refusals that say QuickAuth is closed to the account: each is sent once, never retried,
/// and ends in a class that marks the account for a person, with the assisted-login URL and the
/// advice to switch to OAuth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickauth_refusals_fall_back_to_assisted_login_without_a_retry() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    h.set_setting("headless", "true");
    let urls = fake.base_urls();
    type Change = fn(&mut Account, &FakeShoonya);
    let cases: [(u32, ShoonyaBehaviour, Change, ErrorClass, &str); 4] = [
        (
            10,
            ShoonyaBehaviour::AccessTypeRefused,
            |_, _| {},
            ErrorClass::AutomationBlocked,
            "Invalid Access Type",
        ),
        (
            11,
            ShoonyaBehaviour::NotEnabledOnApi,
            |_, _| {},
            ErrorClass::AppNotAuthorized,
            "User Not enabled on : API",
        ),
        (
            12,
            ShoonyaBehaviour::Happy,
            |a, _| a.api_key = format!("{}_X", a.broker_user_id),
            ErrorClass::AppNotAuthorized,
            "Invalid Vendor code",
        ),
        (
            13,
            ShoonyaBehaviour::Happy,
            |a, _| a.api_secret = "regenerated-prism-key-13".into(),
            ErrorClass::AppNotAuthorized,
            "Invalid App Key",
        ),
    ];
    for (n, behaviour, change, class, emsg) in cases {
        let (mut acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        change(&mut acct, &fake);
        let before = fake.recorder().requests("/NorenWClientTP/QuickAuth");
        let result = h.login("shoonya", &acct, &urls).await;
        let e = failure(&result);
        assert_eq!(e.class, class, "{emsg}: {e:?}");
        assert!(e.message.contains(emsg), "{}", e.message);
        assert!(
            e.message
                .contains(&format!("/api/login/shoonya/user-{n}/url"))
                && e.message.contains("flow = \"oauth\""),
            "{}",
            e.message
        );
        assert_eq!(
            fake.recorder().requests("/NorenWClientTP/QuickAuth") - before,
            1,
            "{emsg}: sent once"
        );
    }
    // The fake's switch: QuickAuth refused for everyone.
    fake.set_quickauth_open(false);
    let (acct, user) = account(14);
    fake.add_user(user);
    let e = failure(&h.login("shoonya", &acct, &urls).await).clone();
    assert_eq!(e.class, ErrorClass::AutomationBlocked);
    assert!(
        fake.recorder().passwords(&acct.broker_user_id).is_empty(),
        "refused before the password was looked at"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_sent_once_and_a_block_is_account_locked() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    h.set_setting("flow", "quickauth");
    let urls = fake.base_urls();
    let (mut acct, user) = account(20);
    fake.add_user(user);
    acct.password = Some("Wr0ng-Passw0rd-20".into());
    let result = h.login("shoonya", &acct, &urls).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{e:?}");
    assert!(e.credentials_sent);
    assert!(e.message.contains("Wrong Password"), "{}", e.message);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec![sha256_hex("Wr0ng-Passw0rd-20")]
    );
    assert!(fake.recorder().totp_uses(&acct.broker_user_id).is_empty());

    let (acct, user) = account(21);
    fake.add_user(user.with_behaviour(ShoonyaBehaviour::Blocked));
    let result = h.login("shoonya", &acct, &urls).await;
    assert_eq!(class_of(&result), ErrorClass::AccountLocked);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);

    let (acct, user) = account(22);
    fake.add_user(user.with_behaviour(ShoonyaBehaviour::PasswordReset));
    let result = h.login("shoonya", &acct, &urls).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);

    let (acct, user) = account(23);
    fake.add_user(user.with_behaviour(ShoonyaBehaviour::Waf));
    let result = h.login("shoonya", &acct, &urls).await;
    assert_eq!(class_of(&result), ErrorClass::BrokerUnavailable);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_is_not_retried_as_the_password_goes_with_it() {
    let h = Harness::new(morning());
    let fake = FakeShoonya::start_with(h.fake_options()).await;
    h.set_setting("flow", "quickauth");
    let r = fake.recorder();
    // The fake would take the next step's code: the strategy still stops at the first refusal.
    let (acct, user) = account(30);
    fake.add_user(user.with_behaviour(ShoonyaBehaviour::RejectFirstTotp));
    let result = h.login("shoonya", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::TwofaRejected, "{result:?}");
    assert!(failure(&result).message.contains("not retried"));
    assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
    assert_eq!(r.passwords(&acct.broker_user_id).len(), 1);
    assert_no_secret_logged();
}

// ---- through the daemon's HTTP API ---------------------------------------------------------

const UID: [&str; 2] = ["FA40001", "FA40002"];
const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const PASSWORD: &str = "Api-Passw0rd!41";
const PRISM_KEY: &str = "prism-key-4141-zz";
const SECRET_CODE: &str = "0123456789abcdef0123456789abcdefSecretCodeForShoonyaApiTest41";

fn api_with(fake: &FakeShoonya, settings: &[(&str, &str)]) -> TestApi {
    let urls = fake.base_urls();
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TestApi::with(|c| {
        c.brokers.insert(
            "shoonya".into(),
            BrokerConfig {
                urls,
                settings,
                rate_limit_per_sec: Some(1_000.0),
                ..BrokerConfig::default()
            },
        );
    })
}

/// A fake on a clock standing where the API's does, with the two accounts stored through the API.
async fn fake_and_api(settings: &[(&str, &str)]) -> (FakeShoonya, TestApi) {
    let clock = Arc::new(ManualClock::new(MORNING));
    let fake = FakeShoonya::start_with(FakeOptions {
        now: Arc::new(move || clock.now_ms()),
        ..FakeOptions::default()
    })
    .await;
    let api = api_with(&fake, settings);
    for (n, uid) in UID.iter().enumerate() {
        fake.add_user(ShoonyaUser::new(
            uid,
            PASSWORD,
            TOTP,
            PRISM_KEY,
            SECRET_CODE,
        ));
        let body = json!({
            "broker_user_id": uid, "api_key": format!("{uid}_U"), "secret_code": SECRET_CODE,
            "password": PASSWORD, "api_secret": PRISM_KEY, "totp_secret": TOTP,
        });
        api.send(request(
            Method::PUT,
            &format!("/api/users/u{}/accounts/shoonya", n + 1),
            &KEY,
            Some(body),
        ))
        .await
        .expect(201);
    }
    for secret in [PASSWORD, PRISM_KEY, SECRET_CODE, TOTP] {
        remember(secret);
    }
    (fake, api)
}

async fn login_url(api: &TestApi, user: &str) -> String {
    let r = api
        .send(request(
            Method::GET,
            &format!("/api/login/shoonya/{user}/url"),
            &KEY,
            None,
        ))
        .await;
    r.expect(200);
    r.json["url"].as_str().unwrap().to_owned()
}

async fn callback(api: &TestApi, location: &str) -> Reply {
    let path = location.trim_start_matches("https://tokenbot.example.com");
    assert!(path.starts_with("/callback/shoonya?"), "{path}");
    api.send(request(Method::GET, path, &As::Nobody, None))
        .await
}

async fn account_view(api: &TestApi, user: &str) -> serde_json::Value {
    let users = api
        .send(request(Method::GET, "/api/users", &KEY, None))
        .await;
    users.expect(200);
    (users.json["accounts"].as_array().cloned())
        .expect("accounts")
        .into_iter()
        .find(|a| a["user_id"] == user && a["broker"] == "shoonya")
        .expect("the account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_end_to_end_through_the_api_matches_the_callback_to_its_one_pending_account() {
    let (fake, api) = fake_and_api(&[]).await;
    // On schedule (flow = oauth): nothing sent, the account asks for a person.
    let refreshed = api
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &KEY,
            None,
        ))
        .await;
    refreshed.expect(200);
    assert_eq!(refreshed.json["failed"], 1, "{}", refreshed.text);
    assert_eq!(
        refreshed.json["results"][0]["error_class"], "automation_blocked",
        "{}",
        refreshed.text
    );
    assert_eq!(fake.recorder().total_requests(), 0);
    assert_eq!(account_view(&api, "u1").await["state"], "needs_attention");

    let url = login_url(&api, "u1").await;
    assert_eq!(url, format!("{}?client_id=FA40001_U", fake.oauth_url()));
    let location = browser_login(&url, UID[0], PASSWORD, &person_otp(TOTP, MORNING)).await;
    // A forged callback fails at Shoonya and does not use the pending login up.
    let forged = api
        .send(request(
            Method::GET,
            "/callback/shoonya?code=forged-by-anyone",
            &As::Nobody,
            None,
        ))
        .await;
    assert!(!forged.status.is_success(), "{}", forged.text);
    let done = callback(&api, &location).await;
    done.expect(200);
    assert_eq!(done.json["user_id"], "u1", "{}", done.text);
    assert_eq!(done.json["broker_user_id"], UID[0]);
    assert_eq!(account_view(&api, "u1").await["state"], "active");

    let token = api
        .send(request(
            Method::GET,
            "/api/tokens/u1?broker=shoonya",
            &KEY,
            None,
        ))
        .await;
    token.expect(200);
    let access = token.json["access_token"].as_str().unwrap();
    remember(access);
    assert!(fake.token_is_valid(access));
    let extras = token.json["extras"].as_object().expect("extras");
    assert_eq!(
        extras.keys().collect::<Vec<_>>(),
        ["actid", "flow", "susertoken"],
        "{}",
        token.text
    );
    remember(extras["susertoken"].as_str().unwrap());
    assert!(!token.text.contains("refresh"), "{}", token.text);
    assert!(!token.text.contains(SECRET_CODE));
    assert_no_secret_logged();
}

/// Two Shoonya logins pending: the callback cannot say whose code it carries, and redeeming the
/// single-use code for the wrong account could spend it, so it is refused as ambiguous and the
/// code is not sent to Shoonya at all (docs/decisions.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_shoonya_logins_pending_a_callback_is_refused_as_ambiguous_and_its_code_unspent() {
    let (fake, api) = fake_and_api(&[]).await;
    let first = login_url(&api, "u1").await;
    let second = login_url(&api, "u2").await;
    let location = browser_login(&second, UID[1], PASSWORD, &person_otp(TOTP, MORNING)).await;
    let code = query_of(&location)["code"].clone();
    let r = callback(&api, &location).await;
    r.expect_error(400, "invalid_state");
    assert!(r.text.contains("several assisted logins"), "{}", r.text);
    assert_eq!(fake.code_uses(&code), 0, "the code never reached Shoonya");
    assert_eq!(fake.recorder().requests("/NorenWClientAPI/GenAcsTok"), 0);
    assert!(first.contains("client_id=FA40001_U"));
    assert_eq!(account_view(&api, "u2").await["has_token"], false);
    assert_no_secret_logged();
}

/// shoonya.md's rule 1: the redirect URL registered for each account's app carries the tag the
/// URL route answers; Shoonya keeps it, so each callback names its account while both wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_account_tag_in_the_redirect_url_two_pending_logins_each_finish_on_their_account()
{
    let (fake, api) = fake_and_api(&[]).await;
    let mut urls = Vec::new();
    for (n, uid) in UID.iter().enumerate() {
        let r = api
            .send(request(
                Method::GET,
                &format!("/api/login/shoonya/u{}/url", n + 1),
                &KEY,
                None,
            ))
            .await;
        r.expect(200);
        let redirect = r.json["redirect_url"].as_str().unwrap().to_owned();
        assert!(
            redirect.starts_with("https://tokenbot.example.com/callback/shoonya?a="),
            "{redirect}"
        );
        // What the person registers once as the app's redirect URL.
        let mut user = ShoonyaUser::new(uid, PASSWORD, TOTP, PRISM_KEY, SECRET_CODE);
        user.redirect_url = redirect;
        fake.add_user(user);
        urls.push(r.json["url"].as_str().unwrap().to_owned());
    }
    // Both logins wait; the second account's person finishes first.
    let otp = person_otp(TOTP, MORNING);
    let second = browser_login(&urls[1], UID[1], PASSWORD, &otp).await;
    let first = browser_login(&urls[0], UID[0], PASSWORD, &otp).await;
    assert_ne!(query_of(&first)["a"], query_of(&second)["a"]);
    let done = callback(&api, &second).await;
    done.expect(200);
    assert_eq!(
        (
            done.json["user_id"].as_str(),
            done.json["broker_user_id"].as_str()
        ),
        (Some("u2"), Some(UID[1])),
        "{}",
        done.text
    );
    // With u1's login the only one pending, a tag that is not u1's is still refused, before
    // Shoonya sees its code.
    let forged = "/callback/shoonya?a=0123456789abcdef&code=whatever";
    api.send(request(Method::GET, forged, &As::Nobody, None))
        .await
        .expect_error(400, "invalid_state");
    assert_eq!(fake.recorder().requests("/NorenWClientAPI/GenAcsTok"), 1);
    let done = callback(&api, &first).await;
    done.expect(200);
    assert_eq!(done.json["user_id"], "u1", "{}", done.text);
    for user in ["u1", "u2"] {
        assert_eq!(account_view(&api, user).await["has_token"], true, "{user}");
    }
    assert_eq!(fake.recorder().requests("/NorenWClientAPI/GenAcsTok"), 2);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quickauth_refusal_leaves_the_account_waiting_for_an_assisted_login_that_clears_it() {
    let (fake, api) = fake_and_api(&[("headless", "true")]).await;
    fake.set_quickauth_open(false);
    let refreshed = api
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &KEY,
            None,
        ))
        .await;
    refreshed.expect(200);
    let result = &refreshed.json["results"][0];
    assert_eq!(
        result["error_class"], "automation_blocked",
        "{}",
        refreshed.text
    );
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("/api/login/shoonya/u1/url"),
        "{}",
        refreshed.text
    );
    assert_eq!(fake.recorder().requests("/NorenWClientTP/QuickAuth"), 1);
    let view = account_view(&api, "u1").await;
    assert_eq!(view["state"], "needs_attention", "{view}");
    assert_eq!(view["attention"]["class"], "automation_blocked");

    // Not retried: a second refresh skips the account and sends nothing.
    api.send(request(
        Method::POST,
        "/api/integration/tokens/refresh/u1",
        &KEY,
        None,
    ))
    .await
    .expect(200);
    assert_eq!(fake.recorder().requests("/NorenWClientTP/QuickAuth"), 1);

    let url = login_url(&api, "u1").await;
    let location = browser_login(&url, UID[0], PASSWORD, &person_otp(TOTP, MORNING)).await;
    callback(&api, &location).await.expect(200);
    assert_eq!(account_view(&api, "u1").await["state"], "active");
    assert_no_secret_logged();
}
