//! The REST API host: /session/token, /user/profile.

use super::*;

pub(super) fn kite_version_ok(headers: &HeaderMap) -> bool {
    headers.get("x-kite-version").and_then(|v| v.to_str().ok()) == Some("3")
}

/// The 429 of `SessionTokenRateLimited` / `SessionTokenAlwaysRateLimited`, if due: judged for the
/// account of the request token (or else of the api_key), before anything else is checked, as a
/// gateway's rate limiter would. Nothing is consumed.
fn session_token_rate_limit(
    inner: &mut Inner,
    s: &KiteState,
    request_token: &str,
    api_key: &str,
    now: i64,
) -> Option<Response> {
    let key = match inner.request_tokens.get(request_token) {
        Some(rt) => rt.user.to_ascii_uppercase(),
        None => inner
            .accounts
            .iter()
            .find(|(_, a)| a.user.api_key == api_key)
            .map(|(k, _)| k.clone())?,
    };
    let login = (inner.request_tokens.get(request_token)).and_then(|rt| rt.login.clone());
    let account = inner.accounts.get_mut(&key)?;
    if let Some(login) = &login {
        s.recorder.account_login_step(&account.user.user_id, login);
    }
    let limited = match account.user.behaviour {
        KiteBehaviour::SessionTokenAlwaysRateLimited => {
            s.recorder.login_end(&account.user.user_id);
            if let Some(login) = &login {
                s.recorder.account_login_end(&account.user.user_id, login);
            }
            true
        }
        KiteBehaviour::SessionTokenRateLimited => {
            let first = *account.first_session_token_ms.get_or_insert(now);
            now - first < SESSION_TOKEN_LIMIT_MS
        }
        _ => false,
    };
    limited.then(|| {
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "NetworkException",
            "Too many requests",
        )
    })
}

/// How long `SessionTokenRateLimited` answers 429, on the fake's clock.
const SESSION_TOKEN_LIMIT_MS: i64 = 5_000;

/// nginx's own 503 page.
fn nginx_503() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html")],
        "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    )
        .into_response()
}

/// S5.
pub(super) async fn session_token(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (api_key, request_token, checksum) =
        (get("api_key"), get("request_token"), get("checksum"));
    let now = (s.now)();
    let mut inner = s.lock();
    if let Some(r) = session_token_rate_limit(&mut inner, &s, &request_token, &api_key, now) {
        return r;
    }
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
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
    let login = rt.login.clone();
    if let Some(login) = &login {
        s.recorder.account_login_step(&user, login);
    }
    let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    };
    let end = |r: Response| {
        s.recorder.login_end(&user);
        if let Some(login) = &login {
            s.recorder.account_login_end(&user, login);
        }
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
    let mut inner = s.lock();
    let user = match inner.access.get(token) {
        Some(a) if a.api_key == api_key && now < a.expires_ms => a.user.to_ascii_uppercase(),
        _ => return refused(),
    };
    if let Some(account) = inner.accounts.get_mut(&user)
        && account.user.behaviour == KiteBehaviour::ProfileUnavailable
        && account.profile_503s < 2
    {
        account.profile_503s += 1;
        return nginx_503();
    }
    match inner.access.get(token) {
        Some(a) => success(json!({
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
