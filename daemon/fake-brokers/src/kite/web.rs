//! The web login host: /connect/login, /api/login, /api/twofa, /connect/finish.

use super::*;

/// The app redirect carrying `request_token`, with `redirect_params` echoed.
pub(super) fn final_redirect(
    redirect_url: &str,
    redirect_params: Option<&str>,
    token: &str,
    old_style: bool,
) -> String {
    let mut pairs: Vec<(String, String)> = redirect_params
        .map(|p| {
            url::form_urlencoded::parse(p.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if old_style {
        pairs.push(("request_token".into(), token.into()));
        pairs.push(("action".into(), "login".into()));
        pairs.push(("status".into(), "success".into()));
    } else {
        pairs.extend([
            ("action".into(), "login".into()),
            ("type".into(), "login".into()),
            ("status".into(), "success".into()),
            ("request_token".into(), token.into()),
        ]);
    }
    with_query(redirect_url, &pairs)
}

pub(super) fn behaviour_of_app(inner: &Inner, api_key: &str) -> Option<KiteBehaviour> {
    inner
        .accounts
        .values()
        .find(|a| a.user.api_key == api_key)
        .map(|a| a.user.behaviour)
}

/// An Akamai "Access Denied" page, as a WAF answers before the application sees the request.
fn waf_403() -> Response {
    let reference = random_token(8).to_ascii_lowercase();
    let mut r = (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html")],
        format!(
            "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n\
             You don't have permission to access \"http&#58;&#47;&#47;kite&#46;zerodha&#46;com&#47;api&#47;login\" on this server.<P>\n\
             Reference&#32;&#35;18&#46;{reference}&#46;1765030000&#46;2b4c6d8e\n\
             <P>https&#58;&#47;&#47;errors&#46;edgesuite&#46;net&#47;18&#46;{reference}\n</BODY>\n</HTML>\n"
        ),
    )
        .into_response();
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("AkamaiGHost"));
    r
}

/// S1 / S1a.
pub(super) async fn connect_login(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let api_key = q.get("api_key").cloned().unwrap_or_default();
    let mut inner = s.lock();
    let Some(behaviour) = behaviour_of_app(&inner, &api_key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid `api_key`.",
        );
    };
    if behaviour == KiteBehaviour::Cloudflare {
        let mut r = html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>",
        );
        r.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("cloudflare"));
        r.headers_mut()
            .insert("cf-ray", HeaderValue::from_static("8a1b2c3d4e5f-BOM"));
        return r;
    }
    if let Some(sess_id) = q.get("sess_id") {
        // S1a, or the extra hop of `ExtraHop` once the session is authenticated.
        let Some(session) = inner.sessions.get(sess_id) else {
            return html(
                StatusCode::BAD_REQUEST,
                "<html><body>Invalid session</body></html>",
            );
        };
        if session.authenticated && q.contains_key("skip_session") {
            let user = session.user.clone().unwrap_or_default();
            let redirect_params = session.redirect_params.clone();
            let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
                return html(
                    StatusCode::BAD_REQUEST,
                    "<html><body>Invalid session</body></html>",
                );
            };
            let redirect_url = account.user.redirect_url.clone();
            let login = cookies(&headers).remove("kf_session");
            if let Some(login) = &login {
                s.recorder.account_login_step(&user, login);
            }
            let token = mint_request_token(&mut inner, &s, &user, &api_key, login);
            return redirect(&final_redirect(
                &redirect_url,
                redirect_params.as_deref(),
                &token,
                true,
            ));
        }
        return html(
            StatusCode::OK,
            "<!DOCTYPE html><html><body><form id=\"login\"></form></body></html>",
        );
    }
    let sess_id = random_token(32);
    let cookie = random_token(40);
    inner.sessions.insert(
        sess_id.clone(),
        LoginSession {
            api_key: api_key.clone(),
            redirect_params: q.get("redirect_params").cloned(),
            cookie: cookie.clone(),
            user: None,
            authenticated: false,
        },
    );
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let location = format!(
        "http://{host}/connect/login?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("api_key", &api_key)
            .append_pair("sess_id", &sess_id)
            .finish()
    );
    let mut r = redirect(&location);
    r.headers_mut().insert(
        header::SET_COOKIE,
        s.cookie(
            &headers,
            "kf_session",
            &cookie,
            true,
            "Path=/; HttpOnly; SameSite=None",
        ),
    );
    r
}

/// S1b.
pub(super) async fn connect_session(
    State(s): State<Arc<KiteState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = s.lock();
    match q.get("sess_id").and_then(|id| inner.sessions.get(id)) {
        Some(session) => success(json!({"api_key": session.api_key, "sess_id": q.get("sess_id")})),
        None => error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid session.",
        ),
    }
}

pub(super) fn session_of<'a>(
    inner: &'a Inner,
    headers: &HeaderMap,
) -> Option<(&'a String, &'a LoginSession)> {
    let cookie = cookies(headers).remove("kf_session")?;
    inner.sessions.iter().find(|(_, s)| s.cookie == cookie)
}

/// S2.
pub(super) async fn api_login(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let user_id = f.get("user_id").cloned().unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    if f.get("type").map(String::as_str) != Some("user_id") {
        return error(StatusCode::BAD_REQUEST, "InputException", "Invalid `type`.");
    }
    // The login session tells two logins of one account apart (per-account concurrency).
    let login = cookies(&headers).remove("kf_session").unwrap_or_default();
    s.recorder.login_begin(&user_id);
    s.recorder.account_login_begin(&user_id, &login);
    s.recorder.password(&user_id, &password);
    let mut inner = s.lock();
    if inner
        .accounts
        .get(&user_id.to_ascii_uppercase())
        .is_some_and(|a| a.user.behaviour == KiteBehaviour::LoginWaf403)
    {
        s.recorder.login_end(&user_id);
        s.recorder.account_login_end(&user_id, &login);
        return waf_403();
    }
    let Some(sess_id) = session_of(&inner, &headers).map(|(id, _)| id.clone()) else {
        s.recorder.login_end(&user_id);
        s.recorder.account_login_end(&user_id, &login);
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid login session.",
        );
    };
    let Some(account) = inner.accounts.get_mut(&user_id.to_ascii_uppercase()) else {
        s.recorder.login_end(&user_id);
        s.recorder.account_login_end(&user_id, &login);
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid username or password.",
        );
    };
    let fail = |r: Response| {
        s.recorder.login_end(&user_id);
        s.recorder.account_login_end(&user_id, &login);
        r
    };
    match account.user.behaviour {
        KiteBehaviour::RateLimited => {
            return fail(error(
                StatusCode::TOO_MANY_REQUESTS,
                "NetworkException",
                "Too many requests",
            ));
        }
        KiteBehaviour::UnexpectedShape => {
            return fail(success(
                json!({"user_id": account.user.user_id, "status": "ok"}),
            ));
        }
        _ => {}
    }
    if account.blocked() {
        return fail(error(
            StatusCode::FORBIDDEN,
            "UserException",
            "Your account has been blocked for too many incorrect attempts. Reset your password to unblock it.",
        ));
    }
    if account.user.password != password {
        account.password_failures += 1;
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid username or password.",
        ));
    }
    let (twofa_type, twofa_types) = if account.user.behaviour == KiteBehaviour::AppCodeOnly {
        ("app_code", vec!["app_code", "sms"])
    } else {
        ("totp", vec!["totp"])
    };
    let user = account.user.user_id.clone();
    let request_id = random_token(40);
    inner.pending.insert(
        request_id.clone(),
        Pending {
            user: user.clone(),
            sess_id,
            twofa_type: twofa_type.into(),
            refused_once: false,
        },
    );
    success(json!({
        "user_id": user,
        "request_id": request_id,
        "twofa_type": twofa_type,
        "twofa_types": twofa_types,
        "twofa_status": "active",
        "profile": {}
    }))
}

/// S3.
pub(super) async fn api_twofa(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (user_id, request_id, code, twofa_type) = (
        get("user_id"),
        get("request_id"),
        get("twofa_value"),
        get("twofa_type"),
    );
    let login = cookies(&headers).remove("kf_session").unwrap_or_default();
    s.recorder.account_login_step(&user_id, &login);
    let now = (s.now)();
    let mut inner = s.lock();
    let fail = |r: Response| {
        s.recorder.login_end(&user_id);
        s.recorder.account_login_end(&user_id, &login);
        r
    };
    let Some(sess_id) = session_of(&inner, &headers).map(|(id, _)| id.clone()) else {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    };
    let Some(pending) = inner.pending.get(&request_id) else {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    };
    if pending.sess_id != sess_id || !pending.user.eq_ignore_ascii_case(&user_id) {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    }
    if pending.twofa_type != twofa_type {
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid `twofa_type`.",
        ));
    }
    let refused_once = pending.refused_once;
    let user_key = user_id.to_ascii_uppercase();
    let Some(account) = inner.accounts.get_mut(&user_key) else {
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid user.",
        ));
    };
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let behaviour = account.user.behaviour;
    let refuse = behaviour == KiteBehaviour::TotpRejected
        || (behaviour == KiteBehaviour::RejectFirstTotp && !refused_once);
    let accepted = fresh && !refuse;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        &user_id,
        TotpUse {
            code: code.clone(),
            step,
            accepted,
        },
    );
    if account.blocked() {
        return fail(error(
            StatusCode::FORBIDDEN,
            "UserException",
            "Your account has been blocked for too many incorrect attempts. Reset your password to unblock it.",
        ));
    }
    if !accepted {
        account.twofa_failures += 1;
        if let Some(p) = inner.pending.get_mut(&request_id) {
            p.refused_once = true;
        }
        // Kite lets the person retype the code on the same request_id: the login stays open.
        return error(StatusCode::FORBIDDEN, "TwoFAException", "Invalid TOTP");
    }
    if behaviour == KiteBehaviour::SessionExpiredAfterTwofa {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    }
    let user = account.user.user_id.clone();
    inner.pending.remove(&request_id);
    if let Some(session) = inner.sessions.get_mut(&sess_id) {
        session.user = Some(user.clone());
        session.authenticated = true;
    }
    let mut r = success(json!({"profile": {}}));
    for cookie in [
        s.cookie(
            &headers,
            "enctoken",
            &random_token(40),
            true,
            "Path=/; HttpOnly",
        ),
        s.cookie(&headers, "public_token", &random_token(32), false, "Path=/"),
        s.cookie(&headers, "user_id", &user, false, "Path=/"),
    ] {
        r.headers_mut().append(header::SET_COOKIE, cookie);
    }
    r
}

pub(super) fn mint_request_token(
    inner: &mut Inner,
    s: &KiteState,
    user: &str,
    api_key: &str,
    login: Option<String>,
) -> String {
    let token = random_token(32);
    inner.request_tokens.insert(
        token.clone(),
        RequestToken {
            user: user.to_owned(),
            api_key: api_key.to_owned(),
            created_ms: (s.now)(),
            login,
        },
    );
    token
}

/// S4.
pub(super) async fn connect_finish(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let api_key = q.get("api_key").cloned().unwrap_or_default();
    let sess_id = q.get("sess_id").cloned().unwrap_or_default();
    let has_enctoken = cookies(&headers).contains_key("enctoken");
    let mut inner = s.lock();
    let login_page = format!("/connect/login?api_key={api_key}&sess_id={sess_id}");
    let Some((cookie_sess, session)) = session_of(&inner, &headers) else {
        return redirect(&login_page);
    };
    if *cookie_sess != sess_id
        || !session.authenticated
        || !has_enctoken
        || session.api_key != api_key
    {
        return redirect(&login_page);
    }
    let user = session.user.clone().unwrap_or_default();
    let redirect_params = session.redirect_params.clone();
    let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
        return redirect(&login_page);
    };
    let (behaviour, redirect_url) = (account.user.behaviour, account.user.redirect_url.clone());
    let login = cookies(&headers).remove("kf_session").unwrap_or_default();
    s.recorder.account_login_step(&user, &login);
    match behaviour {
        KiteBehaviour::AuthorizeHop => {
            s.recorder.login_end(&user);
            s.recorder.account_login_end(&user, &login);
            redirect(&format!(
                "/connect/authorize?api_key={api_key}&sess_id={sess_id}"
            ))
        }
        KiteBehaviour::ExtraHop => redirect(&format!(
            "/connect/login?api_key={api_key}&sess_id={sess_id}&skip_session=true"
        )),
        _ => {
            let token = mint_request_token(&mut inner, &s, &user, &api_key, Some(login));
            redirect(&final_redirect(
                &redirect_url,
                redirect_params.as_deref(),
                &token,
                false,
            ))
        }
    }
}

pub(super) async fn connect_authorize() -> Response {
    html(
        StatusCode::OK,
        "<!DOCTYPE html><html><body><h1>Authorize app</h1><form id=\"authorize\"></form></body></html>",
    )
}
