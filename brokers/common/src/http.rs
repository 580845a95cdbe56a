//! Turning host failures and broker responses into error classes, the same way for every broker.
//!
//! Messages built here never include a request or response body: bodies may carry tokens. Only
//! the broker's own error text (its `message` field) is quoted, truncated.

use broker_api::abi::Status;
use broker_api::guest::HostCallError;
use broker_api::wire::{ErrorClass, ErrorOutput, HttpResponse};

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

/// Whether the response is an HTML page (a login page, an error page, a Cloudflare challenge).
pub fn is_html(resp: &HttpResponse) -> bool {
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

/// The classes every broker shares: 429 is `rate_limited`; an HTML page or a 5xx is
/// `broker_unavailable`. `None` when the strategy should read the body itself.
pub fn triage(broker: &str, step: &str, resp: &HttpResponse) -> Option<ErrorOutput> {
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

/// The body as JSON, if it is JSON.
pub fn json(resp: &HttpResponse) -> Option<serde_json::Value> {
    serde_json::from_str(&resp.body).ok()
}

/// The body as a JSON object, else a `protocol` error.
pub fn json_object(
    broker: &str,
    step: &str,
    resp: &HttpResponse,
) -> Result<serde_json::Value, ErrorOutput> {
    match json(resp) {
        Some(v) if v.is_object() => Ok(v),
        _ => Err(ErrorOutput::new(
            ErrorClass::Protocol,
            format!(
                "{broker}: {step}: HTTP {} with a body that is not a JSON object",
                resp.status
            ),
        )),
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
    fn helpers() {
        assert_eq!(join("https://a/v1/", "/x"), "https://a/v1/x");
        assert_eq!(form(&[("a", "b c"), ("d", "&")]), "a=b+c&d=%26");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
