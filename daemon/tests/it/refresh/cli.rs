//! `tokenbot refresh` (the real binary) on a vault no daemon holds, against the fake brokers.

use std::process::Command;

use fake_brokers::{FakeIifl, FakeKite, FakeXts, IiflUser, KiteUser, XtsUser};
use secrecy::SecretString;
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, Vault, VaultOptions,
};

const KEY_BYTE: u8 = 0x5a;

fn add(vault: &Vault, kite: &FakeKite, n: u32, stored_password: &str) {
    let secret = [
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    ][n as usize % 2];
    let user = format!("CL{n:03}");
    kite.add_user(KiteUser::new(
        &user,
        &format!("pw-{n}"),
        &format!("key-{n}"),
        &format!("sec-{n}"),
        secret,
    ));
    vault
        .put_account(&NewAccount {
            key: AccountKey::parse(&format!("user-{n}"), "kite").unwrap(),
            broker_user_id: user,
            credentials: Credentials {
                password: Some(SecretString::from(stored_password.to_owned())),
                api_key: Some(SecretString::from(format!("key-{n}"))),
                api_secret: Some(SecretString::from(format!("sec-{n}"))),
                totp_secret: Some(SecretString::from(secret.to_owned())),
                extra: Default::default(),
            },
            auto_refresh: true,
            managed_externally: false,
        })
        .unwrap();
}

/// A working directory with a vault holding Kite accounts `(n, stored password)` and a
/// `tokenbot.toml` pointing at `kite`, plus `extra` configuration lines first.
fn kite_workdir(kite: &FakeKite, accounts: &[(u32, &str)], extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vault_path = dir.path().join("vault.redb");
    {
        let key = KeyMaterial::Key(MasterKey::from_bytes([KEY_BYTE; 32]));
        let vault =
            Vault::create(&vault_path, Engine::Redb, &key, VaultOptions::default()).unwrap();
        for (n, password) in accounts {
            add(&vault, kite, *n, password);
        }
    }
    let urls = kite.base_urls();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "{extra}[vault]\npath = {:?}\n[brokers.kite]\nweb_url = {:?}\napi_url = {:?}\nrate_limit_per_sec = 1000.0\n",
            vault_path.display().to_string(),
            urls["web_url"],
            urls["api_url"]
        ),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_prints_the_summary_and_fails_when_any_account_failed() {
    let kite = FakeKite::start().await;
    let dir = kite_workdir(&kite, &[(1, "pw-1"), (2, "wrong-password")], "");
    let workdir = dir.path().to_owned();
    let run = move |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tokenbot"))
            .current_dir(&workdir)
            .env("ENCRYPTION_KEY", hex::encode([KEY_BYTE; 32]))
            .env_remove("TOKENBOT_CONFIG")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };

    // The fake runs on this runtime: the binary runs on a blocking thread meanwhile.
    let ((all_code, all), (one_code, one), token, missing, logs) =
        tokio::task::spawn_blocking(move || {
            (
                run(&["refresh", "--verbose"]),
                run(&["refresh", "--user", "user-1"]),
                run(&["token", "get", "user-1"]),
                run(&["token", "get", "user-2", "--broker", "kite"]),
                run(&["logs", "user-2"]),
            )
        })
        .await
        .unwrap();
    assert_eq!((all_code, one_code), (Some(1), Some(0)), "{all}\n{one}");
    for expected in ["Successful: 1", "Failed: 1", "Skipped: 0", "Total: 2"] {
        assert!(
            all.lines().any(|l| l == expected),
            "missing {expected:?} in\n{all}"
        );
    }
    assert!(
        all.contains("user-2/kite: failed (1 attempt) invalid_credentials"),
        "{all}"
    );
    assert!(all.contains("user-1/kite: success (1 attempt)"), "{all}");
    assert!(one.lines().any(|l| l == "Total: 1"), "{one}");
    assert!(
        !all.contains("pw-1") && !all.contains("wrong-password"),
        "a password was printed"
    );
    assert_eq!(
        kite.recorder().passwords("CL002").len(),
        1,
        "the wrong password was sent once"
    );

    // token get: the API's JSON; the token is one the broker accepts.
    assert_eq!(token.0, Some(0), "{}", token.1);
    let json: serde_json::Value = serde_json::from_str(&token.1).unwrap();
    assert_eq!(
        (json["user_id"].as_str(), json["broker"].as_str()),
        (Some("user-1"), Some("kite"))
    );
    assert!(kite.token_is_valid("key-1", json["access_token"].as_str().unwrap()));
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(missing.0, Some(1), "no token: exit status 1");
    // logs: newest first, with the failure's class.
    assert_eq!(logs.0, Some(0));
    let json: serde_json::Value = serde_json::from_str(&logs.1).unwrap();
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{json}");
    assert_eq!(attempts[0]["error_class"], "invalid_credentials");
    assert_eq!(attempts[0]["trigger"], "manual");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_goes_through_a_running_daemon_that_holds_the_vault() {
    let kite = FakeKite::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = kite_workdir(
        &kite,
        &[(3, "pw-3"), (4, "pw-4")],
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let workdir = dir.path().to_owned();
    let command = move |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenbot"));
        cmd.current_dir(&workdir)
            .env("ENCRYPTION_KEY", hex::encode([KEY_BYTE; 32]))
            .env("TOKENBOT_API_KEY", "cli-to-daemon-key")
            .env_remove("TOKENBOT_CONFIG")
            .args(args);
        cmd
    };
    let mut daemon = command(&["serve"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}/health");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "the daemon did not come up");
    // The daemon's own catch-up may log these accounts in first; either way the CLI's refresh
    // goes through the daemon (single flight there) and reports both accounts.
    let cli = command.clone();
    let output = tokio::task::spawn_blocking(move || {
        cli(&["refresh", "--broker", "kite"]).output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("through its API"), "{stderr}");
    for expected in ["Successful: 2", "Failed: 0", "Skipped: 0", "Total: 2"] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

/// What a new user does: `init`, `user add --from-json` for a Kite, an IIFL and an IIFL-XTS
/// account, then `refresh --user --broker` for each, against the realistic fakes (HTML bodies on
/// redirects, JSON as `text/plain`, chunked and gzip bodies, cookies with real attributes).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_logs_in_kite_iifl_and_xts_accounts_from_the_command_line() {
    const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let (kite, iifl, xts) = (
        FakeKite::start().await,
        FakeIifl::start().await,
        FakeXts::start().await,
    );
    kite.add_user(KiteUser::new(
        "ZR1234",
        "kite-pw-1",
        "kitekey1",
        "kite-secret-1",
        TOTP,
    ));
    iifl.add_user(IiflUser::new(
        "CL0042",
        "Iifl#pw1",
        "iiflkey1",
        "iifl-secret-1",
        TOTP,
    ));
    xts.add_user(XtsUser::new("XT0007", "xtskey1", "xts-secret-1"));
    let dir = tempfile::tempdir().unwrap();
    let (k, i, x) = (kite.base_urls(), iifl.base_urls(), xts.base_urls());
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "[vault]\npath = \"vault.redb\"\n\
             [brokers.kite]\nweb_url = {:?}\napi_url = {:?}\n\
             [brokers.iifl]\nportal_url = {:?}\napi_url = {:?}\n\
             [brokers.iifl-xts]\napi_url = {:?}\n",
            k["web_url"], k["api_url"], i["portal_url"], i["api_url"], x["api_url"]
        ),
    )
    .unwrap();
    let accounts = [
        (
            "kite",
            r#"{"broker_user_id":"ZR1234","password":"kite-pw-1","api_key":"kitekey1","api_secret":"kite-secret-1","totp_secret":"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}"#,
        ),
        (
            "iifl",
            r#"{"broker_user_id":"CL0042","password":"Iifl#pw1","api_key":"iiflkey1","api_secret":"iifl-secret-1","totp_secret":"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}"#,
        ),
        (
            "iifl-xts",
            r#"{"broker_user_id":"XT0007","api_key":"xtskey1","api_secret":"xts-secret-1"}"#,
        ),
    ];
    for (broker, json) in accounts {
        std::fs::write(dir.path().join(format!("{broker}.json")), json).unwrap();
    }
    let workdir = dir.path().to_owned();
    let outputs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_tokenbot"))
                .current_dir(&workdir)
                .env("ENCRYPTION_KEY", hex::encode([KEY_BYTE; 32]))
                .env_remove("TOKENBOT_CONFIG")
                .args(args)
                .output()
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        };
        let mut outputs = vec![run(&["init"])];
        for (broker, _) in accounts {
            let file = format!("{broker}.json");
            outputs.push(run(&[
                "user",
                "add",
                "u1",
                "--broker",
                broker,
                "--from-json",
                &file,
            ]));
        }
        for (broker, _) in accounts {
            outputs.push(run(&[
                "refresh",
                "--verbose",
                "--user",
                "u1",
                "--broker",
                broker,
            ]));
        }
        outputs
    })
    .await
    .unwrap();
    for (code, text) in &outputs[..4] {
        assert_eq!(*code, Some(0), "{text}");
    }
    for ((code, text), (broker, _)) in outputs[4..].iter().zip(accounts) {
        assert_eq!(*code, Some(0), "{broker}: {text}");
        assert!(
            text.contains(&format!("u1/{broker}: success (1 attempt)")),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "Successful: 1"), "{text}");
    }
    assert_eq!(kite.recorder().passwords("ZR1234").len(), 1);
    assert_eq!(iifl.recorder().passwords("CL0042").len(), 1);
}

/// The process dies (SIGKILL) after the broker saw a TOTP code but before anything else of the
/// login was recorded. The next process must not send a code of that step again: the step was
/// written to the vault before the code left the host.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_right_after_the_code_was_sent_never_reuses_its_step() {
    let kite = FakeKite::start().await;
    let dir = kite_workdir(&kite, &[(5, "pw-5")], "");
    let workdir = dir.path().to_owned();
    let cli = move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenbot"));
        cmd.current_dir(&workdir)
            .env("ENCRYPTION_KEY", hex::encode([KEY_BYTE; 32]))
            .env_remove("TOKENBOT_CONFIG")
            .args(["refresh", "--user", "user-5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    // Every request takes 1.5 s, so the login is still running well after the code arrived.
    kite.recorder()
        .set_latency(std::time::Duration::from_millis(1_500));
    let mut child = cli().spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while kite.recorder().totp_uses("CL005").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no TOTP code arrived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    kite.recorder().set_latency(std::time::Duration::ZERO);

    let status = tokio::task::spawn_blocking(move || cli().status().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let uses = kite.recorder().totp_uses("CL005");
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert_ne!(
        uses[0].step, uses[1].step,
        "a step was sent again after the crash"
    );
    assert!(uses[1].accepted);
}
