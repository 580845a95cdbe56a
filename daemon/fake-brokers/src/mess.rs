//! Realistic mode: the incidental habits of real servers, added around every router of every fake
//! so a client is tested against what production hosts send, not against tidy test servers.
//!
//! On every response (including 404s and WAF pages):
//! - a 3xx with a `Location` gets the small HTML body of Go's `http.Redirect` / nginx
//!   (`<a href="...">Found</a>.`, `Content-Type: text/html; charset=utf-8`);
//! - a bare `application/json` becomes the host's JSON content type (e.g.
//!   `application/json; charset=utf-8`, or `text/plain;charset=UTF-8` on the IIFL portal);
//!   a content type a handler chose otherwise is kept;
//! - `Server: nginx` (unless a handler set one, as WAF pages do), `Date`, `X-Request-Id`,
//!   `Cache-Control: no-store` (unless set);
//! - load-balancer cookies (`AWSALB`, `AWSALBCORS`), plus, per host, a cookie scoped to a foreign
//!   domain and a `JSESSIONID` (set when the request carries none);
//! - the body gzip-compressed when the request's `Accept-Encoding` allows gzip (whatever its
//!   size or type), with `Content-Encoding: gzip`; `Vary: Accept-Encoding` always;
//! - the body sent chunked: no `Content-Length`, streamed in two chunks.
//!
//! `Date` follows the fake's clock (a broker whose clock is off is a fake whose `now` is).
//! Cookie `Expires` follows the system clock: clients judge cookie expiry by their own clock,
//! and tests run fakes on manual clocks far from today.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::random_token;

/// How close to a real server a fake behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Realism {
    /// Real servers' habits: redirect bodies, chunked and gzip bodies, `Server`/`Date`/
    /// `X-Request-Id`/`Cache-Control` headers, load-balancer and foreign-domain cookies, cookie
    /// attributes (`Domain`, `Expires`, `Max-Age`, `Secure`, `SameSite`), charset-qualified or
    /// odd content types (IIFL's portal serves JSON as `text/plain`), errors with HTTP 200.
    #[default]
    Realistic,
    /// Tidy answers: what the fakes sent before realism existed.
    Ideal,
}

/// What one host adds in realistic mode.
#[derive(Clone, Debug)]
pub(crate) struct HostHabits {
    /// Replaces a bare `application/json`.
    pub json_type: &'static str,
    /// A cookie scoped to a domain the client never talks to (`_cfuvid` on `.zerodha.com`).
    pub foreign_cookie: Option<(&'static str, &'static str)>,
    /// Set `JSESSIONID` when the request carries none (a Java portal).
    pub jsessionid: bool,
}

impl HostHabits {
    /// A host answering JSON as `application/json; charset=utf-8`, with LB cookies only.
    pub(crate) fn json() -> HostHabits {
        HostHabits {
            json_type: "application/json; charset=utf-8",
            foreign_cookie: None,
            jsessionid: false,
        }
    }
}

/// A host's habits and the fake's clock, which its `Date` header shows.
struct Host {
    habits: HostHabits,
    now: crate::NowFn,
}

/// The router, with the realistic habits of `habits` when `options.realism` is `Realistic`.
pub(crate) fn apply(
    router: axum::Router,
    options: &crate::FakeOptions,
    habits: HostHabits,
) -> axum::Router {
    match options.realism {
        Realism::Ideal => router,
        Realism::Realistic => {
            let host = Arc::new(Host {
                habits,
                now: options.now.clone(),
            });
            router.layer(axum::middleware::from_fn_with_state(host, mess))
        }
    }
}

/// The reason phrase a redirect body names.
fn redirect_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        _ => status.canonical_reason().unwrap_or("Found"),
    }
}

/// HTML-escape (`&`, `<`, `>`, `"`, `'`), as Go's `htmlEscape`.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, `x-gzip` or `*`, with a non-zero q).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero_q = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            ["gzip", "x-gzip", "*"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
                && !zero_q
        })
}

fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|kv| kv.trim().split_once('=').is_some_and(|(k, _)| k == name))
}

/// Seconds since the Unix epoch on the system clock.
pub(crate) fn system_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`) of Unix seconds `secs`, as `Date` and
/// cookie `Expires` carry.
pub(crate) fn http_date(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
    httpdate::fmt_http_date(at)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn set_if_absent(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_str(value).expect("a header value"));
    }
}

fn add_cookie(headers: &mut HeaderMap, cookie: &str) {
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_str(cookie).expect("a cookie"),
    );
}

/// The middleware.
async fn mess(State(host): State<Arc<Host>>, request: Request, next: Next) -> Response {
    let habits = &host.habits;
    let gzip_ok = accepts_gzip(request.headers());
    let has_jsessionid = has_cookie(request.headers(), "JSESSIONID");
    let head = request.method() == Method::HEAD;
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let h = &mut parts.headers;

    if parts.status.is_redirection()
        && let Some(location) = h.get(header::LOCATION).and_then(|l| l.to_str().ok())
    {
        bytes = Bytes::from(format!(
            "<a href=\"{}\">{}</a>.\n",
            html_escape(location),
            redirect_text(parts.status)
        ));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    if h.get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().eq_ignore_ascii_case(b"application/json"))
    {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(habits.json_type),
        );
    }

    let now = system_secs();
    set_if_absent(h, header::SERVER, "nginx");
    h.insert(
        header::DATE,
        HeaderValue::from_str(&http_date((host.now)().div_euclid(1000))).expect("a date"),
    );
    h.insert(
        "x-request-id",
        HeaderValue::from_str(&random_token(32).to_ascii_lowercase()).expect("an id"),
    );
    set_if_absent(h, header::CACHE_CONTROL, "no-store");

    let in_a_week = http_date(now + 7 * 86_400);
    let alb = random_token(96);
    add_cookie(h, &format!("AWSALB={alb}; Expires={in_a_week}; Path=/"));
    add_cookie(
        h,
        &format!("AWSALBCORS={alb}; Expires={in_a_week}; Path=/; SameSite=None; Secure"),
    );
    if let Some((name, domain)) = habits.foreign_cookie {
        add_cookie(
            h,
            &format!(
                "{name}={}-{now}-0.0.1.1-{}; Domain={domain}; Path=/; HttpOnly; Secure; SameSite=None",
                random_token(40),
                random_token(24)
            ),
        );
    }
    if habits.jsessionid && !has_jsessionid {
        add_cookie(
            h,
            &format!(
                "JSESSIONID={}; Path=/; Secure; HttpOnly",
                hex::encode_upper(random_token(16))
            ),
        );
    }

    h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip_ok && !bytes.is_empty() && !h.contains_key(header::CONTENT_ENCODING) {
        bytes = Bytes::from(gzip(&bytes));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.remove(header::CONTENT_LENGTH);
    if head || bytes.is_empty() {
        return Response::from_parts(parts, Body::empty());
    }
    let half = bytes.len() / 2;
    let chunks = [bytes.slice(..half), bytes.slice(half..)]
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(Ok::<_, std::convert::Infallible>);
    Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_798_761_599), "Thu, 31 Dec 2026 23:59:59 GMT");
    }

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&m)
        };
        assert!(h("gzip, deflate, br"));
        assert!(h("br;q=1.0, GZIP;q=0.5"));
        assert!(h("*"));
        assert!(!h("gzip;q=0"));
        assert!(!h("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("/a?x=1&y=\"<'>"),
            "/a?x=1&amp;y=&#34;&lt;&#39;&gt;"
        );
    }
}
