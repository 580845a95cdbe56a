//! Service, health and provisioning routes through `api::app(state)` with `oneshot`: the happy
//! path, 401, 404, 400/422, 413 and unknown brokers; the error shape, headers, CORS, request ids,
//! metrics and the failed-auth limit. Token, credential and refresh routes: `user_routes.rs`.
//! `every_route_refuses_bad_requests_with_the_documented_error` walks a table with a row for
//! every route of `ROUTES` (a route without a row fails it) through the refusals all routes share.

use super::support::*;
use axum::http::Method;
use serde_json::{Value, json};
use tokenbot::api::ROUTES;

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
        .send(request(Method::GET, "/health/detailed", &KEY, None))
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

    // A field Kite does not declare (another broker's `pin`) is refused, naming it.
    let mut unknown = kite_fields("1");
    unknown["pin"] = json!("1234");
    let r = send(unknown, KEY).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("unknown field `pin`"), "{}", r.text);

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

    // A QR code's text is taken as the secret; one for other codes than the brokers' is refused,
    // naming the parameter and not the secret.
    let secret = kite_fields("1")["totp_secret"].as_str().unwrap().to_owned();
    let mut qr = kite_fields("1");
    qr["totp_secret"] = json!(format!("otpauth://totp/Kite:AB1?secret={secret}&period=60"));
    let r = send(qr, KEY).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("period=60"), "{}", r.text);
    assert!(!r.text.contains(&secret), "{}", r.text);

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
async fn past_the_failure_limit_failures_get_429_but_valid_credentials_are_still_served() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let guess = || request(Method::GET, "/api/tokens/u1", &As::Key("guess"), None);
    for _ in 0..tokenbot::api::auth::MAX_FAILURES {
        t.send(guess()).await.expect_error(401, "unauthorized");
    }
    // Past the limit, a failure is 429 until the window ends...
    let r = t.send(guess()).await;
    r.expect_error(429, "too_many_failed_authentications");
    assert!(r.headers.contains_key("retry-after"));
    // ... but the right key from the same address is served: behind a proxy, that address is
    // every client's.
    t.send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await
        .expect(200);
    t.send(request(Method::GET, "/api/tokens/status", &jwt("u1"), None))
        .await
        .expect(200);
    // Another address still gets 401 for a failure.
    t.send_from("198.51.100.7:4000".parse().unwrap(), guess())
        .await
        .expect_error(401, "unauthorized");
    // Unauthenticated routes stay open.
    t.send(request(Method::GET, "/health", &As::Nobody, None))
        .await
        .expect(200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_failures_are_counted_per_forwarded_client() {
    // The test API's peer, 192.0.2.10, is the proxy.
    let t = TestApi::with(|c| c.server.trusted_proxies = vec!["192.0.2.0/24".into()]);
    t.seed("u1", "kite", Some(HOUR));
    let from = |client: &str, who: &As| {
        let mut req = request(Method::GET, "/api/tokens/u1", who, None);
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    let guesser = "203.0.113.66";
    for _ in 0..tokenbot::api::auth::MAX_FAILURES {
        t.send(from(guesser, &As::Key("guess")))
            .await
            .expect_error(401, "unauthorized");
    }
    t.send(from(guesser, &As::Key("guess")))
        .await
        .expect_error(429, "too_many_failed_authentications");
    // The trading backend behind the same proxy is another client.
    t.send(from("203.0.113.5", &As::Key("wrong")))
        .await
        .expect_error(401, "unauthorized");
    t.send(from("203.0.113.5", &KEY)).await.expect(200);
    // A peer that is no trusted proxy cannot pick its address: its header is ignored.
    let outsider: std::net::SocketAddr = "198.51.100.9:4000".parse().unwrap();
    for n in 0..tokenbot::api::auth::MAX_FAILURES {
        t.send_from(outsider, from(&format!("203.0.113.{n}"), &As::Key("guess")))
            .await
            .expect_error(401, "unauthorized");
    }
    t.send_from(outsider, from("203.0.113.200", &As::Key("guess")))
        .await
        .expect_error(429, "too_many_failed_authentications");
}

#[tokio::test]
async fn health_detailed_and_metrics_need_a_service_key_and_health_does_not() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    for path in ["/health/detailed", "/metrics"] {
        t.send(request(Method::GET, path, &As::Nobody, None))
            .await
            .expect_error(401, "unauthorized");
        t.send(request(Method::GET, path, &As::Key("not-a-key"), None))
            .await
            .expect_error(401, "unauthorized");
        t.send(request(Method::GET, path, &jwt("u1"), None))
            .await
            .expect_error(401, "unauthorized");
        t.send(request(Method::GET, path, &KEY, None))
            .await
            .expect(200);
    }
    // Prometheus sends its credentials as a bearer token.
    t.send(request(
        Method::GET,
        "/metrics",
        &As::BearerKey(BACKEND_KEY),
        None,
    ))
    .await
    .expect(200);
    t.send(request(Method::GET, "/health", &As::Nobody, None))
        .await
        .expect(200);
}

#[tokio::test]
async fn token_figures_are_counted_again_at_most_once_a_second() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR * 2));
    let active = || async {
        let r = t
            .send(request(Method::GET, "/health/detailed", &KEY, None))
            .await;
        r.expect(200);
        r.json["active_tokens"].as_u64().unwrap()
    };
    assert_eq!(active().await, 1);
    t.seed("u2", "kite", Some(HOUR * 2));
    // Within the second (on the daemon's clock), the figures counted before are served, to
    // `/metrics` too (its gauges are process-wide, shared by the tests running beside this one).
    t.clock.advance(999);
    assert_eq!(active().await, 1);
    t.send(request(Method::GET, "/metrics", &KEY, None))
        .await
        .expect(200);
    t.clock.advance(1);
    assert_eq!(active().await, 2);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR / 2));
    t.send(request(Method::GET, "/health", &As::Nobody, None))
        .await
        .expect(200);
    let r = t.send(request(Method::GET, "/metrics", &KEY, None)).await;
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

/// A wrong-typed value that an error message must not quote.
const ECHO: &str = "echo-me-not-7f3a";

/// How a route authenticates.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Guard {
    /// No credentials needed.
    Public,
    /// A user's JWT.
    Jwt,
    /// `X-API-Key`.
    Key,
    /// `X-API-Key` or `Authorization: Bearer <api key>` (`/api/integration`).
    Integration,
    /// `X-API-Key` or a user's JWT, which may act for its own user only.
    KeyOrJwt,
    /// The console's session cookie (HTML, not in the OpenAPI document): without a session a
    /// page sends the browser to the sign-in form (`/console` shows it) and a form is refused
    /// 403; an API key or a JWT is no session; a form also needs the session's CSRF token.
    Session,
}

/// What a route's JSON body is.
enum BodyKind {
    None,
    /// `good` passes extraction (and auth); `wrong_type` has a field of the wrong type; `missing`
    /// lacks a required field, with the status and code that earns.
    Required {
        good: Value,
        wrong_type: Value,
        missing: Option<(Value, u16, &'static str)>,
    },
    /// May be empty (which is not probed: it would act); otherwise as `Required`.
    Optional {
        good: Value,
        wrong_type: Value,
    },
}

/// Where a route names a broker, and what an unknown one earns.
enum BrokerAt {
    None,
    /// `{broker}` in the path: 404, with this code.
    Path(&'static str),
    /// `?broker=`: a filter; the status and code of a well-formed id no strategy has (`None`:
    /// a success with an empty result).
    Query(Option<(u16, &'static str)>),
    /// `"broker"` in the body: 422 `unknown_broker`.
    Body,
}

/// One row per route of `ROUTES`.
struct Row {
    method: Method,
    template: &'static str,
    /// The template filled in for user `u1` at `kite`.
    path: &'static str,
    guard: Guard,
    body: BodyKind,
    broker: BrokerAt,
    /// A request for something that does not exist (as the route's credentials): path, body,
    /// and the code of the 404.
    absent: Option<(&'static str, Option<Value>, &'static str)>,
}

fn rows() -> Vec<Row> {
    use BodyKind as B;
    use Guard as G;
    let row = |method: Method, template: &'static str, path: &'static str, guard: Guard| Row {
        method,
        template,
        path,
        guard,
        body: B::None,
        broker: BrokerAt::None,
        absent: None,
    };
    let mut credentials = kite_fields("1");
    credentials["broker"] = json!("kite");
    let mut credentials_wrong = credentials.clone();
    credentials_wrong["auto_refresh"] = json!(ECHO);
    let mut credentials_missing = credentials.clone();
    credentials_missing
        .as_object_mut()
        .unwrap()
        .remove("broker");
    let mut provision_wrong = kite_fields("1");
    provision_wrong["managed_externally"] = json!(1);
    let mut provision_missing = kite_fields("1");
    provision_missing
        .as_object_mut()
        .unwrap()
        .remove("password");
    vec![
        row(Method::GET, "/health", "/health", G::Public),
        row(Method::GET, "/health/detailed", "/health/detailed", G::Key),
        Row {
            body: B::Required {
                good: credentials,
                wrong_type: credentials_wrong,
                missing: Some((credentials_missing, 422, "invalid_body")),
            },
            broker: BrokerAt::Body,
            ..row(Method::POST, "/api/credentials", "/api/credentials", G::Jwt)
        },
        row(
            Method::GET,
            "/api/credentials/status",
            "/api/credentials/status",
            G::Jwt,
        ),
        Row {
            broker: BrokerAt::Query(Some((404, "no_account"))),
            absent: Some(("/api/credentials?broker=iifl", None, "no_account")),
            ..row(
                Method::DELETE,
                "/api/credentials",
                "/api/credentials",
                G::Jwt,
            )
        },
        Row {
            body: B::Required {
                good: json!({"broker": "kite", "auto_refresh": false}),
                wrong_type: json!({"broker": "kite", "auto_refresh": ECHO}),
                missing: Some((json!({"broker": "kite"}), 422, "invalid_body")),
            },
            broker: BrokerAt::Body,
            absent: Some((
                "/api/credentials/toggle",
                Some(json!({"broker": "iifl", "auto_refresh": false})),
                "no_account",
            )),
            ..row(
                Method::PATCH,
                "/api/credentials/toggle",
                "/api/credentials/toggle",
                G::Jwt,
            )
        },
        Row {
            body: B::Optional {
                good: json!({"broker": "kite"}),
                wrong_type: json!({"broker": 5}),
            },
            broker: BrokerAt::Body,
            absent: Some((
                "/api/tokens/refresh",
                Some(json!({"broker": "iifl"})),
                "no_account",
            )),
            ..row(
                Method::POST,
                "/api/tokens/refresh",
                "/api/tokens/refresh",
                G::Jwt,
            )
        },
        row(
            Method::GET,
            "/api/tokens/status",
            "/api/tokens/status",
            G::Jwt,
        ),
        Row {
            broker: BrokerAt::Query(Some((404, "no_valid_token"))),
            absent: Some(("/api/tokens/u9", None, "no_valid_token")),
            ..row(
                Method::GET,
                "/api/tokens/{userId}",
                "/api/tokens/u1",
                G::Key,
            )
        },
        row(
            Method::GET,
            "/api/tokens/events",
            "/api/tokens/events",
            G::Key,
        ),
        Row {
            broker: BrokerAt::Query(Some((404, "no_account"))),
            absent: Some(("/api/tokens/logs/u9", None, "no_account")),
            ..row(
                Method::GET,
                "/api/tokens/logs/{userId}",
                "/api/tokens/logs/u1",
                G::KeyOrJwt,
            )
        },
        Row {
            broker: BrokerAt::Query(None),
            ..row(
                Method::POST,
                "/api/integration/tokens/refresh-all",
                "/api/integration/tokens/refresh-all",
                G::Integration,
            )
        },
        Row {
            broker: BrokerAt::Query(Some((404, "no_account"))),
            absent: Some(("/api/integration/tokens/refresh/u9", None, "no_account")),
            ..row(
                Method::POST,
                "/api/integration/tokens/refresh/{userId}",
                "/api/integration/tokens/refresh/u1",
                G::Integration,
            )
        },
        Row {
            body: B::Required {
                good: kite_fields("1"),
                wrong_type: provision_wrong,
                missing: Some((provision_missing, 422, "invalid_fields")),
            },
            broker: BrokerAt::Path("unknown_broker"),
            ..row(
                Method::PUT,
                "/api/users/{userId}/accounts/{broker}",
                "/api/users/u1/accounts/kite",
                G::Key,
            )
        },
        Row {
            body: B::Required {
                good: json!({"auto_refresh": false}),
                wrong_type: json!({"auto_refresh": ECHO}),
                missing: Some((json!({}), 422, "nothing_to_change")),
            },
            broker: BrokerAt::Path("no_account"),
            absent: Some((
                "/api/users/u9/accounts/kite",
                Some(json!({"auto_refresh": false})),
                "no_account",
            )),
            ..row(
                Method::PATCH,
                "/api/users/{userId}/accounts/{broker}",
                "/api/users/u1/accounts/kite",
                G::Key,
            )
        },
        Row {
            broker: BrokerAt::Path("no_account"),
            absent: Some(("/api/users/u9/accounts/kite", None, "no_account")),
            ..row(
                Method::DELETE,
                "/api/users/{userId}/accounts/{broker}",
                "/api/users/u1/accounts/kite",
                G::Key,
            )
        },
        Row {
            broker: BrokerAt::Query(None),
            ..row(Method::GET, "/api/users", "/api/users", G::Key)
        },
        Row {
            broker: BrokerAt::Path("unknown_broker"),
            absent: Some(("/api/login/kite/u9/url", None, "no_account")),
            ..row(
                Method::GET,
                "/api/login/{broker}/{userId}/url",
                "/api/login/kite/u1/url",
                G::KeyOrJwt,
            )
        },
        Row {
            broker: BrokerAt::Path("invalid_link"),
            ..row(
                Method::GET,
                "/login/{broker}/{userId}",
                "/login/kite/u1?until=4102444800000&sig=00",
                G::Public,
            )
        },
        Row {
            broker: BrokerAt::Path("unknown_broker"),
            ..row(
                Method::GET,
                "/callback/{broker}",
                "/callback/kite?state=0000",
                G::Public,
            )
        },
        Row {
            broker: BrokerAt::Path("no_such_hook"),
            ..row(
                Method::POST,
                "/webhook/{broker}/{hook}",
                "/webhook/kite/0000",
                G::Public,
            )
        },
        Row {
            body: B::Required {
                good: json!({"api_key": "app-key-1"}),
                wrong_type: json!({"api_key": [ECHO]}),
                missing: Some((json!({}), 422, "invalid_body")),
            },
            broker: BrokerAt::Path("unknown_broker"),
            ..row(
                Method::POST,
                "/api/webhooks/{broker}",
                "/api/webhooks/kite",
                G::Key,
            )
        },
        row(Method::GET, "/openapi.json", "/openapi.json", G::Public),
        row(Method::GET, "/metrics", "/metrics", G::Integration),
        row(Method::GET, "/console", "/console", G::Session),
        row(
            Method::GET,
            "/console/console.css",
            "/console/console.css",
            G::Public,
        ),
        row(
            Method::GET,
            "/console/console.js",
            "/console/console.js",
            G::Public,
        ),
        row(
            Method::POST,
            "/console/refresh-all",
            "/console/refresh-all",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/refresh-all",
            "/console/refresh-all",
            G::Session,
        ),
        // With no run to follow: 204, which tells an `EventSource` not to reconnect.
        row(
            Method::GET,
            "/console/refresh-all/events",
            "/console/refresh-all/events",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/accounts/new",
            "/console/accounts/new",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/new",
            "/console/accounts/new",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/accounts/{userId}/{broker}/credentials",
            "/console/accounts/u1/kite/credentials",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/{userId}/{broker}/credentials",
            "/console/accounts/u1/kite/credentials",
            G::Session,
        ),
        // Takes the key in its form: a wrong one is 401 (and counted), as everywhere.
        row(
            Method::POST,
            "/console/sign-in",
            "/console/sign-in",
            G::Public,
        ),
        row(
            Method::POST,
            "/console/sign-out",
            "/console/sign-out",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/accounts",
            "/console/accounts",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/accounts/{userId}/{broker}",
            "/console/accounts/u1/kite",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/{userId}/{broker}/login",
            "/console/accounts/u1/kite/login",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/{userId}/{broker}/assisted",
            "/console/accounts/u1/kite/assisted",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/{userId}/{broker}/flags",
            "/console/accounts/u1/kite/flags",
            G::Session,
        ),
        row(
            Method::GET,
            "/console/accounts/{userId}/{broker}/remove",
            "/console/accounts/u1/kite/remove",
            G::Session,
        ),
        row(
            Method::POST,
            "/console/accounts/{userId}/{broker}/remove",
            "/console/accounts/u1/kite/remove",
            G::Session,
        ),
    ]
}

/// The console's rows (not in the OpenAPI document; HTML, not the JSON error shape): what a
/// request without a session, with the wrong kind of credentials, or (for a form) without the
/// session's CSRF token earns. None of them acts.
async fn check_console_row(t: &TestApi, row: &Row, session: &ConsoleSession) {
    let route = format!("{} {}", row.method, row.template);
    let html = |r: &Reply| {
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    };
    let is_form = row.method == Method::POST;
    let form = |csrf: &str| format!("action=pause&confirm=yes&key=not-a-key&csrf={csrf}");
    let without: Vec<(&str, axum::http::Request<axum::body::Body>)> = vec![
        (
            "no session",
            console_request(
                row.method.clone(),
                row.path,
                None,
                is_form.then(|| form("")).as_deref(),
            ),
        ),
        ("an API key", {
            let mut r = console_request(
                row.method.clone(),
                row.path,
                None,
                is_form.then(|| form("")).as_deref(),
            );
            r.headers_mut()
                .insert("x-api-key", BACKEND_KEY.parse().unwrap());
            r
        }),
        ("a user's JWT", {
            let mut r = console_request(
                row.method.clone(),
                row.path,
                None,
                is_form.then(|| form("")).as_deref(),
            );
            let As::Jwt(jwt) = jwt("u1") else {
                unreachable!()
            };
            r.headers_mut()
                .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
            r
        }),
    ];
    for (what, req) in without {
        let r = t.send(req).await;
        match row.guard {
            Guard::Public if row.template == "/console/sign-in" => {
                assert_eq!(r.status.as_u16(), 401, "{route}: {what}: {}", r.text);
                assert!(html(&r) && !r.headers.contains_key("set-cookie"), "{route}");
            }
            Guard::Public => {
                assert_eq!(r.status.as_u16(), 200, "{route}: {what}");
            }
            _ if row.template == "/console" => {
                assert_eq!(r.status.as_u16(), 200, "{route}: {what}");
                assert!(
                    r.text.contains("action=\"/console/sign-in\""),
                    "{route}: {what}"
                );
            }
            _ if is_form => {
                assert_eq!(r.status.as_u16(), 403, "{route}: {what}: {}", r.text);
                assert!(html(&r), "{route}: {what}");
            }
            _ => {
                assert_eq!(r.status.as_u16(), 303, "{route}: {what}: {}", r.text);
                assert_eq!(r.headers["location"], "/console", "{route}: {what}");
            }
        }
    }
    if row.guard == Guard::Session {
        if is_form {
            for csrf in ["", "00"] {
                let r = t
                    .send(console_request(
                        row.method.clone(),
                        row.path,
                        Some(session),
                        Some(&form(csrf)),
                    ))
                    .await;
                assert_eq!(r.status.as_u16(), 403, "{route}: CSRF {csrf:?}: {}", r.text);
            }
        } else {
            let r = t
                .send(console_request(
                    row.method.clone(),
                    row.path,
                    Some(session),
                    None,
                ))
                .await;
            if row.template == "/console/refresh-all/events" {
                assert_eq!(r.status.as_u16(), 204, "{route}: with the session, no run");
                return;
            }
            assert_eq!(
                r.status.as_u16(),
                200,
                "{route}: with the session: {}",
                r.text
            );
            assert!(html(&r), "{route}");
            assert_eq!(r.headers["cache-control"], "no-store", "{route}");
            assert_eq!(r.headers["x-frame-options"], "DENY", "{route}");
        }
    }
}

/// Every error body is `{"error":{"code","message"}}` (those keys only, non-empty strings), as JSON.
fn assert_error_shape(r: &Reply, what: &str) {
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{what}: not an error: {} {}",
        r.status,
        r.text
    );
    assert!(
        r.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{what}: not JSON: {:?}",
        r.headers.get("content-type")
    );
    let top = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {}", r.text));
    assert_eq!(top.len(), 1, "{what}: {}", r.text);
    let error = top["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {}", r.text));
    let keys: Vec<&str> = error.keys().map(String::as_str).collect();
    assert_eq!(keys, ["code", "message"], "{what}: {}", r.text);
    for key in keys {
        assert!(
            error[key].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {key} in {}",
            r.text
        );
    }
}

/// Every route of `ROUTES`, by a table that must name each of them: 401 without and with wrong
/// credentials (the wrong kind included), 403 for another user's JWT, 404 for what is absent;
/// for bodies 400 on malformed JSON, 415 on another content type, 413 over the limit (with and
/// without a length), 422 on a wrong type, a missing field or a non-object; an unknown broker is
/// 404 in a path and 422 in a body, and a `?broker=` filter naming no strategy finds nothing (404
/// on routes for one user's accounts, an empty success on list and batch routes); a malformed
/// `?broker=` is 400. Every error has the one JSON shape and a status the OpenAPI document lists
/// for the operation.
#[tokio::test]
async fn every_route_refuses_bad_requests_with_the_documented_error() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU32, Ordering};

    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    let doc: Value = serde_json::from_str(tokenbot::api::openapi::document()).unwrap();
    let rows = rows();
    let undocumented = std::cell::RefCell::new(BTreeSet::new());

    let listed: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_owned()))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(listed.len(), rows.len(), "a route has two rows");
    assert_eq!(
        listed, routed,
        "the table and ROUTES differ: add a row for each new route"
    );

    // A fresh peer address per request keeps the failed-authentication limit out of the way.
    let next = AtomicU32::new(1);
    let send = |req: axum::http::Request<axum::body::Body>| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let peer = std::net::SocketAddr::from(([10, 9, (n >> 8) as u8, n as u8], 40000));
        t.send_from(peer, req)
    };

    let wrong_secret = As::Jwt(jwt_with(
        json!({"sub": "u1", "exp": now_secs() + 3600}),
        "not-the-jwt-secret-0123456789",
    ));
    let expired = As::Jwt(jwt_with(
        json!({"sub": "u1", "exp": now_secs() - 3600}),
        JWT_SECRET,
    ));
    let unsigned = As::Jwt(jwt_none("u1"));
    let huge = format!(
        "{{\"broker\": \"kite\", \"pad\": \"{}\"}}",
        "x".repeat(BODY_LIMIT)
    );

    let console_session = t.console_sign_in(BACKEND_KEY).await;
    for row in &rows {
        let route = format!("{} {}", row.method, row.template);
        let operation = &doc["paths"][row.template][row.method.as_str().to_lowercase()];
        if row.template.starts_with("/console") {
            assert!(
                operation.is_null(),
                "{route}: the console is not in the OpenAPI document"
            );
            check_console_row(&t, row, &console_session).await;
            continue;
        }
        assert!(
            operation.is_object(),
            "{route}: not in the OpenAPI document"
        );
        let documented = |status: u16| operation["responses"][status.to_string()].is_object();
        let good_who = match row.guard {
            Guard::Public | Guard::Key | Guard::KeyOrJwt | Guard::Integration => KEY,
            Guard::Jwt => jwt("u1"),
            Guard::Session => unreachable!("the console's rows are checked above"),
        };
        let good_body = match &row.body {
            BodyKind::None => None,
            BodyKind::Required { good, .. } | BodyKind::Optional { good, .. } => Some(good.clone()),
        };
        // Send, and check the status, code, error shape and documentation of an error.
        let expect = |what: &str, req, status: u16, code: &'static str| {
            let what = format!("{route}: {what}");
            let (send, undocumented) = (&send, &undocumented);
            async move {
                let r = send(req).await;
                assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
                assert_error_shape(&r, &what);
                assert_eq!(r.code(), code, "{what}: {}", r.text);
                if !documented(status) {
                    undocumented
                        .borrow_mut()
                        .insert(format!("{status}: {what}"));
                }
                r
            }
        };

        // Credentials.
        let wrong: Vec<(&str, As)> = match row.guard {
            Guard::Public | Guard::Session => vec![],
            Guard::Jwt => vec![
                ("a JWT signed with another secret", wrong_secret.clone()),
                ("an expired JWT", expired.clone()),
                ("an unsigned JWT", unsigned.clone()),
                ("an API key in X-API-Key", KEY),
                ("an API key as bearer", As::BearerKey(BACKEND_KEY)),
            ],
            Guard::Key => vec![
                ("a wrong API key", As::Key("not-a-key")),
                ("a user's JWT", jwt("u1")),
                ("the API key as bearer", As::BearerKey(BACKEND_KEY)),
            ],
            Guard::Integration => vec![
                ("a wrong API key", As::Key("not-a-key")),
                ("a wrong bearer key", As::BearerKey("not-a-key")),
                ("a user's JWT", jwt("u1")),
            ],
            Guard::KeyOrJwt => vec![
                ("a wrong API key", As::Key("not-a-key")),
                ("a JWT signed with another secret", wrong_secret.clone()),
                ("an expired JWT", expired.clone()),
                ("an unsigned JWT", unsigned.clone()),
            ],
        };
        if row.guard == Guard::Public {
            for who in [As::Nobody, As::Key("not-a-key"), wrong_secret.clone()] {
                let r = send(request(row.method.clone(), row.path, &who, None)).await;
                assert!(
                    ![401, 403].contains(&r.status.as_u16()),
                    "{route} is public but answered {} to {who:?}",
                    r.status
                );
            }
        } else {
            let r = expect(
                "no credentials",
                request(row.method.clone(), row.path, &As::Nobody, good_body.clone()),
                401,
                "unauthorized",
            )
            .await;
            assert_eq!(r.headers["www-authenticate"], "Bearer", "{route}");
            for (what, who) in wrong {
                expect(
                    what,
                    request(row.method.clone(), row.path, &who, good_body.clone()),
                    401,
                    "unauthorized",
                )
                .await;
            }
            // Past the failed-authentication limit, one address's failures are answered 429,
            // and its good credentials are still served.
            let n = next.fetch_add(1, Ordering::Relaxed);
            let peer = std::net::SocketAddr::from(([10, 10, (n >> 8) as u8, n as u8], 40000));
            let anonymous = || request(row.method.clone(), row.path, &As::Nobody, None);
            for _ in 0..tokenbot::api::auth::MAX_FAILURES {
                let r = t.send_from(peer, anonymous()).await;
                assert_eq!(r.status.as_u16(), 401, "{route}: {}", r.text);
            }
            let r = t.send_from(peer, anonymous()).await;
            let what = format!("{route}: a failure after too many failures");
            assert_eq!(r.status.as_u16(), 429, "{what}: {}", r.text);
            assert_error_shape(&r, &what);
            assert_eq!(r.code(), "too_many_failed_authentications", "{what}");
            if !documented(429) {
                undocumented.borrow_mut().insert(format!("429: {what}"));
            }
            // (Only where that changes nothing: the table's requests are not to act.)
            if row.method == Method::GET {
                // The status only: the body of `/api/tokens/events` never ends.
                let status = t
                    .status_from(peer, request(Method::GET, row.path, &good_who, None))
                    .await;
                assert!(
                    ![401, 429].contains(&status.as_u16()),
                    "{route}: good credentials after too many failures: {status}"
                );
            }
        }
        if row.guard == Guard::KeyOrJwt && row.template.contains("{userId}") {
            expect(
                "another user's JWT",
                request(row.method.clone(), row.path, &jwt("u2"), None),
                403,
                "forbidden",
            )
            .await;
        }
        if row.template.contains("{userId}") {
            let path = row.path.replace("/u1", "/a%20b");
            assert_ne!(path, row.path);
            expect(
                "an invalid user id",
                request(row.method.clone(), &path, &good_who, good_body.clone()),
                400,
                "invalid_id",
            )
            .await;
        }
        if let Some((path, body, code)) = &row.absent {
            expect(
                "something absent",
                request(row.method.clone(), path, &good_who, body.clone()),
                404,
                code,
            )
            .await;
        }

        // Bodies.
        if let BodyKind::Required { wrong_type, .. } | BodyKind::Optional { wrong_type, .. } =
            &row.body
        {
            let raw_body = |content_type: &str, text: &str| {
                raw(row.method.clone(), row.path, &good_who, content_type, text)
            };
            for text in ["{\"broker\": ", "{\"broker\": \"kite\",}", "{} {}", "nope"] {
                expect(
                    &format!("malformed JSON {text:?}"),
                    raw_body("application/json", text),
                    400,
                    "malformed_json",
                )
                .await;
            }
            let r = expect(
                "a wrong type",
                request(
                    row.method.clone(),
                    row.path,
                    &good_who,
                    Some(wrong_type.clone()),
                ),
                422,
                "invalid_body",
            )
            .await;
            assert!(
                !r.text.contains(ECHO),
                "{route}: a value was echoed: {}",
                r.text
            );
            for not_an_object in [json!([1, 2]), json!("kite"), json!(null)] {
                expect(
                    &format!("a body that is not an object ({not_an_object})"),
                    request(row.method.clone(), row.path, &good_who, Some(not_an_object)),
                    422,
                    "invalid_body",
                )
                .await;
            }
            let mut unknown_field = good_body.clone().unwrap();
            unknown_field["no_such_field"] = json!(true);
            expect(
                "an unknown field",
                request(row.method.clone(), row.path, &good_who, Some(unknown_field)),
                422,
                "invalid_body",
            )
            .await;
            if let BodyKind::Required {
                missing: Some((body, status, code)),
                ..
            } = &row.body
            {
                expect(
                    "a missing field",
                    request(row.method.clone(), row.path, &good_who, Some(body.clone())),
                    *status,
                    code,
                )
                .await;
            }
            expect(
                "a text/plain body",
                raw_body("text/plain", "{}"),
                415,
                "unsupported_media_type",
            )
            .await;
            expect(
                "a body over the limit",
                raw_body("application/json", &huge),
                413,
                "payload_too_large",
            )
            .await;
            // The same without a Content-Length: the limit holds on a streamed body too.
            let mut streamed = raw_body("application/json", "");
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = huge
                .as_bytes()
                .chunks(512)
                .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
                .collect();
            *streamed.body_mut() = axum::body::Body::from_stream(futures::stream::iter(chunks));
            expect(
                "a streamed body over the limit",
                streamed,
                413,
                "payload_too_large",
            )
            .await;
        }

        // Unknown brokers.
        match &row.broker {
            BrokerAt::None => {}
            BrokerAt::Path(code) => {
                let path = row.path.replace("/kite", "/nosuch");
                assert_ne!(path, row.path);
                expect(
                    "an unknown broker in the path",
                    request(row.method.clone(), &path, &good_who, good_body.clone()),
                    404,
                    code,
                )
                .await;
            }
            BrokerAt::Body => {
                let mut body = good_body.clone().unwrap();
                body["broker"] = json!("nosuch");
                let r = expect(
                    "an unknown broker in the body",
                    request(row.method.clone(), row.path, &good_who, Some(body)),
                    422,
                    "unknown_broker",
                )
                .await;
                assert!(r.text.contains("nosuch"), "{route}: {}", r.text);
            }
            BrokerAt::Query(answer) => {
                let path = format!("{}?broker=nosuch", row.path);
                match answer {
                    Some((status, code)) => {
                        expect(
                            "an unknown broker in the query",
                            request(row.method.clone(), &path, &good_who, None),
                            *status,
                            code,
                        )
                        .await;
                    }
                    None => {
                        let r = send(request(row.method.clone(), &path, &good_who, None)).await;
                        r.expect(200);
                        assert_eq!(r.json["total"], 0, "{route}: {}", r.text);
                    }
                }
                for bad in ["Not%20Valid", "a%2Fb", "%FF"] {
                    let path = format!("{}?broker={bad}", row.path);
                    let r = send(request(row.method.clone(), &path, &good_who, None)).await;
                    r.expect(400);
                    assert_error_shape(&r, &format!("{route}: ?broker={bad}"));
                    assert!(
                        ["invalid_id", "invalid_query"].contains(&r.code()),
                        "{route}: ?broker={bad}: {}",
                        r.text
                    );
                    if !documented(400) {
                        undocumented
                            .borrow_mut()
                            .insert(format!("400: {route}: ?broker={bad}"));
                    }
                }
            }
        }
    }
    let undocumented = undocumented.into_inner();
    assert!(
        undocumented.is_empty(),
        "answers the OpenAPI document does not list:\n{}",
        undocumented.into_iter().collect::<Vec<_>>().join("\n")
    );
    // Nothing above acted: the one account is as it was.
    let key = tokenbot::vault::AccountKey::parse("u1", "kite").unwrap();
    let account = t.vault().get_account(&key).unwrap().unwrap();
    assert!(account.auto_refresh && !account.managed_externally);
    assert_eq!(t.vault().list_accounts().unwrap().len(), 1);

    // Only a miss turns into `unknown_broker`: an account whose strategy is gone still toggles.
    t.seed("u3", "gone", None);
    let r = send(request(
        Method::PATCH,
        "/api/credentials/toggle",
        &jwt("u3"),
        Some(json!({"broker": "gone", "auto_refresh": false})),
    ))
    .await;
    r.expect(200);
    assert_eq!(r.json["state"], "paused");
}
