//! Service, health and provisioning routes through `api::app(state)` with `oneshot`: the happy
//! path, 401, 404, 400/422, 413 and unknown brokers; the error shape, headers, CORS, request ids,
//! metrics and the failed-auth limit. Token, credential and refresh routes: `api_user_routes.rs`.

mod api_support;

use api_support::*;
use axum::http::Method;
use serde_json::json;

#[tokio::test]
async fn health_is_ok_with_security_headers_and_a_request_id() {
    let t = TestApi::new();
    let r = t
        .send(request(Method::GET, "/health", &As::Nobody, None))
        .await;
    r.expect(200);
    assert_eq!(r.json, json!({"status": "ok"}));
    let h = &r.headers;
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(
        h["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert!(!h["x-request-id"].is_empty());

    // A sane client id is kept; anything else is replaced.
    let mut req = request(Method::GET, "/health", &As::Nobody, None);
    req.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    assert_eq!(t.send(req).await.headers["x-request-id"], "abc-123");
    let mut req = request(Method::GET, "/health", &As::Nobody, None);
    req.headers_mut()
        .insert("x-request-id", "a b\"<script>".parse().unwrap());
    assert_ne!(t.send(req).await.headers["x-request-id"], "a b\"<script>");
}

#[tokio::test]
async fn no_hsts_without_an_https_public_url() {
    let t = TestApi::with(|c| c.server.public_url = Some("http://127.0.0.1:3000".parse().unwrap()));
    let r = t
        .send(request(Method::GET, "/health", &As::Nobody, None))
        .await;
    assert!(!r.headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn health_detailed_counts_users_accounts_tokens_plugins_and_backlog() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(8 * HOUR));
    t.seed("u1", "iifl", Some(HOUR / 2));
    t.seed("u2", "kite", Some(-HOUR));
    let r = t
        .send(request(Method::GET, "/health/detailed", &As::Nobody, None))
        .await;
    r.expect(200);
    let j = &r.json;
    assert_eq!(j["users"], 2);
    assert_eq!(j["accounts"], 3);
    assert_eq!(j["active_tokens"], 2);
    assert_eq!(j["tokens_expiring_within_hour"], 1);
    assert_eq!(j["success_rate"], serde_json::Value::Null);
    assert_eq!(j["mirror"]["backlog"], 3, "one outbox record per token put");
    assert!(j["next_runs"]["kite"].is_string(), "{j}");
    let ids: Vec<&str> = j["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"kite") && ids.contains(&"iifl"), "{ids:?}");
    assert!(!r.text.contains("tok-"), "no token in health");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_json_error_shape() {
    let t = TestApi::new();
    let r = t
        .send(request(Method::GET, "/nope", &As::Nobody, None))
        .await;
    r.expect_error(404, "not_found");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let r = t
        .send(request(Method::DELETE, "/health", &As::Nobody, None))
        .await;
    r.expect_error(405, "method_not_allowed");
    assert!(r.headers.contains_key("allow"));
}

#[tokio::test]
async fn provision_with_put_creates_then_replaces_and_never_echoes_secrets() {
    let t = TestApi::new();
    let path = "/api/users/28748327/accounts/kite";
    let r = t
        .send(request(Method::PUT, path, &KEY, Some(kite_fields("1"))))
        .await;
    r.expect(201);
    assert_eq!(r.json["user_id"], "28748327");
    assert_eq!(r.json["broker"], "kite");
    assert_eq!(r.json["broker_user_id"], "AB1");
    assert_eq!(r.json["state"], "active");
    assert_eq!(r.json["has_token"], false);
    for secret in [
        "pass-word-1!",
        "kite-api-secret-0001",
        "JBSWY3DP",
        "kiteapikey",
    ] {
        assert!(!r.text.contains(secret), "{secret} in {}", r.text);
    }
    let mut body = kite_fields("1");
    body["managed_externally"] = json!(true);
    let r = t.send(request(Method::PUT, path, &KEY, Some(body))).await;
    r.expect(200);
    assert_eq!(r.json["state"], "managed_externally");
    let key = tokenbot::vault::AccountKey::parse("28748327", "kite").unwrap();
    let creds = t.vault().credentials(&key).unwrap().unwrap();
    assert!(creds.password.is_some() && creds.totp_secret.is_some());
}

#[tokio::test]
async fn provision_refuses_bad_input_with_the_right_status() {
    let t = TestApi::new();
    let path = "/api/users/u1/accounts/kite";
    let send = |body: serde_json::Value, who: As| {
        let t = &t;
        async move { t.send(request(Method::PUT, path, &who, Some(body))).await }
    };
    send(kite_fields("1"), As::Nobody)
        .await
        .expect_error(401, "unauthorized");
    send(kite_fields("1"), As::Key("wrong-key"))
        .await
        .expect_error(401, "unauthorized");
    send(kite_fields("1"), jwt("u1"))
        .await
        .expect_error(401, "unauthorized");

    let mut missing = kite_fields("1");
    missing.as_object_mut().unwrap().remove("password");
    let r = send(missing, KEY).await;
    r.expect_error(422, "invalid_fields");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password")
    );

    let mut unknown = kite_fields("1");
    unknown["pin"] = json!("1234");
    send(unknown, KEY).await.expect_error(422, "invalid_body");

    let mut wrong_type = kite_fields("1");
    wrong_type["auto_refresh"] = json!("hunter2-not-a-bool");
    let r = send(wrong_type, KEY).await;
    r.expect_error(422, "invalid_body");
    assert!(r.text.contains("auto_refresh"), "{}", r.text);
    assert!(
        !r.text.contains("hunter2"),
        "a value was echoed: {}",
        r.text
    );

    let mut secret_wrong_type = kite_fields("1");
    secret_wrong_type["password"] = json!(["hunter2"]);
    let r = send(secret_wrong_type, KEY).await;
    r.expect_error(422, "invalid_body");
    assert!(!r.text.contains("hunter2"), "{}", r.text);

    let mut bad_totp = kite_fields("1");
    bad_totp["totp_secret"] = json!("not base32 !!!");
    let r = send(bad_totp, KEY).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("totp_secret") && !r.text.contains("not base32"));

    send(json!([1, 2]), KEY)
        .await
        .expect_error(422, "invalid_body");

    t.send(raw(
        Method::PUT,
        path,
        &KEY,
        "application/json",
        "{\"password\": ",
    ))
    .await
    .expect_error(400, "malformed_json");
    t.send(raw(Method::PUT, path, &KEY, "application/json", "{} {}"))
        .await
        .expect_error(400, "malformed_json");
    t.send(raw(Method::PUT, path, &KEY, "text/plain", "{}"))
        .await
        .expect_error(415, "unsupported_media_type");
    let huge = format!("{{\"password\": \"{}\"}}", "x".repeat(BODY_LIMIT * 2));
    t.send(raw(Method::PUT, path, &KEY, "application/json", &huge))
        .await
        .expect_error(413, "payload_too_large");

    t.send(request(
        Method::PUT,
        "/api/users/u1/accounts/nosuchbroker",
        &KEY,
        Some(kite_fields("1")),
    ))
    .await
    .expect_error(404, "unknown_broker");
    t.send(request(
        Method::PUT,
        "/api/users/a%20b/accounts/kite",
        &KEY,
        Some(kite_fields("1")),
    ))
    .await
    .expect_error(400, "invalid_id");
    assert!(
        t.vault().list_accounts().unwrap().is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn patch_and_delete_an_account() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let path = "/api/users/u1/accounts/kite";
    let r = t
        .send(request(
            Method::PATCH,
            path,
            &KEY,
            Some(json!({"auto_refresh": false})),
        ))
        .await;
    r.expect(200);
    assert_eq!(r.json["state"], "paused");
    assert_eq!(r.json["has_token"], true);
    t.send(request(Method::PATCH, path, &KEY, Some(json!({}))))
        .await
        .expect_error(422, "nothing_to_change");
    t.send(request(
        Method::PATCH,
        path,
        &KEY,
        Some(json!({"auto_refresh": 1})),
    ))
    .await
    .expect_error(422, "invalid_body");
    t.send(request(
        Method::PATCH,
        path,
        &As::Nobody,
        Some(json!({"auto_refresh": true})),
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(
        Method::PATCH,
        "/api/users/u9/accounts/kite",
        &KEY,
        Some(json!({"auto_refresh": true})),
    ))
    .await
    .expect_error(404, "no_account");

    t.send(request(Method::DELETE, path, &As::Key("nope"), None))
        .await
        .expect_error(401, "unauthorized");
    let r = t.send(request(Method::DELETE, path, &KEY, None)).await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"user_id": "u1", "broker": "kite", "deleted": true})
    );
    t.send(request(Method::DELETE, path, &KEY, None))
        .await
        .expect_error(404, "no_account");
}

#[tokio::test]
async fn list_users_shows_states_and_no_secrets() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    t.seed("u2", "iifl", None);
    let r = t.send(request(Method::GET, "/api/users", &KEY, None)).await;
    r.expect(200);
    assert_eq!(r.json["total"], 2);
    assert_eq!(r.json["accounts"][0]["user_id"], "u1");
    assert_eq!(r.json["accounts"][0]["has_token"], true);
    assert_eq!(r.json["accounts"][1]["has_token"], false);
    for secret in ["pw-secret-1", "apisecret-1", "tok-u1", "JBSWY3DP"] {
        assert!(!r.text.contains(secret), "{secret}");
    }
    let r = t
        .send(request(Method::GET, "/api/users?broker=iifl", &KEY, None))
        .await;
    assert_eq!(r.json["total"], 1);
    t.send(request(Method::GET, "/api/users", &As::Nobody, None))
        .await
        .expect_error(401, "unauthorized");
    t.send(request(
        Method::GET,
        "/api/users?broker=Not%20Valid",
        &KEY,
        None,
    ))
    .await
    .expect_error(400, "invalid_id");
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let t = TestApi::with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]);
    let preflight = |origin: &str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/tokens/u1")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let r = t.send(preflight("https://app.example.com")).await;
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let r = t.send(preflight("https://evil.example.com")).await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    let none = TestApi::new();
    let r = none.send(preflight("https://app.example.com")).await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn failed_authentications_are_limited_per_ip() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    for _ in 0..tokenbot::api::auth::MAX_FAILURES {
        t.send(request(
            Method::GET,
            "/api/tokens/u1",
            &As::Key("guess"),
            None,
        ))
        .await
        .expect_error(401, "unauthorized");
    }
    // Blocked now, even with the right key.
    let r = t
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    r.expect_error(429, "too_many_failed_authentications");
    assert!(r.headers.contains_key("retry-after"));
    // Another address is not.
    t.send_from(
        "198.51.100.7:4000".parse().unwrap(),
        request(Method::GET, "/api/tokens/u1", &KEY, None),
    )
    .await
    .expect(200);
    // Unauthenticated routes stay open.
    t.send(request(Method::GET, "/health", &As::Nobody, None))
        .await
        .expect(200);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR / 2));
    t.send(request(Method::GET, "/health", &As::Nobody, None))
        .await
        .expect(200);
    let r = t
        .send(request(Method::GET, "/metrics", &As::Nobody, None))
        .await;
    r.expect(200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        r.text.contains("tokenbot_http_requests_total{"),
        "{}",
        r.text
    );
    assert!(r.text.contains("route=\"/health\""), "{}", r.text);
    assert!(r.text.contains("tokenbot_tokens_expiring_within_hour"));
    assert!(r.text.contains("tokenbot_mirror_backlog"));
    assert!(!r.text.contains("tok-u1"));
}
