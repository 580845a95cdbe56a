//! The REST API host: /session/token, /user/profile.

use super::*;

pub(super) fn kite_version_ok(headers: &HeaderMap) -> bool {
    headers.get("x-kite-version").and_then(|v| v.to_str().ok()) == Some("3")
}

/// S5.
pub(super) async fn session_token(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (api_key, request_token, checksum) =
        (get("api_key"), get("request_token"), get("checksum"));
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(rt) = inner.request_tokens.get(&request_token) else {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    };
    if rt.api_key != api_key || now - rt.created_ms > REQUEST_TOKEN_TTL_MS {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    }
    let user = rt.user.clone();
    let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    };
    let end = |r: Response| {
        s.recorder.login_end(&user);
        r
    };
    if account.user.behaviour == KiteBehaviour::ServerError {
        return end(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GeneralException",
            "An unexpected error occurred.",
        ));
    }
    if sha256_hex(&[&api_key, &request_token, &account.user.api_secret]) != checksum {
        return end(error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Invalid `checksum`.",
        ));
    }
    let user_name = format!("User {}", account.user.user_id);
    inner.request_tokens.remove(&request_token);
    let access_token = random_token(32);
    inner.access.insert(
        access_token.clone(),
        Access {
            user: user.clone(),
            api_key: api_key.clone(),
            expires_ms: ist::next_at(now, 6),
        },
    );
    end(success(json!({
        "user_type": "individual",
        "email": format!("{}@example.com", user.to_ascii_lowercase()),
        "user_name": user_name,
        "user_shortname": user,
        "broker": "ZERODHA",
        "exchanges": ["NSE", "BSE", "NFO", "MCX"],
        "products": ["CNC", "NRML", "MIS"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": null,
        "user_id": user,
        "api_key": api_key,
        "access_token": access_token,
        "public_token": random_token(32),
        "enctoken": random_token(40),
        "refresh_token": "",
        "silo": "",
        "login_time": ist::format(now),
        "meta": {"demat_consent": "physical"}
    })))
}

/// S7.
pub(super) async fn session_delete(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let token = q.get("access_token").cloned().unwrap_or_default();
    let mut inner = s.lock();
    match inner.access.get(&token) {
        Some(a) if Some(&a.api_key) == q.get("api_key") => {
            inner.access.remove(&token);
            success(json!(true))
        }
        _ => error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Incorrect `api_key` or `access_token`.",
        ),
    }
}

/// S6.
pub(super) async fn user_profile(State(s): State<Arc<KiteState>>, headers: HeaderMap) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let refused = || {
        error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Incorrect `api_key` or `access_token`.",
        )
    };
    let Some((api_key, token)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .and_then(|v| v.split_once(':'))
    else {
        return refused();
    };
    let now = (s.now)();
    let inner = s.lock();
    match inner.access.get(token) {
        Some(a) if a.api_key == api_key && now < a.expires_ms => success(json!({
            "user_id": a.user,
            "user_name": format!("User {}", a.user),
            "user_shortname": a.user,
            "email": format!("{}@example.com", a.user.to_ascii_lowercase()),
            "user_type": "individual",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "BSE"],
            "products": ["CNC", "MIS"],
            "order_types": ["MARKET", "LIMIT"],
            "avatar_url": null,
            "meta": {"demat_consent": "physical"}
        })),
        _ => refused(),
    }
}
