//! The plugin design's promise, shown: a daemon built without one strategy (its cargo feature
//! off) knows nothing of that broker, until the strategy's `.so` is put in `plugins/`; then it
//! lists it, takes an account for it, and logs that account in against the broker's fake.

use std::process::Command;

use fake_brokers::{FakeMotilal, MOTILAL_REGISTERED_IP, MotilalUser};

use crate::support;

const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const PASSWORD: &str = "Mosl#Drop1n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_built_without_motilal_logs_in_a_motilal_account_from_its_so() {
    let fake = FakeMotilal::start().await;
    fake.add_user(MotilalUser::new(
        "AA042",
        PASSWORD,
        "moslapikey0042q",
        "mosl-api-secret-0042",
        TOTP,
        "18/10/1988",
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "[vault]\npath = \"vault.redb\"\n[plugins]\ndir = \"plugins\"\n\
             [brokers.motilal]\napi_url = {:?}\nclient_public_ip = {:?}\n",
            fake.api_url(),
            MOTILAL_REGISTERED_IP
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("motilal.json"),
        format!(
            r#"{{"broker_user_id":"AA042","password":"{PASSWORD}","api_key":"moslapikey0042q","api_secret":"mosl-api-secret-0042","totp_secret":"{TOTP}","dob_or_pan":"18/10/1988"}}"#
        ),
    )
    .unwrap();
    let workdir = dir.path().to_owned();
    let (before, after, add, refresh, token) = tokio::task::spawn_blocking(move || {
        // Both builds reuse the test run's dependencies and put their outputs aside.
        let daemon = support::daemon_without("motilal");
        let so = support::broker_so("broker-motilal");
        let run = |args: &[&str]| {
            let output = Command::new(&daemon)
                .current_dir(&workdir)
                .env("ENCRYPTION_KEY", hex::encode([0x42; 32]))
                .env_remove("TOKENBOT_CONFIG")
                .args(args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let text = stdout.clone() + &String::from_utf8_lossy(&output.stderr);
            println!("$ tokenbot {}\n{text}", args.join(" "));
            (output.status.code(), text, stdout)
        };
        assert_eq!(run(&["init"]).0, Some(0));
        let before = run(&["plugins", "list"]);
        support::install(
            &so,
            &workdir.join("plugins"),
            "libtokenbot_plugin_motilal.so",
        );
        let after = run(&["plugins", "list"]);
        let add = run(&[
            "user",
            "add",
            "u1",
            "--broker",
            "motilal",
            "--from-json",
            "motilal.json",
        ]);
        let refresh = run(&[
            "refresh",
            "--user",
            "u1",
            "--broker",
            "motilal",
            "--verbose",
        ]);
        let token = run(&["token", "get", "u1", "--broker", "motilal"]);
        (before, after, add, refresh, token)
    })
    .await
    .unwrap();

    // Without the .so the binary has every bundled strategy but Motilal's.
    assert_eq!(before.0, Some(0), "{}", before.1);
    assert!(
        before.1.contains("kite") && before.1.contains("dhan"),
        "{}",
        before.1
    );
    assert!(
        !before.1.contains("motilal"),
        "motilal is bundled:\n{}",
        before.1
    );
    // With it, Motilal is loaded from plugins/.
    let line = after
        .1
        .lines()
        .find(|l| l.starts_with("motilal"))
        .unwrap_or_else(|| panic!("motilal not listed:\n{}", after.1));
    assert!(line.contains("libtokenbot_plugin_motilal.so"), "{line}");
    assert_eq!(add.0, Some(0), "{}", add.1);
    assert_eq!(refresh.0, Some(0), "{}", refresh.1);
    assert!(
        refresh.1.lines().any(|l| l == "Successful: 1"),
        "{}",
        refresh.1
    );
    assert_eq!(token.0, Some(0), "{}", token.1);
    let access = serde_json::from_str::<serde_json::Value>(&token.2)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no token in\n{}", token.1));
    assert!(fake.token_is_valid(&access));
    assert_eq!(fake.recorder().requests("/rest/login/v7/authdirectapi"), 1);
    for output in [&before.1, &after.1, &add.1, &refresh.1] {
        assert!(
            !output.contains(PASSWORD) && !output.contains(TOTP),
            "{output}"
        );
    }
}
