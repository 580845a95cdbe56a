//! Token, credential and refresh routes through `api::app(state)` with `oneshot`: the happy path,
//! 401, 403 for another user's JWT, 404, 400/422, 413, unknown brokers, and the audit of reads.

use super::support::*;
use axum::http::Method;
use serde_json::json;
use tokenbot::clock::Clock;
use tokenbot::vault::{Attempt, AttemptScope, Outcome, Trigger};

#[tokio::test]
async fn token_read_hands_out_a_valid_token_and_audits_the_key_name() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let r = t
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({
            "user_id": "u1",
            "broker": "kite",
            "broker_user_id": "BU-u1",
            "access_token": "tok-u1-kite",
            "issued_at": "2025-03-10T01:30:05.000Z",
            "expires_at": "2025-03-10T03:30:05.000Z",
        })
    );
    t.send(request(
        Method::GET,
        "/api/tokens/u1",
        &As::Key(ENV_KEY),
        None,
    ))
    .await
    .expect(200);
    let audit = audited(&t, 2).await;
    let names: Vec<&str> = audit.iter().map(|a| a.api_key_name.as_str()).collect();
    assert_eq!(names, ["env", "backend"], "newest first");
    assert_eq!(audit[0].user.as_str(), "u1");

    t.send(request(Method::GET, "/api/tokens/u1", &As::Nobody, None))
        .await
        .expect_error(401, "unauthorized");
    t.send(request(
        Method::GET,
        "/api/tokens/u1",
        &As::Key("wrong"),
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(
        Method::GET,
        "/api/tokens/u1",
        &As::BearerKey(BACKEND_KEY),
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(Method::GET, "/api/tokens/u1", &jwt("u1"), None))
        .await
        .expect_error(401, "unauthorized");
    t.send(request(Method::GET, "/api/tokens/nobody", &KEY, None))
        .await
        .expect_error(404, "no_valid_token");
    t.send(request(
        Method::GET,
        "/api/tokens/u1?broker=iifl",
        &KEY,
        None,
    ))
    .await
    .expect_error(404, "no_valid_token");
    // A later read is audited after the first two: refusals were not recorded in between.
    t.send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await
        .expect(200);
    assert_eq!(audited(&t, 3).await.len(), 3, "refusals are not reads");
}

/// The audit log once it holds `n` entries (the writer commits shortly after each read).
async fn audited(t: &TestApi, n: usize) -> Vec<tokenbot::vault::AuditEntry> {
    for _ in 0..1000 {
        let audit = t.vault().audit(100).unwrap();
        if audit.len() >= n {
            return audit;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the audit log never reached {n} entries");
}

#[tokio::test]
async fn token_read_refuses_expired_tokens_and_asks_for_a_broker_when_ambiguous() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(-1));
    t.send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await
        .expect_error(404, "no_valid_token");
    t.seed("u2", "kite", Some(HOUR));
    t.seed("u2", "iifl", Some(HOUR));
    t.send(request(Method::GET, "/api/tokens/u2", &KEY, None))
        .await
        .expect_error(400, "broker_required");
    let r = t
        .send(request(
            Method::GET,
            "/api/tokens/u2?broker=iifl",
            &KEY,
            None,
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["access_token"], "tok-u2-iifl");
}

/// Reads are served from a cached body: it must follow every change a fresh read would see.
#[tokio::test]
async fn repeated_token_reads_follow_new_tokens_other_brokers_and_expiry() {
    let t = TestApi::new();
    let key = t.seed("u1", "kite", Some(HOUR));
    let read = |path: &'static str| t.send(request(Method::GET, path, &KEY, None));
    for _ in 0..2 {
        let r = read("/api/tokens/u1").await;
        r.expect(200);
        assert_eq!(r.json["access_token"], "tok-u1-kite");
    }
    let now = t.clock.now_ms();
    t.vault()
        .put_token(
            &key,
            &tokenbot::vault::NewToken {
                access_token: "tok-u1-kite-2".into(),
                issued_at_ms: now,
                expires_at_ms: now + 2 * HOUR,
                extras: tokenbot::vault::SecretJson::empty(),
                served_extras: Default::default(),
            },
        )
        .unwrap();
    let r = read("/api/tokens/u1").await;
    r.expect(200);
    assert_eq!(r.json["access_token"], "tok-u1-kite-2", "a new token");
    let r = read("/api/tokens/u1?broker=kite").await;
    r.expect(200);
    assert_eq!(r.json["access_token"], "tok-u1-kite-2");

    t.seed("u1", "iifl", Some(HOUR));
    read("/api/tokens/u1")
        .await
        .expect_error(400, "broker_required");
    assert_eq!(
        read("/api/tokens/u1?broker=kite").await.json["access_token"],
        "tok-u1-kite-2"
    );

    // Past the iifl token's expiry the kite one is the only valid token again; past its own,
    // none is.
    t.clock.advance(HOUR as u64);
    let r = read("/api/tokens/u1").await;
    r.expect(200);
    assert_eq!(r.json["access_token"], "tok-u1-kite-2", "iifl expired");
    t.clock.advance(HOUR as u64);
    read("/api/tokens/u1")
        .await
        .expect_error(404, "no_valid_token");
    read("/api/tokens/u1?broker=kite")
        .await
        .expect_error(404, "no_valid_token");
    assert_eq!(
        audited(&t, 6).await.len(),
        6,
        "every answered read is audited"
    );
}

#[tokio::test]
async fn credentials_routes_act_on_the_jwt_user_only() {
    let t = TestApi::new();
    let me = jwt("u1");
    let mut body = kite_fields("1");
    body["broker"] = json!("kite");
    let r = t
        .send(request(
            Method::POST,
            "/api/credentials",
            &me,
            Some(body.clone()),
        ))
        .await;
    r.expect(201);
    assert_eq!(r.json["user_id"], "u1");
    assert!(!r.text.contains("pass-word-1!"));
    t.send(request(
        Method::POST,
        "/api/credentials",
        &As::Nobody,
        Some(body.clone()),
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(
        Method::POST,
        "/api/credentials",
        &KEY,
        Some(body.clone()),
    ))
    .await
    .expect_error(401, "unauthorized");
    let mut unknown = body.clone();
    unknown["broker"] = json!("nosuchbroker");
    t.send(request(
        Method::POST,
        "/api/credentials",
        &me,
        Some(unknown),
    ))
    .await
    .expect_error(422, "unknown_broker");
    let mut no_broker = body.clone();
    no_broker.as_object_mut().unwrap().remove("broker");
    let r = t
        .send(request(
            Method::POST,
            "/api/credentials",
            &me,
            Some(no_broker),
        ))
        .await;
    r.expect_error(422, "invalid_body");
    assert!(r.text.contains("missing field `broker`"), "{}", r.text);
    t.send(raw(
        Method::POST,
        "/api/credentials",
        &me,
        "application/json",
        "{",
    ))
    .await
    .expect_error(400, "malformed_json");
    let huge = format!("{{\"broker\": \"{}\"}}", "k".repeat(BODY_LIMIT + 1));
    t.send(raw(
        Method::POST,
        "/api/credentials",
        &me,
        "application/json",
        &huge,
    ))
    .await
    .expect_error(413, "payload_too_large");

    // Another user sees none of it.
    let r = t
        .send(request(
            Method::GET,
            "/api/credentials/status",
            &jwt("u2"),
            None,
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["accounts"], json!([]));
    let r = t
        .send(request(Method::GET, "/api/credentials/status", &me, None))
        .await;
    r.expect(200);
    assert_eq!(r.json["user_id"], "u1");
    assert_eq!(r.json["accounts"][0]["broker"], "kite");
    assert_eq!(r.json["accounts"][0]["auto_refresh"], true);
    t.send(request(
        Method::GET,
        "/api/credentials/status",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(401, "unauthorized");

    let r = t
        .send(request(
            Method::PATCH,
            "/api/credentials/toggle",
            &me,
            Some(json!({"broker": "kite", "auto_refresh": false})),
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["state"], "paused");
    t.send(request(
        Method::PATCH,
        "/api/credentials/toggle",
        &me,
        Some(json!({"broker": "kite"})),
    ))
    .await
    .expect_error(422, "invalid_body");
    t.send(request(
        Method::PATCH,
        "/api/credentials/toggle",
        &jwt("u2"),
        Some(json!({"broker": "kite", "auto_refresh": true})),
    ))
    .await
    .expect_error(404, "no_account");

    t.send(request(
        Method::DELETE,
        "/api/credentials?broker=kite",
        &jwt("u2"),
        None,
    ))
    .await
    .expect_error(404, "no_account");
    t.send(request(
        Method::DELETE,
        "/api/credentials",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    let r = t
        .send(request(Method::DELETE, "/api/credentials", &me, None))
        .await;
    r.expect(200);
    assert_eq!(r.json["broker"], "kite");
    assert!(t.vault().list_accounts().unwrap().is_empty());
}

#[tokio::test]
async fn delete_credentials_without_broker_needs_one_when_several() {
    let t = TestApi::new();
    t.seed("u1", "kite", None);
    t.seed("u1", "iifl", None);
    t.send(request(
        Method::DELETE,
        "/api/credentials",
        &jwt("u1"),
        None,
    ))
    .await
    .expect_error(400, "broker_required");
    t.send(request(
        Method::DELETE,
        "/api/credentials?broker=iifl",
        &jwt("u1"),
        None,
    ))
    .await
    .expect(200);
    assert_eq!(t.vault().list_accounts().unwrap().len(), 1);
}

#[tokio::test]
async fn token_status_and_logs_for_the_user_or_a_service() {
    let t = TestApi::new();
    let key = t.seed("u1", "kite", Some(HOUR));
    for (n, outcome) in [(1, Outcome::Failed), (2, Outcome::Success)] {
        t.vault()
            .append_attempt(
                &key,
                &Attempt {
                    time_ms: MORNING + n,
                    trigger: Trigger::Schedule,
                    attempt: n as u32,
                    duration_ms: 1200,
                    outcome,
                    error_class: (outcome == Outcome::Failed).then(|| "network".to_owned()),
                    message: None,
                },
            )
            .unwrap();
    }
    let r = t
        .send(request(Method::GET, "/api/tokens/status", &jwt("u1"), None))
        .await;
    r.expect(200);
    let token = &r.json["tokens"][0];
    assert_eq!(token["valid"], true);
    assert_eq!(token["last_attempt"]["outcome"], "success");
    assert!(!r.text.contains("tok-u1"), "status never shows the token");
    t.send(request(Method::GET, "/api/tokens/status", &KEY, None))
        .await
        .expect_error(401, "unauthorized");

    for who in [KEY, jwt("u1")] {
        let r = t
            .send(request(Method::GET, "/api/tokens/logs/u1", &who, None))
            .await;
        r.expect(200);
        let logs = r.json["attempts"].as_array().unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0]["outcome"], "success", "newest first");
        assert_eq!(logs[1]["error_class"], "network");
        assert_eq!(logs[1]["trigger"], "schedule");
    }
    let r = t
        .send(request(
            Method::GET,
            "/api/tokens/logs/u1?limit=1&broker=kite",
            &KEY,
            None,
        ))
        .await;
    assert_eq!(r.json["attempts"].as_array().unwrap().len(), 1);
    t.send(request(
        Method::GET,
        "/api/tokens/logs/u1",
        &jwt("u2"),
        None,
    ))
    .await
    .expect_error(403, "forbidden");
    t.send(request(
        Method::GET,
        "/api/tokens/logs/u1",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(Method::GET, "/api/tokens/logs/u9", &KEY, None))
        .await
        .expect_error(404, "no_account");
    t.send(request(
        Method::GET,
        "/api/tokens/logs/u1?limit=x",
        &KEY,
        None,
    ))
    .await
    .expect_error(400, "invalid_query");
    assert_eq!(
        t.vault()
            .attempts(AttemptScope::Account(&key), 10)
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn refresh_routes_need_their_credentials_and_known_accounts() {
    let t = TestApi::new();
    t.seed("u1", "kite", None);
    // Paused and externally managed accounts are skipped without a login.
    t.vault()
        .set_flags(
            &tokenbot::vault::AccountKey::parse("u1", "kite").unwrap(),
            tokenbot::vault::Flags {
                managed_externally: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    for who in [KEY, As::BearerKey(BACKEND_KEY), As::BearerKey(ENV_KEY)] {
        let r = t
            .send(request(
                Method::POST,
                "/api/integration/tokens/refresh-all",
                &who,
                None,
            ))
            .await;
        r.expect(200);
        assert_eq!(r.json["total"], 1);
        assert_eq!(r.json["skipped"], 1);
        assert_eq!(r.json["results"][0]["outcome"], "skipped");
    }
    for who in [As::Nobody, As::BearerKey("wrong"), jwt("u1")] {
        t.send(request(
            Method::POST,
            "/api/integration/tokens/refresh-all",
            &who,
            None,
        ))
        .await
        .expect_error(401, "unauthorized");
    }
    let r = t
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &As::BearerKey(BACKEND_KEY),
            None,
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["skipped"], 1);
    t.send(request(
        Method::POST,
        "/api/integration/tokens/refresh/u9",
        &KEY,
        None,
    ))
    .await
    .expect_error(404, "no_account");
    t.send(request(
        Method::POST,
        "/api/integration/tokens/refresh/u1",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(401, "unauthorized");

    let r = t
        .send(request(
            Method::POST,
            "/api/tokens/refresh",
            &jwt("u1"),
            None,
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["results"][0]["user_id"], "u1");
    t.send(request(
        Method::POST,
        "/api/tokens/refresh",
        &jwt("u1"),
        Some(json!({"broker": "iifl"})),
    ))
    .await
    .expect_error(404, "no_account");
    t.send(request(
        Method::POST,
        "/api/tokens/refresh",
        &jwt("u1"),
        Some(json!({"broker": 5})),
    ))
    .await
    .expect_error(422, "invalid_body");
    t.send(request(Method::POST, "/api/tokens/refresh", &KEY, None))
        .await
        .expect_error(401, "unauthorized");
}

#[test]
fn audit_batches_keep_their_order_and_the_retention_limit() {
    use tokenbot::vault::{AuditEntry, BrokerId, Engine, KeyMaterial, MasterKey, UserId, Vault};
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::create(
        dir.path().join("v.redb"),
        Engine::Redb,
        &KeyMaterial::Key(MasterKey::from_bytes([1; 32])),
        tokenbot::vault::VaultOptions {
            audit_keep: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let entry = |n: i64| AuditEntry {
        time_ms: n,
        api_key_name: format!("k{n}"),
        user: UserId::new("u1").unwrap(),
        broker: BrokerId::new("kite").unwrap(),
    };
    assert_eq!(vault.append_audits::<AuditEntry>(&[]).unwrap(), 0);
    assert_eq!(vault.append_audits(&[entry(1), entry(2)]).unwrap(), 2);
    assert_eq!(vault.append_audit(&entry(3)).unwrap(), 3);
    assert_eq!(vault.append_audits(&[entry(4), entry(5)]).unwrap(), 5);
    let times: Vec<i64> = vault.audit(10).unwrap().iter().map(|e| e.time_ms).collect();
    assert_eq!(
        times,
        [5, 4, 3],
        "newest first, the oldest beyond 3 dropped"
    );
    // A batch straddling the retention line: only its newest entries are still read.
    assert_eq!(vault.append_audits(&[entry(6), entry(7)]).unwrap(), 7);
    let times: Vec<i64> = vault.audit(10).unwrap().iter().map(|e| e.time_ms).collect();
    assert_eq!(times, [7, 6, 5]);
    let times: Vec<i64> = vault.audit(2).unwrap().iter().map(|e| e.time_ms).collect();
    assert_eq!(times, [7, 6]);
    assert!(vault.verify().unwrap().failures.is_empty());
}

/// Two platform users with the same broker account would each spend the broker's few
/// wrong-password attempts; the second registration is refused, naming neither user.
#[tokio::test]
async fn a_second_user_registering_the_same_broker_account_is_refused_with_409() {
    let t = TestApi::new();
    t.send(request(
        Method::PUT,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(kite_fields("7")),
    ))
    .await
    .expect(201);
    // The same user re-saving is fine.
    t.send(request(
        Method::PUT,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(kite_fields("7")),
    ))
    .await
    .expect(200);
    // Another user, the same broker_user_id in another case.
    let mut fields = kite_fields("7");
    fields["broker_user_id"] = "ab7".into();
    let r = t
        .send(request(
            Method::PUT,
            "/api/users/u2/accounts/kite",
            &KEY,
            Some(fields.clone()),
        ))
        .await;
    r.expect_error(409, "broker_account_taken");
    assert!(!r.text.contains("u1"), "{}", r.text);
    assert!(
        t.vault()
            .user_accounts(&"u2".parse().unwrap())
            .unwrap()
            .is_empty()
    );
    // Another broker with that user id is another account.
    let mut iifl = fields.clone();
    iifl["broker_user_id"] = "AB7".into();
    t.send(request(
        Method::PUT,
        "/api/users/u2/accounts/iifl",
        &KEY,
        Some(iifl),
    ))
    .await
    .expect(201);
}
