//! HTTP egress of a plugin call: the `http` callback's exchanges, each hop checked against the
//! hosts the plugin may reach, paced by the broker's request rate, within the call's deadline;
//! cookies kept per login, and token-like values learnt for redaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_api::abi::Status;
use broker_api::wire::{HttpRequest, HttpResponse, WIRE_VERSION};
use reqwest::StatusCode;
use reqwest::cookie::CookieStore;
use reqwest::header::HeaderMap;

/// Most redirects followed for one request that asked to follow them.
const MAX_REDIRECTS: usize = 8;

/// HTTP egress of one call.
pub struct Egress {
    /// Shared client (connection pool, TLS); redirects are never followed by it.
    pub client: reqwest::Client,
    /// This login's cookies only.
    pub jar: Arc<reqwest::cookie::Jar>,
    /// Lowercase host names the plugin may reach.
    pub allowed_hosts: Arc<HashSet<String>>,
    /// Largest response body accepted.
    pub response_cap: usize,
    /// Timeout of one exchange when the plugin names none.
    pub default_timeout: Duration,
    /// The broker's request-rate limiter, shared by every login to that broker; each exchange
    /// (each redirect hop included) waits for a slot.
    pub limiter: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

/// Why an exchange failed: the status for the plugin, the error kind, and the message.
pub(super) type HttpFailure = (Status, &'static str, String);

fn allowed(ctx: &Exchange<'_>, url: &url::Url) -> Result<(), HttpFailure> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            Status::DENIED,
            "denied",
            format!("scheme {} is not allowed", url.scheme()),
        ));
    }
    if host_allowed(&ctx.http.allowed_hosts, host) {
        Ok(())
    } else {
        Err((
            Status::DENIED,
            "denied",
            format!("host {host} is neither declared by the plugin nor configured"),
        ))
    }
}

/// Whether `host` is in `allowed`, by name or under a `*.domain` entry (any name ending in
/// `.domain`; never `domain` itself): a broker that hands out session hosts at run time (Kotak
/// Neo's `baseUrl`) declares its domain so.
fn host_allowed(allowed: &HashSet<String>, host: &str) -> bool {
    allowed.contains(host)
        || allowed.iter().any(|entry| {
            entry.strip_prefix("*.").is_some_and(|domain| {
                host.strip_suffix(domain)
                    .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
            })
        })
}

/// Where the exchange is at: the URL, method and body of the next hop.
struct Hop {
    url: url::Url,
    method: reqwest::Method,
    body: Option<String>,
}

/// What an exchange uses of the plugin call it runs in.
pub(super) struct Exchange<'a> {
    /// The call's egress.
    pub(super) http: &'a Egress,
    /// Runtime the HTTP futures run on (the callback blocks its thread on them).
    pub(super) runtime: &'a tokio::runtime::Handle,
    /// When the whole call must be over.
    pub(super) deadline: Instant,
    /// Told every token-like value a response carries, so a plugin log line cannot leak it.
    pub(super) learn_secret: &'a dyn Fn(&str),
    /// Told the `Date` header of every response (the broker's clock).
    pub(super) observe_date: &'a dyn Fn(&str),
}

impl Exchange<'_> {
    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now())
    }
}

/// One exchange, following redirects by hand (each hop checked) when asked.
pub(super) fn exchange(
    ctx: &Exchange<'_>,
    request: HttpRequest,
) -> Result<HttpResponse, HttpFailure> {
    let HttpRequest {
        url,
        method,
        headers,
        body,
        follow_redirects,
        timeout_ms,
        ..
    } = request;
    let mut hop = Hop {
        url: url::Url::parse(&url)
            .map_err(|e| (Status::BAD_INPUT, "bad_request", format!("bad URL: {e}")))?,
        method: reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| (Status::BAD_INPUT, "bad_request", "bad method".to_owned()))?,
        body: Some(body),
    };
    let per_request = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(ctx.http.default_timeout);
    let origin = hop.url.origin();
    for _hop in 0..=MAX_REDIRECTS {
        allowed(ctx, &hop.url)?;
        let timeout = per_request.min(wait_for_slot(ctx)?);
        let same_origin = hop.url.origin() == origin;
        let builder = build_request(ctx, &hop, &headers, same_origin, timeout);
        let (status, headers, data) = send(ctx, builder, &hop.url)?;
        store_cookies(&ctx.http.jar, &headers, &hop.url);
        if follow_redirects && let Some(next) = redirect_target(&hop.url, status, &headers)? {
            if !matches!(status.as_u16(), 307 | 308) {
                hop.method = reqwest::Method::GET;
                hop.body = None;
            }
            hop.url = next;
            continue;
        }
        return Ok(response(ctx, &hop.url, status, &headers, &data));
    }
    Err((
        Status::ERROR,
        "too_many_redirects",
        format!("more than {MAX_REDIRECTS} redirects"),
    ))
}

fn deadline_passed() -> HttpFailure {
    (
        Status::TIMEOUT,
        "timeout",
        "the login deadline passed".to_owned(),
    )
}

/// Wait for the broker's request rate to allow one more request; the time left in the call.
fn wait_for_slot(ctx: &Exchange<'_>) -> Result<Duration, HttpFailure> {
    let remaining = ctx.remaining().ok_or_else(deadline_passed)?;
    if let Some(limiter) = &ctx.http.limiter {
        let slot = tokio::time::timeout(remaining, limiter.until_ready());
        if ctx.runtime.block_on(slot).is_err() {
            return Err((
                Status::TIMEOUT,
                "timeout",
                "the login deadline passed while waiting for the broker's rate limit".to_owned(),
            ));
        }
    }
    ctx.remaining().ok_or_else(deadline_passed)
}

/// The request of one hop: the plugin's headers (not its cookies or host, which are the
/// host's), this login's cookies, and the body.
fn build_request(
    ctx: &Exchange<'_>,
    hop: &Hop,
    headers: &[[String; 2]],
    same_origin: bool,
    timeout: Duration,
) -> reqwest::RequestBuilder {
    let mut builder = ctx
        .http
        .client
        .request(hop.method.clone(), hop.url.clone())
        .timeout(timeout);
    // A redirect to another origin gets none of the plugin's credentials.
    for [name, value] in headers {
        let name_lower = name.to_ascii_lowercase();
        if matches!(name_lower.as_str(), "cookie" | "host")
            || (!same_origin
                && matches!(name_lower.as_str(), "authorization" | "proxy-authorization"))
        {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(cookies) = ctx.http.jar.cookies(&hop.url) {
        builder = builder.header(reqwest::header::COOKIE, cookies);
    }
    if let Some(body) = hop.body.as_ref().filter(|b| !b.is_empty()) {
        builder = builder.body(body.clone());
    }
    builder
}

/// Send one hop and read its whole response, up to the response cap.
fn send(
    ctx: &Exchange<'_>,
    builder: reqwest::RequestBuilder,
    url: &url::Url,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), HttpFailure> {
    let cap = ctx.http.response_cap;
    let response = ctx.runtime.block_on(async {
        let mut response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut data = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if data.len() + chunk.len() > cap {
                return Ok(Err(()));
            }
            data.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(Ok((status, headers, data)))
    });
    match response {
        Ok(Ok(parts)) => {
            if let Some(date) = parts.1.get(reqwest::header::DATE) {
                (ctx.observe_date)(date.to_str().unwrap_or_default());
            }
            Ok(parts)
        }
        Ok(Err(())) => Err((
            Status::TOO_LARGE,
            "too_large",
            format!("response over {cap} bytes"),
        )),
        Err(e) if e.is_timeout() => Err((
            Status::TIMEOUT,
            "timeout",
            format!("{} timed out", url.path()),
        )),
        Err(e) => Err((Status::ERROR, "network", failure_kind_and_path(&e))),
    }
}

/// Where a redirect leads, if this response is one with a usable `Location`; a redirect from
/// https to anything else is refused.
fn redirect_target(
    url: &url::Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Option<url::Url>, HttpFailure> {
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url.join(l).ok());
    let Some(next) = location.filter(|_| status.is_redirection()) else {
        return Ok(None);
    };
    if url.scheme() == "https" && next.scheme() != "https" {
        return Err((
            Status::DENIED,
            "denied",
            format!("a redirect from https to {} was refused", next.scheme()),
        ));
    }
    Ok(Some(next))
}

/// The response as the plugin sees it; its token-like values are learnt for redaction first.
fn response(
    ctx: &Exchange<'_>,
    url: &url::Url,
    status: StatusCode,
    headers: &HeaderMap,
    data: &[u8],
) -> HttpResponse {
    let body = String::from_utf8_lossy(data).into_owned();
    learn_tokens(ctx.learn_secret, &body, headers);
    let headers = headers
        .iter()
        .map(|(n, v)| {
            [
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    HttpResponse {
        v: WIRE_VERSION,
        status: status.as_u16(),
        url: url.to_string(),
        headers,
        body,
    }
}

/// Keep a response's cookies in this login's jar. A `Domain` attribute that does not cover the
/// host that sent it (a login host behind another name, a fake on loopback) makes the cookie
/// host-only instead of dropping it: the jar lives for one login and reaches only allowed hosts,
/// and a lost session cookie fails the login later with a misleading error.
fn store_cookies(jar: &reqwest::cookie::Jar, headers: &reqwest::header::HeaderMap, url: &url::Url) {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    for value in headers.get_all(reqwest::header::SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let Ok(mut cookie) = cookie::Cookie::parse(text) else {
            continue;
        };
        if let Some(domain) = cookie.domain() {
            let domain = domain.trim_start_matches('.').to_ascii_lowercase();
            let covers = host == domain
                || (host.parse::<std::net::IpAddr>().is_err()
                    && host.ends_with(&format!(".{domain}")));
            if !covers {
                cookie.unset_domain();
            }
        }
        jar.add_cookie_str(&cookie.to_string(), url);
    }
}

/// What kind of failure `e` is and the path it happened on: never the URL's query, which may
/// carry tokens.
fn failure_kind_and_path(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "HTTP error"
    };
    let path = e.url().map(|u| u.path().to_owned()).unwrap_or_default();
    format!("{kind} ({path})")
}

/// Remember token-like values of a response so a careless plugin log line cannot leak them.
fn learn_tokens(learn: &dyn Fn(&str), body: &str, headers: &reqwest::header::HeaderMap) {
    fn walk(learn: &dyn Fn(&str), value: &serde_json::Value, key: &str) {
        match value {
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| walk(learn, v, k)),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(learn, v, key)),
            serde_json::Value::String(s) => {
                let key = key.to_ascii_lowercase();
                if ["token", "session", "secret", "authcode", "enckey"]
                    .iter()
                    .any(|k| key.contains(k))
                    && s.len() >= 8
                {
                    learn(s);
                }
            }
            _ => {}
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        walk(learn, &json, "");
    }
    for cookie in headers.get_all(reqwest::header::SET_COOKIE) {
        if let Some(value) = cookie
            .to_str()
            .ok()
            .and_then(|c| c.split(';').next())
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.trim())
        {
            learn(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_entry_allows_the_names_under_its_domain_only() {
        let allowed: HashSet<String> = ["*.kotaksecurities.com", "api.kite.trade"]
            .map(String::from)
            .into();
        for host in [
            "mnapi.kotaksecurities.com",
            "a.b.kotaksecurities.com",
            "api.kite.trade",
        ] {
            assert!(host_allowed(&allowed, host), "{host}");
        }
        for host in [
            "kotaksecurities.com",
            "evilkotaksecurities.com",
            "kotaksecurities.com.evil.net",
            "kite.trade",
        ] {
            assert!(!host_allowed(&allowed, host), "{host}");
        }
    }

    fn cookies_after(set_cookie: &[&str], url: &str) -> String {
        let jar = reqwest::cookie::Jar::default();
        let url = url::Url::parse(url).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        for value in set_cookie {
            headers.append(reqwest::header::SET_COOKIE, value.parse().unwrap());
        }
        store_cookies(&jar, &headers, &url);
        jar.cookies(&url)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn session_cookies_with_real_attributes_come_back_on_loopback() {
        let sent = cookies_after(
            &[
                "kf_session=s1; Domain=127.0.0.1; Path=/; Expires=Wed, 21 Oct 2099 07:28:00 GMT; HttpOnly; Secure; SameSite=None",
                "AWSALB=lb; Expires=Wed, 21 Oct 2099 07:28:00 GMT; Path=/",
                "enctoken=e1; Domain=kite.zerodha.com; Path=/; Secure; SameSite=None",
                "_cfuvid=c1; Domain=.zerodha.com; Path=/; HttpOnly; Secure",
            ],
            "http://127.0.0.1:4000/api/login",
        );
        for pair in ["kf_session=s1", "AWSALB=lb", "enctoken=e1", "_cfuvid=c1"] {
            assert!(sent.contains(pair), "{pair} missing from {sent:?}");
        }
    }

    #[test]
    fn a_cookie_for_a_covering_domain_stays_domain_wide_and_paths_hold() {
        let sent = cookies_after(
            &["a=1; Domain=.example.com; Path=/", "b=2; Path=/only"],
            "https://login.example.com/x",
        );
        assert_eq!(sent, "a=1");
        let jar_url = "https://api.example.com/y";
        let jar = reqwest::cookie::Jar::default();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(
            reqwest::header::SET_COOKIE,
            "a=1; Domain=example.com; Path=/".parse().unwrap(),
        );
        store_cookies(
            &jar,
            &headers,
            &url::Url::parse("https://login.example.com/").unwrap(),
        );
        assert!(jar.cookies(&url::Url::parse(jar_url).unwrap()).is_some());
    }
}
