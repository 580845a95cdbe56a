//! The real binary on `127.0.0.1:0` against the fake Kite: provision through
//! `PUT /api/users/:userId/accounts/kite`, refresh through `/api/integration/tokens/refresh-all`,
//! read through `GET /api/tokens/:userId`, and the token is one the fake accepts; `/metrics` and
//! `/openapi.json` are served; SIGTERM lets an in-flight refresh finish before the daemon exits.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_brokers::{FakeKite, KiteUser};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tokenbot");
const KEY: &str = "e2e-service-key-0123456789";

/// Start `serve` in `dir` with the fake's URLs; the child and its address.
fn serve(dir: &Path, fake: &FakeKite) -> (Child, String) {
    std::fs::write(
        dir.join("tokenbot.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[vault]\npath = {:?}\n[plugins]\ndir = {:?}\n[log]\nformat = \"json\"\n",
            dir.join("vault.redb").display().to_string(),
            dir.join("plugins").display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["serve", "--dev"])
        .env_remove("TOKENBOT_CONFIG")
        .env_remove("ENCRYPTION_KEY")
        .env_remove("PORT")
        .env_remove("DATABASE_URL")
        .env("TOKENBOT_API_KEY", KEY)
        .env("JWT_SECRET", "e2e-jwt-secret-0123456789abcdefghij")
        .env("TOKENBOT_BROKERS__KITE__WEB_URL", fake.web_url())
        .env("TOKENBOT_BROKERS__KITE__API_URL", fake.api_url())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let json: Value = serde_json::from_str(&line).unwrap_or_default();
        if json["fields"]["message"] == "listening" {
            break json["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("the daemon did not stop within 30 s of SIGTERM");
}

fn kite_user(n: u32) -> (KiteUser, Value) {
    let secret = [
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF",
    ][n as usize - 1];
    let fields = json!({
        "broker_user_id": format!("AB000{n}"),
        "password": format!("pass-word-{n}!"),
        "api_key": format!("kiteapikey000{n}"),
        "api_secret": format!("kite-api-secret-000{n}"),
        "totp_secret": secret,
    });
    let user = KiteUser::new(
        fields["broker_user_id"].as_str().unwrap(),
        fields["password"].as_str().unwrap(),
        fields["api_key"].as_str().unwrap(),
        fields["api_secret"].as_str().unwrap(),
        secret,
    );
    (user, fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_refresh_read_against_the_fake_kite_and_drain_on_sigterm() {
    let fake = FakeKite::start().await;
    let (user1, fields1) = kite_user(1);
    let (user2, fields2) = kite_user(2);
    fake.add_user(user1);
    fake.add_user(user2);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path(), &fake);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    for (user, fields) in [("28748327", &fields1), ("u2", &fields2)] {
        let r = http
            .put(format!("{base}/api/users/{user}/accounts/kite"))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(fields.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    // Only the first account is refreshed by refresh-all; the second is paused for now.
    let r = http
        .patch(format!("{base}/api/users/u2/accounts/kite"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(json!({"auto_refresh": false}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .post(format!("{base}/api/integration/tokens/refresh-all"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(summary["successful"], 1, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["total"], 2, "{summary}");

    let r = http
        .get(format!("{base}/api/tokens/28748327"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(token["broker"], "kite");
    assert_eq!(token["broker_user_id"], "AB0001");
    assert!(fake.token_is_valid("kiteapikey0001", token["access_token"].as_str().unwrap()));

    let metrics = http
        .get(format!("{base}/metrics"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tokenbot_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("tokenbot_refresh_total"), "{metrics}");
    assert!(
        metrics.contains("tokenbot_login_duration_seconds_bucket"),
        "{metrics}"
    );
    let doc = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/api/tokens/{userId}"]["get"].is_object());

    // A consumer of token-change events, connected across SIGTERM: it hears of the token the
    // in-flight refresh stores, and its stream then ends instead of holding the drain.
    let mut events = http
        .get(format!("{base}/api/tokens/events"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    // SIGTERM while a refresh is in flight: the request still gets its answer.
    fake.recorder().set_latency(Duration::from_millis(300));
    let in_flight = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/api/integration/tokens/refresh/u2"))
                .header("x-api-key", KEY)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    });
    while fake.recorder().requests("/connect/login") < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let terminated = std::time::Instant::now();
    let (status, summary) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["successful"], 1, "{summary}");
    let mut seen = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.chunk()).await;
        match chunk.expect("the event stream ends with the daemon") {
            Ok(Some(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    assert!(
        seen.contains("event: token") && seen.contains(r#""user_id":"u2""#),
        "{seen}"
    );
    assert!(wait_exit(&mut child).success());
    // Well inside the server's 30 s drain, which a stream left open would have used up.
    assert!(terminated.elapsed() < Duration::from_secs(15));
}

/// A login started through the API whose caller went away (a client timeout) keeps running; on
/// SIGTERM the daemon waits for it, so its token is stored and no step is left half-used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_caller_went_away_still_finishes_before_the_daemon_exits() {
    let fake = FakeKite::start().await;
    let (user, fields) = kite_user(3);
    fake.add_user(user);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path(), &fake);
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/api/users/u3/accounts/kite"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(fields.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The first catch-up may already have logged it in: wait for it, then take a fresh login.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fake.recorder().requests("/user/profile");
    fake.recorder().set_latency(Duration::from_millis(400));
    let gone = http
        .post(format!("{base}/api/integration/tokens/refresh/u3"))
        .header("x-api-key", KEY)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up before the login ended");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut child).success());
    assert_eq!(
        fake.recorder().requests("/user/profile"),
        before + 1,
        "the login ran to its verification before the daemon exited"
    );
}
