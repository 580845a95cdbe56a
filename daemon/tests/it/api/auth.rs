//! JWTs and API keys: `alg: none`, expired, not yet valid (`nbf`), another secret, a missing
//! claim, a missing `exp` are all 401; `iss` and `aud` are checked when configured and `aud` is
//! ignored when not; the user claim falls back from `sub` to `userId` to `id`; a configured claim
//! is used alone; without a JWT secret no JWT passes.

use super::support::*;
use axum::http::Method;
use serde_json::json;

async fn status_as(t: &TestApi, token: String) -> Reply {
    t.send(request(
        Method::GET,
        "/api/credentials/status",
        &As::Jwt(token),
        None,
    ))
    .await
}

#[tokio::test]
async fn bad_jwts_are_refused_with_401() {
    let t = TestApi::new();
    let exp = now_secs() + 3600;
    let cases = [
        ("alg none", jwt_none("u1")),
        (
            "expired",
            jwt_with(json!({"sub": "u1", "exp": now_secs() - 3600}), JWT_SECRET),
        ),
        (
            "not valid before an hour from now",
            jwt_with(
                json!({"sub": "u1", "exp": exp, "nbf": now_secs() + 3600}),
                JWT_SECRET,
            ),
        ),
        (
            "other secret",
            jwt_with(json!({"sub": "u1", "exp": exp}), "another-secret"),
        ),
        (
            "no user claim",
            jwt_with(json!({"name": "u1", "exp": exp}), JWT_SECRET),
        ),
        ("no exp", jwt_with(json!({"sub": "u1"}), JWT_SECRET)),
        (
            "empty user claim",
            jwt_with(json!({"sub": "", "exp": exp}), JWT_SECRET),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let r = status_as(&t, token).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
        assert_eq!(r.code(), "unauthorized", "{what}");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{what}");
    }
    // HS512 with the right secret is still not HS256.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "u1", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    status_as(&t, hs512).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn the_user_claim_falls_back_from_sub_to_user_id_to_id() {
    let t = TestApi::new();
    let exp = now_secs() + 3600;
    for (claims, user) in [
        (json!({"sub": "a1", "userId": "b1", "exp": exp}), "a1"),
        (json!({"userId": "b1", "id": "c1", "exp": exp}), "b1"),
        (json!({"id": 28748327, "exp": exp}), "28748327"),
    ] {
        let r = status_as(&t, jwt_with(claims, JWT_SECRET)).await;
        r.expect(200);
        assert_eq!(r.json["user_id"], user);
    }
}

#[tokio::test]
async fn a_configured_user_claim_is_used_alone() {
    let t = TestApi::with(|c| c.auth.user_claim = "uid".into());
    let exp = now_secs() + 3600;
    let r = status_as(
        &t,
        jwt_with(json!({"uid": "z9", "sub": "a1", "exp": exp}), JWT_SECRET),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json["user_id"], "z9");
    status_as(&t, jwt_with(json!({"sub": "a1", "exp": exp}), JWT_SECRET))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn without_a_jwt_secret_no_jwt_passes() {
    let t = TestApi::with(|c| c.auth.jwt_secret = None);
    let token = jwt_with(json!({"sub": "u1", "exp": now_secs() + 3600}), JWT_SECRET);
    status_as(&t, token).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn api_keys_by_header_and_bearer_where_allowed() {
    let t = TestApi::new();
    t.seed("u1", "kite", Some(HOUR));
    for who in [KEY, As::Key(ENV_KEY)] {
        t.send(request(Method::GET, "/api/users", &who, None))
            .await
            .expect(200);
    }
    // The digest itself is not a key.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        BACKEND_KEY.as_bytes(),
    ));
    let digest: &'static str = Box::leak(digest.into_boxed_str());
    t.send(request(Method::GET, "/api/users", &As::Key(digest), None))
        .await
        .expect_error(401, "unauthorized");
    // Bearer keys only on the integration routes.
    t.send(request(
        Method::GET,
        "/api/users",
        &As::BearerKey(BACKEND_KEY),
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    // key|JWT routes: a key acts for anyone, a JWT for its own user only.
    t.send(request(Method::GET, "/api/tokens/logs/u1", &KEY, None))
        .await
        .expect(200);
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
        &As::Jwt(jwt_none("u1")),
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_token_carrying_aud_is_accepted_when_no_audience_is_configured() {
    let t = TestApi::new();
    let exp = now_secs() + 3600;
    for aud in [json!("some-other-service"), json!(["a", "b"])] {
        let token = jwt_with(json!({"sub": "u1", "exp": exp, "aud": aud}), JWT_SECRET);
        status_as(&t, token).await.expect(200);
    }
    let past = jwt_with(
        json!({"sub": "u1", "exp": exp, "nbf": now_secs() - 60}),
        JWT_SECRET,
    );
    status_as(&t, past).await.expect(200);
}

#[tokio::test]
async fn a_configured_issuer_and_audience_are_required_to_match() {
    let t = TestApi::with(|c| {
        c.auth.jwt_issuer = Some("https://id.example.com".into());
        c.auth.jwt_audience = Some("tokenbot".into());
    });
    let exp = now_secs() + 3600;
    let good = json!({"sub": "u1", "exp": exp, "iss": "https://id.example.com", "aud": "tokenbot"});
    status_as(&t, jwt_with(good.clone(), JWT_SECRET))
        .await
        .expect(200);
    let mut listed = good.clone();
    listed["aud"] = json!(["billing", "tokenbot"]);
    status_as(&t, jwt_with(listed, JWT_SECRET))
        .await
        .expect(200);
    for (what, change) in [
        ("another issuer", ("iss", json!("https://evil.example.com"))),
        ("another audience", ("aud", json!("billing"))),
        ("no issuer", ("iss", serde_json::Value::Null)),
        ("no audience", ("aud", serde_json::Value::Null)),
    ] {
        let mut claims = good.clone();
        match change.1 {
            serde_json::Value::Null => {
                claims.as_object_mut().unwrap().remove(change.0);
            }
            value => claims[change.0] = value,
        }
        let r = status_as(&t, jwt_with(claims, JWT_SECRET)).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
    }
}
