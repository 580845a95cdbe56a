//! The console's refresh-all (its server-sent progress, its summary, the overview's last run)
//! and its credentials forms (change a stored account, add one), through `oneshot` against the
//! fake Kite of `api_with_two_kite_accounts`: `u1` provisioned right, `u2` with a password the fake
//! refuses.

use secrecy::ExposeSecret;
use serde_json::Value;
use tokenbot::vault::AccountKey;

use super::console::{get, log_in_now, post};
use super::support::*;

/// The `(event, data)` pairs of a `text/event-stream` body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
            };
            Some((
                field("event:")?,
                serde_json::from_str(&field("data:")?).unwrap(),
            ))
        })
        .collect()
}

fn stored(t: &TestApi, user: &str, field: &str) -> String {
    let key = AccountKey::parse(user, "kite").unwrap();
    let credentials = t.vault().credentials(&key).unwrap().unwrap();
    credentials.get(field).unwrap().expose_secret().to_owned()
}

fn needs_attention(t: &TestApi, user: &str) -> bool {
    let key = AccountKey::parse(user, "kite").unwrap();
    t.vault()
        .get_account(&key)
        .unwrap()
        .unwrap()
        .attention
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_all_streams_its_progress_and_ends_in_the_summary_the_overview_then_shows() {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    let before = t.send(get("/console", Some(&s))).await;
    assert!(
        before
            .text
            .contains("No refresh of every account since the daemon started."),
        "{}",
        before.text
    );
    let started = t
        .send(post(
            "/console/refresh-all",
            Some(&s),
            &format!("csrf={}", s.csrf),
        ))
        .await;
    started.expect(303);
    assert_eq!(started.headers["location"], "/console/refresh-all");

    // The stream ends by itself with the run: progress as accounts finish, then `done`.
    let stream = t.send(get("/console/refresh-all/events", Some(&s))).await;
    stream.expect(200);
    assert!(
        stream.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = events(&stream.text);
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.0, "done", "{}", stream.text);
    assert_eq!(
        last.1,
        serde_json::json!({"done": 2, "total": 2, "successful": 1, "failed": 1, "skipped": 0, "finished": true})
    );
    let mut done = 0;
    for (name, data) in rest {
        assert_eq!(name, "progress", "{}", stream.text);
        assert_eq!(data["total"], 2);
        let now = data["done"].as_u64().unwrap();
        assert!(now >= done && now <= 2, "{}", stream.text);
        done = now;
    }

    // The page shows the summary and the account it did not log in, with why.
    let page = t.send(get("/console/refresh-all", Some(&s))).await;
    page.expect(200);
    for cell in [
        "<td id=\"refresh-successful\">1</td>",
        "<td id=\"refresh-failed\">1</td>",
        "<td id=\"refresh-skipped\">0</td>",
        "<td id=\"refresh-total\">2</td>",
        "<a href=\"/console/accounts/u2/kite\">u2</a>",
    ] {
        assert!(page.text.contains(cell), "{cell}: {}", page.text);
    }
    assert!(!page.text.contains(">u1</a>"), "{}", page.text);
    assert!(
        page.text
            .contains("<script src=\"/console/console.js\" defer>")
    );

    let overview = t.send(get("/console", Some(&s))).await;
    assert!(
        overview
            .text
            .contains("Last refresh of every account, started by the API or the console"),
        "{}",
        overview.text
    );
    assert!(
        overview
            .text
            .contains("<tr><td>1</td><td>1</td><td>0</td><td>2</td></tr>"),
        "{}",
        overview.text
    );
    // The script the page loads is served, and the page's policy lets only this origin's run.
    let script = t.send(get("/console/console.js", None)).await;
    script.expect(200);
    assert!(script.text.contains("EventSource"));
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_form_changes_only_what_is_typed_and_clears_attention_only_when_that_can_help()
 {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    log_in_now(&t, &s, "u2").await;
    assert!(needs_attention(&t, "u2"));
    let form = t
        .send(get("/console/accounts/u2/kite/credentials", Some(&s)))
        .await;
    form.expect(200);
    assert!(form.text.contains("value=\"AB2\""), "{}", form.text);
    assert!(
        form.text.contains("name=\"password\" type=\"password\""),
        "{}",
        form.text
    );
    let fields = kite_fields("2");
    for name in ["password", "api_key", "api_secret", "totp_secret"] {
        let secret = fields[name].as_str().unwrap();
        assert!(!form.text.contains(secret), "{name} shown");
    }
    let path = "/console/accounts/u2/kite/credentials";
    let send = |body: String| t.send(post(path, Some(&s), &body));

    // Saved unchanged: the refused password would go again, so attention stays.
    let same = send(format!("csrf={}&broker_user_id=AB2&password=", s.csrf)).await;
    same.expect(303);
    assert!(needs_attention(&t, "u2"));
    let page = t.send(get("/console/accounts/u2/kite", Some(&s))).await;
    assert!(page.text.contains("still needs attention"), "{}", page.text);

    // A QR code's text asking for a 60 s step is refused by name; nothing changes.
    let uri = "otpauth%3A%2F%2Ftotp%2FKite%3AAB2%3Fsecret%3DKRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF%26period%3D60";
    let refused = send(format!("csrf={}&totp_secret={uri}", s.csrf)).await;
    refused.expect(422);
    assert!(refused.text.contains("period=60"), "{}", refused.text);
    assert!(!refused.text.contains("KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF"));
    assert_eq!(stored(&t, "u2", "totp_secret"), fields["totp_secret"]);

    // Only the password typed: it replaces the stored one, the rest stay, attention clears.
    let fixed = send(format!("csrf={}&password=the-real-password-2", s.csrf)).await;
    fixed.expect(303);
    assert!(!needs_attention(&t, "u2"));
    assert_eq!(stored(&t, "u2", "password"), "the-real-password-2");
    assert_eq!(stored(&t, "u2", "api_secret"), fields["api_secret"]);
    let page = log_in_now(&t, &s, "u2").await;
    assert!(
        page.text.contains("Logged in: a new token is stored."),
        "{}",
        page.text
    );

    // The same secret as an otpauth:// URI with the defaults is accepted.
    let uri = "otpauth%3A%2F%2Ftotp%2FKite%3AAB2%3Fsecret%3DJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP%26issuer%3DKite%26period%3D30";
    send(format!("csrf={}&totp_secret={uri}", s.csrf))
        .await
        .expect(303);
    assert!(stored(&t, "u2", "totp_secret").starts_with("otpauth://totp/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_from_the_console_passes_the_apis_checks() {
    let (t, _fake) = api_with_two_kite_accounts(|_| {}).await;
    let s = t.console_sign_in(BACKEND_KEY).await;
    let choose = t.send(get("/console/accounts/new", Some(&s))).await;
    choose.expect(200);
    assert!(
        choose.text.contains("<option value=\"kite\">kite</option>"),
        "{}",
        choose.text
    );
    let form = t
        .send(get("/console/accounts/new?broker=kite", Some(&s)))
        .await;
    assert!(form.text.contains("name=\"totp_secret\""), "{}", form.text);

    let add = |body: String| t.send(post("/console/accounts/new", Some(&s), &body));
    let partial = add(format!(
        "csrf={}&broker=kite&user_id=u3&broker_user_id=AB3&password=pw&api_key=k&api_secret=s",
        s.csrf
    ))
    .await;
    partial.expect(422);
    assert!(
        partial.text.contains("missing field `totp_secret`"),
        "{}",
        partial.text
    );
    assert!(
        partial.text.contains("value=\"u3\""),
        "the form keeps the user id"
    );
    assert!(
        t.vault()
            .get_account(&AccountKey::parse("u3", "kite").unwrap())
            .unwrap()
            .is_none()
    );

    let full = format!(
        "csrf={}&broker=kite&user_id=u3&broker_user_id=AB3&password=pw-3&api_key=key3&api_secret=secret-3&totp_secret=JBSWY3DPEHPK3PXP",
        s.csrf
    );
    let added = add(full.clone()).await;
    added.expect(303);
    assert_eq!(added.headers["location"], "/console/accounts/u3/kite");
    assert_eq!(stored(&t, "u3", "password"), "pw-3");
    // An account that exists is changed from its page, never overwritten from this form.
    let again = add(full.replace("pw-3", "other")).await;
    again.expect(409);
    assert_eq!(stored(&t, "u3", "password"), "pw-3");
}
