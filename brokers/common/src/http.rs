//! Turning host failures and broker responses into error classes, the same way for every broker.
//!
//! Messages built here never include a request or response body: bodies may carry tokens. Only
//! the broker's own error text (its `message` field) is quoted, truncated.

use broker_api::abi::Status;
use broker_api::guest::HostCallError;
use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};
use broker_api::{Host, Level};

/// Wait suggested after a 429 that names no `Retry-After`.
pub const DEFAULT_RETRY_AFTER_MS: u64 = 2_000;

/// A failure of the host's `http` callback during `step`.
pub fn host_failure(broker: &str, step: &str, e: &HostCallError) -> ErrorOutput {
    let (class, what) = match e.status {
        Status::TIMEOUT => (ErrorClass::Network, "timed out"),
        Status::DENIED => (ErrorClass::Protocol, "was refused by the host"),
        Status::TOO_LARGE => (ErrorClass::Protocol, "got a response over the size cap"),
        _ => (ErrorClass::Network, "failed"),
    };
    ErrorOutput::new(
        class,
        format!("{broker}: {step} {what}: {}", e.error.message),
    )
}

/// A TOTP code refused in the same request as the password or PIN (`secret` names which). Such
/// a code is never retried on a fresh step, since the retry would send the secret a second time
/// in one refresh; the message says so and what to check.
pub fn code_refused_with_secret(mut e: ErrorOutput, secret: &str) -> ErrorOutput {
    if e.class == ErrorClass::TwofaRejected {
        e.message.push_str(&format!(
            " (not retried: the {secret} goes with the code, and is sent once per refresh; \
             check the TOTP secret and the host clock)"
        ));
    }
    e
}

/// Whether the response is a redirect: a 3xx with a `Location`, whatever its body and content
/// type (Go's `http.Redirect` and nginx send a small HTML page with every redirect).
pub fn is_redirect(resp: &HttpResponse) -> bool {
    (300..400).contains(&resp.status)
        && resp
            .header("location")
            .is_some_and(|l| !l.trim().is_empty())
}

/// Whether the response is an HTML page (a login page, an error page, a WAF or Cloudflare
/// challenge) rather than data. A body that parses as JSON is data whatever its content type:
/// brokers send JSON as `text/html` and `text/plain` too.
pub fn is_html(resp: &HttpResponse) -> bool {
    if json(resp).is_some() {
        return false;
    }
    resp.header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("html"))
        || resp.body.trim_start().starts_with('<')
}

/// `Retry-After` in milliseconds (delta-seconds form only), else `default_ms`.
pub fn retry_after_ms(resp: &HttpResponse, default_ms: u64) -> u64 {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default_ms, |s| s.saturating_mul(1000))
}

/// The classes every broker shares, for a step that expects data: 429 is `rate_limited`; an HTML
/// page or a 5xx is `broker_unavailable`. `None` when the strategy should read the answer itself,
/// which includes every redirect (the step decides whether a redirect is what it expected).
pub fn triage(broker: &str, step: &str, resp: &HttpResponse) -> Option<ErrorOutput> {
    if is_redirect(resp) {
        return None;
    }
    if resp.status == 429 {
        let mut e = ErrorOutput::new(
            ErrorClass::RateLimited,
            format!("{broker}: {step}: HTTP 429, too many requests"),
        );
        e.retry_after_ms = Some(retry_after_ms(resp, DEFAULT_RETRY_AFTER_MS));
        return Some(e);
    }
    if is_html(resp) {
        let cloudflare = resp
            .header("server")
            .is_some_and(|s| s.eq_ignore_ascii_case("cloudflare"))
            || resp.header("cf-ray").is_some();
        let mut e = ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!(
                "{broker}: {step}: HTTP {} with an HTML page instead of JSON{}; back off for minutes",
                resp.status,
                if cloudflare { " (Cloudflare)" } else { "" }
            ),
        );
        if resp.header("retry-after").is_some() {
            e.retry_after_ms = Some(retry_after_ms(resp, 0));
        }
        return Some(e);
    }
    if resp.status >= 500 {
        let detail = json(resp)
            .and_then(|v| broker_text(&v))
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Some(ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!("{broker}: {step}: HTTP {}{detail}", resp.status),
        ));
    }
    None
}

/// The body as JSON, if it is JSON (a leading byte-order mark is tolerated).
pub fn json(resp: &HttpResponse) -> Option<serde_json::Value> {
    serde_json::from_str(resp.body.trim_start_matches('\u{feff}')).ok()
}

/// The body as a JSON object. A redirect where data was expected is `broker_unavailable` (a WAF
/// or maintenance page sends its challenge that way); any other body is a `protocol` error.
pub fn json_object(
    broker: &str,
    step: &str,
    resp: &HttpResponse,
) -> Result<serde_json::Value, ErrorOutput> {
    match json(resp) {
        Some(v) if v.is_object() => Ok(v),
        _ if is_redirect(resp) => Err(ErrorOutput::new(
            ErrorClass::BrokerUnavailable,
            format!(
                "{broker}: {step}: HTTP {} redirect where JSON was expected",
                resp.status
            ),
        )),
        _ if resp.body.trim().is_empty() => Err(ErrorOutput::new(
            ErrorClass::Protocol,
            format!(
                "{broker}: {step}: HTTP {} with an empty body where JSON was expected",
                resp.status
            ),
        )),
        _ => Err(ErrorOutput::new(
            ErrorClass::Protocol,
            format!(
                "{broker}: {step}: HTTP {} with a body that is not a JSON object",
                resp.status
            ),
        )),
    }
}

/// First wait between retries of one step.
pub const STEP_BACKOFF_FIRST_MS: u64 = 500;
/// Longest wait between retries of one step.
pub const STEP_BACKOFF_MAX_MS: u64 = 8_000;

/// Retries of one step after the password was accepted ("retry the step, not the login"): each
/// wait doubles from [`STEP_BACKOFF_FIRST_MS`] to [`STEP_BACKOFF_MAX_MS`], is at least the
/// broker's `Retry-After`, and is taken on the host's clock only while it fits in the login's
/// deadline.
#[derive(Debug)]
pub struct StepRetry {
    next_ms: u64,
}

impl Default for StepRetry {
    fn default() -> Self {
        StepRetry {
            next_ms: STEP_BACKOFF_FIRST_MS,
        }
    }
}

impl StepRetry {
    /// Whether `error` may be retried at its step: a retryable class, and a wait the deadline
    /// still allows (the wait is done here). `false` means: give up with `error`.
    pub fn wait(&mut self, host: &Host<'_>, broker: &str, step: &str, error: &ErrorOutput) -> bool {
        if !error.class.is_retryable() {
            return false;
        }
        let ms = self.next_ms.max(error.retry_after_ms.unwrap_or(0));
        self.next_ms = (self.next_ms * 2).min(STEP_BACKOFF_MAX_MS);
        if host.sleep(ms).is_err() {
            return false;
        }
        host.log(
            Level::Info,
            &format!(
                "{broker}: {step}: {} answer; retried this step after {ms} ms, not the login",
                error.class.as_str()
            ),
        );
        true
    }

    /// [`StepRetry::run`] for a step whose input is single use (an `authCode`, a
    /// `request_token`): a refusal after a retry may only mean that the failed try used the input
    /// up, so the earlier, retryable failure is reported (with the later text), never a
    /// credential error that would stop the account's logins.
    pub fn run_single_use<T>(
        host: &Host<'_>,
        broker: &str,
        step: &str,
        mut f: impl FnMut() -> Result<T, ErrorOutput>,
    ) -> Result<T, ErrorOutput> {
        let mut retry = StepRetry::default();
        let mut first: Option<ErrorOutput> = None;
        loop {
            match f() {
                Ok(out) => return Ok(out),
                Err(e) if retry.wait(host, broker, step, &e) => {
                    first.get_or_insert(e);
                }
                Err(e) => {
                    return Err(match first {
                        Some(mut earlier) if !e.class.is_retryable() => {
                            earlier.message.push_str(&format!(
                                "; retried at this step, then refused (the failed try may have \
                                 used the single-use code up): {}",
                                e.message
                            ));
                            earlier
                        }
                        _ => e,
                    });
                }
            }
        }
    }

    /// Run `f` until it succeeds or fails in a way that is not retried (see [`StepRetry::wait`]).
    pub fn run<T>(
        host: &Host<'_>,
        broker: &str,
        step: &str,
        mut f: impl FnMut() -> Result<T, ErrorOutput>,
    ) -> Result<T, ErrorOutput> {
        let mut retry = StepRetry::default();
        loop {
            match f() {
                Err(e) if retry.wait(host, broker, step, &e) => {}
                other => return other,
            }
        }
    }
}

/// The broker's human error text (`message`, `description`, `emsg`), truncated for messages.
pub fn broker_text(value: &serde_json::Value) -> Option<String> {
    ["message", "description", "emsg", "error"]
        .iter()
        .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
        .filter(|m| !m.is_empty())
        .map(|m| truncate(m, 200))
}

/// At most `max` characters of `text`.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A string field of a JSON object, non-empty.
pub fn str_field<'a>(value: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// `application/x-www-form-urlencoded` body of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// The first query parameter called `name` (exact name).
pub fn query_value(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `base` joined with `path` (`path` starts with `/`), keeping any path prefix of `base`.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_api::wire::WIRE_VERSION;

    fn resp(status: u16, ct: &str, body: &str) -> HttpResponse {
        HttpResponse {
            v: WIRE_VERSION,
            status,
            url: "https://example.com/".into(),
            headers: vec![["content-type".into(), ct.into()]],
            body: body.into(),
        }
    }

    #[test]
    fn triage_classes() {
        let r = triage("b", "s", &resp(429, "application/json", "{}")).unwrap();
        assert_eq!(r.class, ErrorClass::RateLimited);
        assert_eq!(r.retry_after_ms, Some(DEFAULT_RETRY_AFTER_MS));
        let r = triage("b", "s", &resp(503, "text/html", "<html>")).unwrap();
        assert_eq!(r.class, ErrorClass::BrokerUnavailable);
        let r = triage(
            "b",
            "s",
            &resp(502, "application/json", r#"{"message":"OMS down"}"#),
        )
        .unwrap();
        assert_eq!(r.class, ErrorClass::BrokerUnavailable);
        assert!(r.message.contains("OMS down"));
        assert!(triage("b", "s", &resp(403, "application/json", "{}")).is_none());
    }

    #[test]
    fn a_redirect_with_an_html_body_is_a_redirect_not_a_wall() {
        let mut r = resp(
            302,
            "text/html; charset=utf-8",
            "<a href=\"/next\">Found</a>.\n",
        );
        r.headers.push(["location".into(), "/next".into()]);
        assert!(is_redirect(&r));
        assert!(triage("b", "s", &r).is_none());
        let e = json_object("b", "s", &r).unwrap_err();
        assert_eq!(e.class, ErrorClass::BrokerUnavailable);
    }

    #[test]
    fn json_served_as_html_or_text_is_data() {
        for ct in [
            "text/html;charset=UTF-8",
            "text/plain",
            "application/json; charset=utf-8",
        ] {
            let r = resp(
                200,
                ct,
                "\u{feff} {\"status\":\"Not_Ok\",\"code\":\"EC016\"}",
            );
            assert!(!is_html(&r), "{ct}");
            assert!(triage("b", "s", &r).is_none(), "{ct}");
            assert!(json_object("b", "s", &r).is_ok(), "{ct}");
        }
        let r = resp(403, "text/html", "<html><body>Access Denied</body></html>");
        assert_eq!(
            triage("b", "s", &r).unwrap().class,
            ErrorClass::BrokerUnavailable
        );
        let empty = resp(200, "application/json", "");
        assert!(
            json_object("b", "s", &empty)
                .unwrap_err()
                .message
                .contains("empty body")
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(join("https://a/v1/", "/x"), "https://a/v1/x");
        assert_eq!(form(&[("a", "b c"), ("d", "&")]), "a=b+c&d=%26");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
