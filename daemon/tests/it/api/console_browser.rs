//! The operator console in a real browser: headless Chromium (`support::browser`) on the API as
//! the daemon serves it (its own accept loop on a loopback socket), with the fake Kite behind it.
//! A person's walk: sign in by typing the key, the accounts, "Log in now" on an account that logs
//! in and on one whose password is wrong, that one first with its remedy, the needs-attention
//! filter, the credentials form fixing that password, refresh all with its progress bar moved by
//! server-sent events, sign out. After every page load the page's source and its visible text are searched
//! for each credential and token of the test accounts, and a screenshot goes to
//! `<target>/console-screenshots/NN-step.png`, for a person to look at.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Locator;
use secrecy::ExposeSecret;
use tokenbot::api::serve::{ServeOptions, serve};
use tokenbot::vault::AccountKey;

use super::support::*;
use crate::support::browser::Browser;
use crate::support::target_dir;

/// How long a page may take to show what a step waits for (a login against the fake included).
const WAIT: Duration = Duration::from_secs(20);

/// A browser on the console at `base`, checking each page it loads.
struct Walk<'a> {
    browser: &'a Browser,
    api: &'a TestApi,
    base: String,
    shots: PathBuf,
    step: usize,
}

impl Walk<'_> {
    async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.browser.client.goto(&url).await.unwrap();
    }

    /// Wait for the element `xpath` finds (the sign of the page a step leads to).
    async fn wait_for(&self, xpath: &str) {
        let waited = self
            .browser
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await;
        if let Err(e) = waited {
            let source = self.browser.client.source().await.unwrap_or_default();
            panic!("no {xpath} within {WAIT:?} ({e}); the page:\n{source}");
        }
    }

    /// Wait for the page whose heading is `h1`.
    async fn wait_for_heading(&self, h1: &str) {
        self.wait_for(&format!("//h1[normalize-space()='{h1}']"))
            .await;
    }

    async fn click(&self, locator: Locator<'_>) {
        let element = self.browser.client.find(locator).await.unwrap();
        element.click().await.unwrap();
    }

    /// Click the button that reads `label`.
    async fn press(&self, label: &str) {
        self.click(Locator::XPath(&format!(
            "//button[normalize-space()='{label}']"
        )))
        .await;
    }

    /// The checks every loaded page gets, named `name`: no secret of the test accounts (as the
    /// vault holds them now, so a token stored by the last step is among them) in its source or
    /// its visible text, its stylesheet applied, and a screenshot. Returns the visible text.
    async fn page(&mut self, name: &str) -> String {
        let client = &self.browser.client;
        let source = client.source().await.unwrap();
        let text = client
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let secrets = secrets_of(self.api);
        assert_holds_no_secret(&format!("the source of page {name}"), &source, &secrets);
        assert_holds_no_secret(&format!("the text of page {name}"), &text, &secrets);
        // The stylesheet was allowed by the page's CSP, loaded, and has rules: a page without
        // it is readable in the source and unusable in the browser.
        let styled = client
            .execute(
                "return [...document.styleSheets].some(s => \
                 s.href.endsWith('/console/console.css') && s.cssRules.length > 0)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(styled, true, "page {name} without its stylesheet");
        self.step += 1;
        let png = client.screenshot().await.unwrap();
        let file = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&file, png).unwrap();
        text
    }

    /// The visible text of each row of the accounts table, in order.
    async fn account_rows(&self) -> Vec<String> {
        let rows = self
            .browser
            .client
            .find_all(Locator::Css("table.accounts tbody tr"))
            .await
            .unwrap();
        let mut texts = Vec::new();
        for row in rows {
            texts.push(row.text().await.unwrap());
        }
        texts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_logs_accounts_in_sees_the_remedy_and_signs_out_in_a_browser() {
    let Some(browser) = Browser::start("a_person_signs_in..._in_a_browser").await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The public URL is the one the browser opens: plain http, so the session cookie comes
    // without `Secure`, as for any http origin (console.rs checks the https one).
    let public = base.parse().unwrap();
    let (t, _fake) = api_with_two_kite_accounts(|c| c.server.public_url = Some(public)).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        header_read_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(5),
        max_connections: 64,
    };
    let server = tokio::spawn(serve(listener, t.app.clone(), options, async {
        let _ = stopped.await;
    }));
    let shots = target_dir().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut walk = Walk {
        browser: &browser,
        api: &t,
        base,
        shots,
        step: 0,
    };

    // Without a session: the sign-in form. The key is typed and sent as a person would.
    walk.goto("/console").await;
    walk.wait_for_heading("Sign in").await;
    let text = walk.page("sign-in").await;
    assert!(text.contains("Sign in with a service API key"), "{text}");
    assert!(!text.contains("Sign out"), "{text}");
    let key = browser.client.find(Locator::Id("key")).await.unwrap();
    key.send_keys(BACKEND_KEY).await.unwrap();
    walk.press("Sign in").await;
    walk.wait_for_heading("Overview").await;
    let text = walk.page("overview").await;
    assert!(text.contains("Sign out"), "{text}");

    walk.click(Locator::LinkText("Accounts")).await;
    walk.wait_for_heading("Accounts").await;
    walk.page("accounts").await;
    let rows = walk.account_rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().any(|r| r.starts_with("u1 kite active")),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("u2 kite active")),
        "{rows:?}"
    );

    // "Log in now" on u1, whose credentials the fake Kite takes: a token is stored.
    walk.click(Locator::LinkText("u1")).await;
    walk.wait_for_heading("u1 at kite").await;
    walk.page("u1").await;
    walk.press("Log in now").await;
    walk.wait_for("//p[contains(@class, 'flash')]").await;
    let u1 = AccountKey::parse("u1", "kite").unwrap();
    let token = t.vault().get_token(&u1).unwrap().expect("u1's new token");
    assert!(secrets_of(&t).contains(&token.access_token.expose_secret().to_owned()));
    let text = walk.page("u1-logged-in").await;
    assert!(text.contains("Logged in: a new token is stored."), "{text}");
    assert!(text.contains("Logged in (token valid now)\nyes"), "{text}");

    // On u2, whose stored password the broker refuses: it needs attention, with its remedy.
    walk.click(Locator::LinkText("Accounts")).await;
    walk.wait_for_heading("Accounts").await;
    walk.click(Locator::LinkText("u2")).await;
    walk.wait_for_heading("u2 at kite").await;
    walk.press("Log in now").await;
    walk.wait_for("//p[contains(@class, 'flash')]").await;
    let text = walk.page("u2-wrong-password").await;
    assert!(text.contains("The login failed"), "{text}");
    assert!(text.contains("Needs attention: wrong password"), "{text}");
    assert!(text.contains("What to do: update it"), "{text}");

    walk.click(Locator::LinkText("Accounts")).await;
    walk.wait_for_heading("Accounts").await;
    walk.page("accounts-after-logins").await;
    let rows = walk.account_rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with("u2 kite needs attention")
            && rows[0].contains("wrong password: update it"),
        "needing attention first, with its remedy: {rows:?}"
    );
    assert!(rows[1].starts_with("u1 kite active"), "{rows:?}");

    // The state filter, chosen in its list: u2 alone.
    let state = browser
        .client
        .find(Locator::Css("select[name='state']"))
        .await
        .unwrap();
    state.select_by_label("needs attention").await.unwrap();
    walk.press("Filter").await;
    walk.wait_for("//p[normalize-space()='1 of 2 accounts.']")
        .await;
    walk.page("needs-attention").await;
    let rows = walk.account_rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("u2 kite needs attention"), "{rows:?}");

    // The remedy, followed: only the password typed on u2's credentials form; the other
    // secrets stay, and the attention clears since the refused field changed.
    walk.click(Locator::LinkText("u2")).await;
    walk.wait_for_heading("u2 at kite").await;
    walk.click(Locator::LinkText("Change the credentials…"))
        .await;
    walk.wait_for_heading("Credentials of u2 at kite").await;
    walk.page("u2-credentials").await;
    let password = browser
        .client
        .find(Locator::Id("f-password"))
        .await
        .unwrap();
    password.send_keys(KITE_REAL_PASSWORD_2).await.unwrap();
    walk.press("Save").await;
    walk.wait_for_heading("u2 at kite").await;
    let text = walk.page("u2-credentials-saved").await;
    assert!(
        text.contains("Credentials saved; the account no longer needs attention."),
        "{text}"
    );

    // Refresh all from the overview: the bar is moved by the run's server-sent events (the
    // page's script, allowed by its CSP) and ends in the summary.
    walk.click(Locator::LinkText("Overview")).await;
    walk.wait_for_heading("Overview").await;
    walk.press("Refresh all").await;
    walk.wait_for_heading("Refresh all").await;
    walk.wait_for(
        "//p[@id='refresh-state' and normalize-space()='Finished: 2 successful, 0 failed, 0 \
         skipped, of 2.']",
    )
    .await;
    let bar = browser
        .client
        .execute(
            "const b = document.getElementById('refresh-bar'); return [b.value, b.max];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bar, serde_json::json!([2, 2]));
    let text = walk.page("refresh-all").await;
    assert!(text.contains("Successful"), "{text}");
    walk.click(Locator::LinkText("Back to the overview")).await;
    walk.wait_for_heading("Overview").await;
    let text = walk.page("overview-after-refresh-all").await;
    assert!(
        text.contains("Last refresh of every account, started by the API or the console"),
        "{text}"
    );

    // Signing out ends the session: the sign-in form, and no page without signing in again.
    walk.press("Sign out").await;
    walk.wait_for_heading("Sign in").await;
    let text = walk.page("signed-out").await;
    assert!(!text.contains("Sign out"), "{text}");
    walk.goto("/console/accounts").await;
    walk.wait_for_heading("Sign in").await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/console");

    browser.close().await;
    stop.send(()).unwrap();
    server.await.unwrap();
}
