//! `GET /api/tokens/events` and `[events] webhook_url`: one event per token change, never the
//! token; resume with `Last-Event-ID`; a reset for an id outside the retention window.

use std::sync::Arc;
use std::time::Duration;

use axum::body::BodyDataStream;
use axum::extract::ConnectInfo;
use axum::http::Method;
use fake_brokers::FakeKite;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokenbot::config::Config;
use tokenbot::vault::AccountKey;
use tower::ServiceExt;

use super::support::*;

const EVENTS: &str = "/api/tokens/events";

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

/// An open event stream: its events as they come, and everything it sent.
struct Stream {
    body: BodyDataStream,
    buf: String,
    raw: String,
}

impl Stream {
    /// The next event (comments skipped), or `None` if none comes within `wait`.
    async fn within(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut sse = Sse {
                    event: String::new(),
                    id: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        sse.event = v.into();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        sse.id = v.into();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        sse.data = serde_json::from_str(v).unwrap();
                    }
                }
                if sse.event.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(sse);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await;
            let chunk = chunk.ok()??.unwrap();
            let text = String::from_utf8(chunk.to_vec()).unwrap();
            self.raw.push_str(&text);
            self.buf.push_str(&text);
        }
    }

    async fn next(&mut self) -> Sse {
        self.within(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }
}

/// Open the stream as the backend, after `last_id` if given.
async fn open(api: &TestApi, last_id: Option<&str>) -> Stream {
    let mut req = request(Method::GET, EVENTS, &KEY, None);
    if let Some(id) = last_id {
        req.headers_mut()
            .insert("last-event-id", id.parse().unwrap());
    }
    req.extensions_mut().insert(ConnectInfo(api.peer));
    let response = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Stream {
        body: response.into_body().into_data_stream(),
        buf: String::new(),
        raw: String::new(),
    }
}

/// An API with the fake Kite and account `u1` provisioned, on one manual clock.
async fn with_kite(change: impl FnOnce(&mut Config)) -> (TestApi, FakeKite) {
    api_with_kite(0, change).await
}

async fn login(api: &TestApi) {
    let refreshed = api
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &KEY,
            None,
        ))
        .await;
    assert_eq!(refreshed.json["successful"], 1, "{}", refreshed.text);
}

#[tokio::test]
async fn the_stream_needs_an_api_key_and_a_numeric_last_event_id() {
    let api = TestApi::new();
    for who in [As::Nobody, As::Key("wrong-key-0123456789"), jwt("u1")] {
        api.send(request(Method::GET, EVENTS, &who, None))
            .await
            .expect_error(401, "unauthorized");
    }
    for bad in ["abc", "-1", "1e3", "18446744073709551616"] {
        let mut req = request(Method::GET, EVENTS, &KEY, None);
        req.headers_mut()
            .insert("last-event-id", bad.parse().unwrap());
        let reply = api.send(req).await;
        reply.expect_error(400, "invalid_last_event_id");
        assert!(!reply.text.contains(bad), "{}", reply.text);
    }
    // Still serving, and an empty id is the spec's "no id".
    api.seed("u1", "kite", Some(HOUR));
    let mut stream = open(&api, Some("")).await;
    assert!(stream.within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_sends_exactly_one_event_with_its_generation_and_no_token() {
    let (api, _fake) = with_kite(|_| {}).await;
    let mut stream = open(&api, None).await;
    login(&api).await;
    let event = stream.next().await;
    let key = AccountKey::parse("u1", "kite").unwrap();
    let token = api.vault().get_token(&key).unwrap().expect("a token");
    assert_eq!(event.event, "token");
    assert!(event.id.parse::<u64>().unwrap() > 0, "{event:?}");
    assert_eq!(
        event.data,
        serde_json::json!({
            "user_id": "u1",
            "broker": "kite",
            "generation": token.generation,
            "expires_at": tokenbot::clock::iso(token.expires_at_ms),
            "status": "active",
        })
    );
    assert!(stream.within(Duration::from_millis(300)).await.is_none());
    let secret = token.access_token.expose_secret();
    assert!(secret.len() > 8);
    assert!(!stream.raw.contains(secret), "{}", stream.raw);
}

#[tokio::test]
async fn a_resume_gets_only_later_changes_and_a_removal_is_a_revoked_event() {
    let api = TestApi::new();
    let mut stream = open(&api, None).await;
    api.seed("u1", "kite", Some(HOUR));
    api.seed("u2", "kite", Some(HOUR));
    api.seed("u3", "kite", Some(HOUR));
    let first = stream.next().await;
    let users: Vec<String> = [stream.next().await, stream.next().await]
        .iter()
        .map(|e| e.data["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["u2", "u3"]);

    let mut resumed = open(&api, Some(&first.id)).await;
    let later: Vec<String> = [resumed.next().await, resumed.next().await]
        .iter()
        .map(|e| e.data["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(later, ["u2", "u3"]);
    assert!(resumed.within(Duration::from_millis(200)).await.is_none());

    api.send(request(
        Method::DELETE,
        "/api/users/u2/accounts/kite",
        &KEY,
        None,
    ))
    .await
    .expect(200);
    let revoked = resumed.next().await;
    assert_eq!(revoked.event, "token");
    assert_eq!(revoked.data["user_id"], "u2");
    assert_eq!(revoked.data["status"], "revoked");
    assert_eq!(revoked.data["expires_at"], Value::Null);
    assert_eq!(stream.next().await.id, revoked.id);
}

#[tokio::test]
async fn an_id_older_than_the_retention_window_gets_a_reset_not_a_silent_gap() {
    let api = TestApi::with(|c| c.events.retention_secs = 60);
    let mut stream = open(&api, None).await;
    api.seed("u1", "kite", Some(HOUR));
    let first = stream.next().await;
    api.seed("u2", "kite", Some(HOUR));
    let second = stream.next().await;
    api.clock.set(MORNING + 61_000);

    let mut late = open(&api, Some(&first.id)).await;
    let reset = late.next().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.data["reason"], "missed");
    assert_eq!(reset.id, second.id, "a reset names the latest change");
    // Having seen the latest, nothing was missed; later changes still come.
    let mut current = open(&api, Some(&second.id)).await;
    assert!(current.within(Duration::from_millis(200)).await.is_none());
    api.seed("u3", "kite", Some(HOUR));
    assert_eq!(late.next().await.data["user_id"], "u3");
    assert_eq!(current.next().await.data["user_id"], "u3");

    let ahead = open(&api, Some("999999")).await.next().await;
    assert_eq!(
        (ahead.event.as_str(), &ahead.data["reason"]),
        ("reset", &Value::from("unknown_id"))
    );
}

/// A loopback webhook receiver: every body it is POSTed, in order.
async fn receiver() -> (url::Url, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/{secret}",
        axum::routing::post(move |body: String| {
            let _ = tx.send(body);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/path-secret-1",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url.parse().unwrap(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_receives_the_same_event_as_the_stream_without_the_token() {
    let (url, mut bodies) = receiver().await;
    let (api, _fake) = with_kite(|c| c.events.webhook_url = Some(url)).await;
    let task = tokenbot::events::webhook::spawn(
        &api.state.events,
        &api.state.config.events,
        api.state.cluster.subscribe(),
    );
    let task = task.expect("a webhook task");
    let mut stream = open(&api, None).await;
    login(&api).await;
    let event = stream.next().await;
    let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    let key = AccountKey::parse("u1", "kite").unwrap();
    let token = api.vault().get_token(&key).unwrap().unwrap();
    assert!(!body.contains(token.access_token.expose_secret()), "{body}");
    let mut posted: Value = serde_json::from_str(&body).unwrap();
    let fields = posted.as_object_mut().unwrap();
    assert_eq!(fields.remove("event"), Some("token".into()));
    assert_eq!(fields.remove("id").unwrap().to_string(), event.id);
    assert_eq!(posted, event.data);
    // The task ends with the hub (shutdown), and so does the stream.
    api.state.events.close();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(stream.within(Duration::from_secs(5)).await.is_none());
}

/// A receiver that answers each POST with the next status of `statuses` (then 200), and passes
/// on every body it got with the status it answered.
async fn scripted_receiver(
    statuses: Vec<u16>,
) -> (
    url::Url,
    tokio::sync::mpsc::UnboundedReceiver<(u16, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let script = Arc::new(std::sync::Mutex::new(statuses.into_iter()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let status = script.lock().unwrap().next().unwrap_or(200);
            let _ = tx.send((status, body));
            async move { axum::http::StatusCode::from_u16(status).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url.parse().unwrap(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_retries_a_5xx_and_a_429_but_not_a_4xx() {
    // 503 then 429 then 200: one event, three tries, delivered.
    let (url, mut posts) = scripted_receiver(vec![503, 429]).await;
    let (api, _fake) = with_kite(|c| c.events.webhook_url = Some(url)).await;
    let task = tokenbot::events::webhook::spawn(
        &api.state.events,
        &api.state.config.events,
        api.state.cluster.subscribe(),
    );
    login(&api).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let post = tokio::time::timeout(Duration::from_secs(10), posts.recv()).await;
        seen.push(post.expect("a retry within 10 s").unwrap());
    }
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [503, 429, 200]
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 == w[1].1),
        "the same event each time"
    );
    api.state.events.close();
    task.unwrap().await.unwrap();

    // 400: refused for good, not tried again; the next event still goes.
    let (url, mut posts) = scripted_receiver(vec![400]).await;
    let (api, _fake) = with_kite(|c| c.events.webhook_url = Some(url)).await;
    let task = tokenbot::events::webhook::spawn(
        &api.state.events,
        &api.state.config.events,
        api.state.cluster.subscribe(),
    );
    login(&api).await;
    let (status, first) = posts.recv().await.unwrap();
    assert_eq!(status, 400);
    api.send(request(
        Method::DELETE,
        "/api/users/u1/accounts/kite",
        &KEY,
        None,
    ))
    .await
    .expect(200);
    let (status, next) = tokio::time::timeout(Duration::from_secs(10), posts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_ne!(first, next, "the refused event was not sent again: {next}");
    assert!(next.contains("revoked"), "{next}");
    api.state.events.close();
    task.unwrap().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_keep_alive_comments() {
    let (api, _fake) = with_kite(|c| c.events.keepalive_secs = 1).await;
    let mut stream = open(&api, None).await;
    assert!(stream.within(Duration::from_millis(2_500)).await.is_none());
    let comments = stream.raw.lines().filter(|l| l.starts_with(':')).count();
    assert!(
        comments >= 1,
        "no keep-alive comment in 2.5 s: {:?}",
        stream.raw
    );
}
