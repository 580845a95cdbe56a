//! The host side of the ABI: the static host table and its callbacks (`http`, `log`,
//! `now_unix_ms`, `totp`), each running on the calling plugin's thread with the [`CallContext`]
//! of the current call.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_api::abi::{self, Bytes, CallCtx, HOST_MAGIC, Header, HostTable, Sink, Status};
use broker_api::wire::{HostError, HttpRequest, HttpResponse, TotpCode, TotpRequest, WIRE_VERSION};
use reqwest::cookie::CookieStore;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::plugins::totp::{StepGuard, fresh_code};

/// The one host table of the process. Plugins may keep the pointer forever.
pub static HOST_TABLE: HostTable = HostTable {
    header: Header {
        magic: HOST_MAGIC,
        struct_size: std::mem::size_of::<HostTable>() as u32,
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
    },
    http: host_http,
    log: host_log,
    now_unix_ms: host_now,
    totp: host_totp,
    sleep_ms: host_sleep,
};

/// Most redirects followed for one request that asked to follow them.
const MAX_REDIRECTS: usize = 8;

/// Everything a host callback needs during one plugin call. Created per call, passed to the plugin
/// as an opaque `*mut CallCtx`, and borrowed back by each callback.
pub struct CallContext {
    /// Broker id, for logs.
    pub broker: String,
    /// `user_id/broker`, the account this call acts for; keys the TOTP step guard.
    pub account: String,
    /// Egress: the shared client, this login's cookies, the hosts allowed.
    pub http: Egress,
    /// Runtime the HTTP futures run on (the callback blocks its thread on them).
    pub runtime: tokio::runtime::Handle,
    /// The clock plugins see.
    pub clock: Arc<dyn Clock>,
    /// The account's decoded TOTP secret, if it has one. Never leaves the host.
    pub totp_secret: Option<Zeroizing<Vec<u8>>>,
    /// Steps already handed out, process-wide.
    pub steps: Arc<StepGuard>,
    /// Records a step durably before its code is handed out (the vault, for logins the
    /// refresher runs). `None`: the step lives in `steps` alone.
    pub step_log: Option<StepLog>,
    /// When the whole call must be over.
    pub deadline: Instant,
    /// The same deadline on [`CallContext::clock`], which a test's manual clock moves: a
    /// plugin's sleeps end the call on either.
    pub clock_deadline_ms: i64,
    /// Strings replaced by `[redacted]` in plugin log lines; grows with every TOTP code handed out
    /// and every token-like value seen in a response.
    pub redactor: Redactor,
}

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

/// Durable record of a TOTP step handed out for this call's account; `Err` (why) withholds it.
pub type StepLog = Arc<dyn Fn(u64) -> Result<(), String> + Send + Sync>;

/// Replaces known secrets in text.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Mutex<Vec<Zeroizing<String>>>,
}

impl Redactor {
    /// Add a secret; values shorter than 4 characters are ignored (they would redact noise).
    pub fn add(&self, secret: &str) {
        if secret.len() < 4 {
            return;
        }
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        if !secrets.iter().any(|s| s.as_str() == secret) {
            secrets.push(Zeroizing::new(secret.to_owned()));
            // Longest first, so a secret containing another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every known secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        crate::redact::redact(text, secrets.iter().map(|s| s.as_str()))
    }
}

impl CallContext {
    /// The opaque pointer handed to the plugin for this call.
    pub fn as_ptr(&self) -> *mut CallCtx {
        (self as *const CallContext).cast_mut().cast()
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now())
    }
}

/// Borrow the context back from the pointer the plugin hands us.
///
/// # Safety
/// `call` must be the pointer of a live `CallContext` for the current plugin call.
unsafe fn context<'a>(call: *mut CallCtx) -> Option<&'a CallContext> {
    // SAFETY: the host created this pointer from a CallContext that outlives the plugin call.
    unsafe { call.cast::<CallContext>().cast_const().as_ref() }
}

fn write_json<T: serde::Serialize>(out: Sink, value: &T) {
    if let Ok(bytes) = serde_json::to_vec(value) {
        // SAFETY: `out` is the sink the plugin passed for this callback.
        unsafe { abi::sink_write(out, &bytes) };
    }
}

fn fail(out: Sink, status: Status, kind: &str, message: impl Into<String>) -> Status {
    write_json(
        out,
        &HostError {
            v: WIRE_VERSION,
            kind: kind.into(),
            message: message.into(),
        },
    );
    status
}

/// Run a callback body, turning a panic into a status: a panic must never unwind into a plugin.
fn guarded(out: Option<Sink>, body: impl FnOnce() -> Status) -> Status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        if let Some(out) = out {
            fail(
                out,
                Status::PANIC,
                "panic",
                "the host panicked in a callback",
            );
        }
        Status::PANIC
    })
}

unsafe extern "C" fn host_now(call: *mut CallCtx) -> i64 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back the pointer of its current call.
        match unsafe { context(call) } {
            Some(ctx) => ctx.clock.now_ms(),
            None => chrono::Utc::now().timestamp_millis(),
        }
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn host_sleep(call: *mut CallCtx, ms: u64) -> Status {
    guarded(None, || {
        // SAFETY: the plugin passes back the pointer of its current call.
        let Some(ctx) = (unsafe { context(call) }) else {
            return Status::BAD_INPUT;
        };
        let wanted = Duration::from_millis(ms);
        let in_time = ctx.remaining().is_some_and(|left| left > wanted)
            && ctx.clock.now_ms().saturating_add_unsigned(ms) < ctx.clock_deadline_ms;
        if !in_time {
            return Status::TIMEOUT;
        }
        ctx.clock.sleep_ms(ms);
        Status::OK
    })
}

unsafe extern "C" fn host_log(call: *mut CallCtx, level: i32, message: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, message) = unsafe { (context(call), message.as_slice()) };
        let message = String::from_utf8_lossy(message);
        let Some(ctx) = ctx else { return };
        let message = ctx.redactor.redact(&message);
        let (broker, account) = (ctx.broker.as_str(), ctx.account.as_str());
        match level {
            1 => tracing::error!(target: "plugin", broker, account, "{message}"),
            2 => tracing::warn!(target: "plugin", broker, account, "{message}"),
            3 => tracing::info!(target: "plugin", broker, account, "{message}"),
            4 => tracing::debug!(target: "plugin", broker, account, "{message}"),
            _ => tracing::trace!(target: "plugin", broker, account, "{message}"),
        }
    }));
}

unsafe extern "C" fn host_totp(call: *mut CallCtx, request: Bytes, out: Sink) -> Status {
    guarded(Some(out), || {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, request) = unsafe { (context(call), request.as_slice()) };
        let Some(ctx) = ctx else {
            return fail(out, Status::BAD_INPUT, "bad_request", "no call context");
        };
        if serde_json::from_slice::<TotpRequest>(request).is_err() {
            return fail(
                out,
                Status::BAD_INPUT,
                "bad_request",
                "invalid TOTP request JSON",
            );
        }
        let Some(secret) = &ctx.totp_secret else {
            return fail(
                out,
                Status::ERROR,
                "no_totp_secret",
                "this account has no totp_secret",
            );
        };
        // Waiting for a fresh step must still fit in the call's deadline.
        let budget = ctx.remaining().unwrap_or_default().as_millis() as u64;
        match fresh_code(&ctx.steps, ctx.clock.as_ref(), &ctx.account, secret, budget) {
            Ok(fresh) => {
                // Written before the code leaves: after a crash, the next process knows the
                // step was used even if the broker saw the code and nothing else was recorded.
                if let Some(log) = &ctx.step_log
                    && let Err(why) = log(fresh.step)
                {
                    return fail(
                        out,
                        Status::ERROR,
                        "step_not_recorded",
                        format!("the TOTP step could not be recorded, so it was not used: {why}"),
                    );
                }
                ctx.redactor.add(&fresh.code);
                write_json(
                    out,
                    &TotpCode {
                        v: WIRE_VERSION,
                        code: broker_api::wire::Sensitive::new(fresh.code.as_str()),
                        step: fresh.step,
                        valid_for_ms: fresh.valid_for_ms,
                    },
                );
                Status::OK
            }
            Err(wait) => fail(
                out,
                Status::TIMEOUT,
                "timeout",
                format!("a fresh TOTP step starts in {wait} ms, after the login deadline"),
            ),
        }
    })
}

unsafe extern "C" fn host_http(call: *mut CallCtx, request: Bytes, out: Sink) -> Status {
    guarded(Some(out), || {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, request) = unsafe { (context(call), request.as_slice()) };
        let Some(ctx) = ctx else {
            return fail(out, Status::BAD_INPUT, "bad_request", "no call context");
        };
        let request: HttpRequest = match serde_json::from_slice(request) {
            Ok(r) => r,
            Err(e) => return fail(out, Status::BAD_INPUT, "bad_request", e.to_string()),
        };
        match exchange(ctx, request) {
            Ok(response) => {
                write_json(out, &response);
                Status::OK
            }
            Err((status, kind, message)) => fail(out, status, kind, message),
        }
    })
}

type HttpFailure = (Status, &'static str, String);

fn allowed(ctx: &CallContext, url: &url::Url) -> Result<(), HttpFailure> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            Status::DENIED,
            "denied",
            format!("scheme {} is not allowed", url.scheme()),
        ));
    }
    if ctx.http.allowed_hosts.contains(host) {
        Ok(())
    } else {
        Err((
            Status::DENIED,
            "denied",
            format!("host {host} is neither declared by the plugin nor configured"),
        ))
    }
}

/// One exchange, following redirects by hand (each hop checked) when asked.
fn exchange(ctx: &CallContext, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
    let mut url = url::Url::parse(&request.url)
        .map_err(|e| (Status::BAD_INPUT, "bad_request", format!("bad URL: {e}")))?;
    let mut method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| (Status::BAD_INPUT, "bad_request", "bad method".to_owned()))?;
    let mut body = Some(request.body);
    let per_request = request
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(ctx.http.default_timeout);
    let origin = url.origin();
    for _hop in 0..=MAX_REDIRECTS {
        allowed(ctx, &url)?;
        let remaining = ctx.remaining().ok_or((
            Status::TIMEOUT,
            "timeout",
            "the login deadline passed".to_owned(),
        ))?;
        if let Some(limiter) = &ctx.http.limiter {
            let slot = tokio::time::timeout(remaining, limiter.until_ready());
            if ctx.runtime.block_on(slot).is_err() {
                return Err((
                    Status::TIMEOUT,
                    "timeout",
                    "the login deadline passed while waiting for the broker's rate limit"
                        .to_owned(),
                ));
            }
        }
        let remaining = ctx.remaining().ok_or((
            Status::TIMEOUT,
            "timeout",
            "the login deadline passed".to_owned(),
        ))?;
        let timeout = per_request.min(remaining);
        let mut builder = ctx
            .http
            .client
            .request(method.clone(), url.clone())
            .timeout(timeout);
        // A redirect to another origin gets none of the plugin's credentials.
        let same_origin = url.origin() == origin;
        for [name, value] in &request.headers {
            let name_lower = name.to_ascii_lowercase();
            if matches!(name_lower.as_str(), "cookie" | "host")
                || (!same_origin
                    && matches!(name_lower.as_str(), "authorization" | "proxy-authorization"))
            {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(cookies) = ctx.http.jar.cookies(&url) {
            builder = builder.header(reqwest::header::COOKIE, cookies);
        }
        if let Some(body) = body.as_ref().filter(|b| !b.is_empty()) {
            builder = builder.body(body.clone());
        }
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
        let (status, headers, data) = match response {
            Ok(Ok(parts)) => parts,
            Ok(Err(())) => {
                return Err((
                    Status::TOO_LARGE,
                    "too_large",
                    format!("response over {cap} bytes"),
                ));
            }
            Err(e) if e.is_timeout() => {
                return Err((
                    Status::TIMEOUT,
                    "timeout",
                    format!("{} timed out", url.path()),
                ));
            }
            Err(e) => return Err((Status::ERROR, "network", describe(&e))),
        };
        store_cookies(&ctx.http.jar, &headers, &url);
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok());
        if request.follow_redirects
            && status.is_redirection()
            && let Some(next) = location
        {
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err((
                    Status::DENIED,
                    "denied",
                    format!("a redirect from https to {} was refused", next.scheme()),
                ));
            }
            if !matches!(status.as_u16(), 307 | 308) {
                method = reqwest::Method::GET;
                body = None;
            }
            url = next;
            continue;
        }
        let body = String::from_utf8_lossy(&data).into_owned();
        learn_tokens(&ctx.redactor, &body, &headers);
        let headers = headers
            .iter()
            .map(|(n, v)| {
                [
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ]
            })
            .collect();
        return Ok(HttpResponse {
            v: WIRE_VERSION,
            status: status.as_u16(),
            url: url.to_string(),
            headers,
            body,
        });
    }
    Err((
        Status::ERROR,
        "too_many_redirects",
        format!("more than {MAX_REDIRECTS} redirects"),
    ))
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

/// Error text without the URL's query (which may carry tokens).
fn describe(e: &reqwest::Error) -> String {
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
fn learn_tokens(redactor: &Redactor, body: &str, headers: &reqwest::header::HeaderMap) {
    fn walk(redactor: &Redactor, value: &serde_json::Value, key: &str) {
        match value {
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| walk(redactor, v, k)),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(redactor, v, key)),
            serde_json::Value::String(s) => {
                let key = key.to_ascii_lowercase();
                if ["token", "session", "secret", "authcode", "enckey"]
                    .iter()
                    .any(|k| key.contains(k))
                    && s.len() >= 8
                {
                    redactor.add(s);
                }
            }
            _ => {}
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        walk(redactor, &json, "");
    }
    for cookie in headers.get_all(reqwest::header::SET_COOKIE) {
        if let Some(value) = cookie
            .to_str()
            .ok()
            .and_then(|c| c.split(';').next())
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.trim())
        {
            redactor.add(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
