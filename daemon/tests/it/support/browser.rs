//! A headless Chromium driven over WebDriver, for tests that use pages as a person does: Debian's
//! `chromium` and `chromium-driver` (`scripts/test` installs them), through `fantoccini`.
//!
//! Without them a test says plainly that it was skipped, and passes, unless
//! `TOKENBOT_REQUIRE_BROWSER` or `CI` is set (`scripts/test` sets the first once it has the
//! browser): there a missing browser fails the test, so no run that should drive the browser
//! passes without it.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long chromedriver may take to answer, and Chromium to quit.
const PATIENCE: Duration = Duration::from_secs(20);

/// A WebDriver session in a fresh headless Chromium. Dropped, even by a failing test, it ends
/// chromedriver and the browser; [`Browser::close`] ends the session cleanly first.
pub struct Browser {
    pub client: Client,
    // Fields drop in order: the processes end before their profile is removed.
    driver: Driver,
    profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium with a window of 1280×900 and a new profile, or `None` after saying
    /// that `test` is skipped when there is no browser and none is required.
    pub async fn start(test: &str) -> Option<Browser> {
        let missing: Vec<&str> = [CHROMEDRIVER, CHROMIUM]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let required = ["TOKENBOT_REQUIRE_BROWSER", "CI"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
            assert!(
                !required,
                "{test}: no {} though a browser is required (TOKENBOT_REQUIRE_BROWSER or CI is \
                 set): install Debian's chromium and chromium-driver, as scripts/test does",
                missing.join(" or ")
            );
            super::say_skipped(
                test,
                &format!(
                    "no chromedriver: {} missing (scripts/test installs Debian's chromium and \
                     chromium-driver)",
                    missing.join(" and ")
                ),
            );
            return None;
        }
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, which Chromium joins: the browser outlives a killed
            // chromedriver, so the guard ends the whole group.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver { child };
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&url, &log).await;
        let user_data = profile.path().join("user-data");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    // The new headless mode is the browser's own renderer, as a person sees it.
                    "--headless=new",
                    // Chromium refuses its sandbox to root, which the tests run as under CI.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no browser session: {e}\nchromedriver's log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Some(Browser {
            client,
            driver,
            profile,
        })
    }

    /// End the session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        let Browser {
            client,
            driver,
            profile,
        } = self;
        client.close().await.expect("ending the browser session");
        drop(driver);
        drop(profile);
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait for chromedriver at `url` to say it is ready (or fail with its `log`).
async fn wait_ready(url: &str, log: &Path) {
    let status = format!("{url}/status");
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        if let Ok(r) = reqwest::get(&status).await
            && let Ok(body) = r.text().await
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&body)
            && body["value"]["ready"] == true
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "chromedriver did not answer at {url} within {PATIENCE:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// chromedriver, and with it every process of its group (Chromium's).
struct Driver {
    child: Child,
}

impl Driver {
    /// Send `signal` to the whole group; whether any process of it was there to get it.
    fn signal_group(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SIGTERM first, so Chromium quits as it would at a close (its crash handler, in a
        // session of its own, goes with it); SIGKILL for whatever is left after a while.
        self.signal_group("-TERM");
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            // Reaped, chromedriver no longer counts as the group's.
            let _ = self.child.try_wait();
            if !self.signal_group("-0") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}
