//! `tokenbot refresh` (the real binary) on a vault no daemon holds, against the fake Kite.

use std::process::Command;

use fake_brokers::{FakeKite, KiteUser};
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
            },
            auto_refresh: true,
            managed_externally: false,
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_prints_the_summary_and_fails_when_any_account_failed() {
    let kite = FakeKite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let vault_path = dir.path().join("vault.redb");
    {
        let key = KeyMaterial::Key(MasterKey::from_bytes([KEY_BYTE; 32]));
        let vault =
            Vault::create(&vault_path, Engine::Redb, &key, VaultOptions::default()).unwrap();
        add(&vault, &kite, 1, "pw-1");
        add(&vault, &kite, 2, "wrong-password");
    }
    let urls = kite.base_urls();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "[vault]\npath = {:?}\n[brokers.kite]\nweb_url = {:?}\napi_url = {:?}\nrate_limit_per_sec = 1000.0\n",
            vault_path.display().to_string(),
            urls["web_url"],
            urls["api_url"]
        ),
    )
    .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let vault_path = dir.path().join("vault.redb");
    {
        let key = KeyMaterial::Key(MasterKey::from_bytes([KEY_BYTE; 32]));
        let vault =
            Vault::create(&vault_path, Engine::Redb, &key, VaultOptions::default()).unwrap();
        add(&vault, &kite, 3, "pw-3");
        add(&vault, &kite, 4, "pw-4");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let urls = kite.base_urls();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[vault]\npath = {:?}\n[brokers.kite]\nweb_url = {:?}\napi_url = {:?}\nrate_limit_per_sec = 1000.0\n",
            vault_path.display().to_string(),
            urls["web_url"],
            urls["api_url"]
        ),
    )
    .unwrap();
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
