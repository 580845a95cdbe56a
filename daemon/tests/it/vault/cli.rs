//! The vault through the real binary: `init`, `user ...`, `vault ...`, and `serve` on a fresh
//! checkout. Every run starts from an empty environment in its own directory.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokenbot::vault::{AccountKey, Argon2Params, Engine, KeyMaterial, Vault, VaultOptions, key};

const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
const KEY_C: &str = "0303030303030303030303030303030303030303030303030303030303030303";

const PASSWORD: &str = "pw-Hunter2-9x8";
const API_KEY: &str = "ak-4f9d2c1b7e";
const API_SECRET: &str = "as-8c7b6a5d4e3f";
const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fn kite_json(broker_user_id: &str) -> String {
    format!(
        r#"{{"broker_user_id":"{broker_user_id}","password":"{PASSWORD}","api_key":"{API_KEY}","api_secret":"{API_SECRET}","totp_secret":"{TOTP}"}}"#
    )
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Sandbox { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn vault(&self) -> PathBuf {
        self.path("data/vault.redb")
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenbot"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("RUST_BACKTRACE", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut child = self
            .command(args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        Run(child.wait_with_output().unwrap())
    }

    /// Run and require success.
    fn ok(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let run = self.run(args, env, stdin);
        assert!(
            run.0.status.success(),
            "tokenbot {args:?} failed:\n{}",
            run.all()
        );
        run
    }

    fn digest(&self) -> Vec<u8> {
        Sha256::digest(std::fs::read(self.vault()).unwrap()).to_vec()
    }
}

struct Run(Output);

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    fn all(&self) -> String {
        format!(
            "{}{}",
            self.stdout(),
            String::from_utf8_lossy(&self.0.stderr)
        )
    }

    /// Failed with a plain error (not a panic), saying `needle`.
    fn assert_fails_with(&self, needle: &str) {
        let code = self.0.status.code();
        assert!(
            code.is_some_and(|c| c != 0 && c != 101),
            "expected a clean failure, got {code:?}:\n{}",
            self.all()
        );
        assert!(
            self.all().contains(needle),
            "expected {needle:?} in:\n{}",
            self.all()
        );
        assert_no_secrets(&self.all());
    }
}

fn assert_no_secrets(text: &str) {
    for secret in [PASSWORD, API_KEY, API_SECRET, TOTP, KEY_A, KEY_B, KEY_C] {
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }
}

fn library_key(sandbox: &Sandbox) -> KeyMaterial {
    KeyMaterial::Key(key::read_key_file(&sandbox.path("data/vault.key")).unwrap())
}

#[test]
fn init_creates_the_vault_and_a_0600_development_key() {
    let s = Sandbox::new();
    let run = s.ok(&["init"], &[], None);
    assert!(run.stdout().contains("created"), "{}", run.all());
    assert!(
        run.all().contains("DEVELOPMENT MASTER KEY"),
        "no loud warning:\n{}",
        run.all()
    );
    let key_file = s.path("data/vault.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(text.trim().len() == 64 && text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(s.vault().is_file());
    let again = s.ok(&["init"], &[], None);
    assert!(again.stdout().contains("already exists"), "{}", again.all());
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        text,
        "init replaced the key"
    );
    // With ENCRYPTION_KEY set, no key file is made.
    let s = Sandbox::new();
    s.ok(&["init"], &[("ENCRYPTION_KEY", KEY_A)], None);
    assert!(!s.path("data/vault.key").exists());
}

#[test]
fn user_commands_manage_accounts_and_never_print_secrets() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    std::fs::write(s.path("kite.json"), kite_json("AB1234")).unwrap();
    let run = s.ok(
        &[
            "user",
            "add",
            "28748327",
            "--broker",
            "kite",
            "--from-json",
            "kite.json",
        ],
        &[],
        None,
    );
    assert!(
        run.stdout().contains("added 28748327/kite"),
        "{}",
        run.all()
    );
    let xts =
        r#"{"broker_user_id":"XT99","api_key":"ak-4f9d2c1b7e","api_secret":"as-8c7b6a5d4e3f"}"#;
    s.ok(
        &[
            "user",
            "add",
            "u-2",
            "--broker",
            "iifl-xts",
            "--from-json",
            "-",
            "--managed-externally",
            "on",
        ],
        &[],
        Some(xts),
    );

    let list = s.ok(&["user", "list"], &[], None);
    let out = list.stdout();
    assert!(
        out.contains("28748327") && out.contains("AB1234") && out.contains("active"),
        "{out}"
    );
    assert!(
        out.contains("u-2") && out.contains("XT99") && out.contains("managed_externally"),
        "{out}"
    );
    assert!(out.contains("2 account(s)"), "{out}");
    assert_no_secrets(&list.all());

    let run = s.ok(
        &[
            "user",
            "set",
            "28748327",
            "--broker",
            "kite",
            "--auto-refresh",
            "off",
        ],
        &[],
        None,
    );
    assert!(run.stdout().contains("state paused"), "{}", run.all());
    s.ok(
        &[
            "user",
            "set",
            "u-2",
            "--broker",
            "iifl-xts",
            "--managed-externally",
            "off",
        ],
        &[],
        None,
    );
    s.run(&["user", "set", "u-2", "--broker", "iifl-xts"], &[], None)
        .assert_fails_with("nothing to set");
    s.run(
        &[
            "user",
            "set",
            "nobody",
            "--broker",
            "kite",
            "--auto-refresh",
            "on",
        ],
        &[],
        None,
    )
    .assert_fails_with("no account for user nobody at broker kite");

    // Re-adding replaces the credentials and keeps the flags.
    let replaced = kite_json("AB1234").replace(PASSWORD, "pw-rotated-1");
    let run = s.ok(
        &[
            "user",
            "add",
            "28748327",
            "--broker",
            "kite",
            "--from-json",
            "-",
        ],
        &[],
        Some(&replaced),
    );
    assert!(
        run.stdout().contains("replaced") && run.stdout().contains("state paused"),
        "{}",
        run.all()
    );

    s.ok(&["user", "rm", "u-2", "--broker", "iifl-xts"], &[], None);
    s.run(&["user", "rm", "u-2", "--broker", "iifl-xts"], &[], None)
        .assert_fails_with("no account");
    assert!(
        s.ok(&["user", "list"], &[], None)
            .stdout()
            .contains("1 account(s)")
    );

    let vault = Vault::open(
        s.vault(),
        Engine::Redb,
        &library_key(&s),
        VaultOptions::default(),
    )
    .unwrap();
    let key = AccountKey::parse("28748327", "kite").unwrap();
    let creds = vault.credentials(&key).unwrap().unwrap();
    let exposed = |v: &Option<SecretString>| v.as_ref().unwrap().expose_secret().to_owned();
    assert_eq!(
        [
            exposed(&creds.password),
            exposed(&creds.api_key),
            exposed(&creds.api_secret),
            exposed(&creds.totp_secret)
        ],
        ["pw-rotated-1", API_KEY, API_SECRET, TOTP]
    );
    assert!(!vault.get_account(&key).unwrap().unwrap().auto_refresh);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    s.ok(
        &["user", "add", "u1", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("AB1")),
    );
    let before = s.digest();
    let add = |broker: &str, json: &str| {
        s.run(
            &["user", "add", "u2", "--broker", broker, "--from-json", "-"],
            &[],
            Some(json),
        )
    };

    add("nosuchbroker", &kite_json("AB2")).assert_fails_with("unknown broker \"nosuchbroker\"");
    add(
        "kite",
        &kite_json("AB2").replace(&format!(r#","api_secret":"{API_SECRET}""#), ""),
    )
    .assert_fails_with("missing field `api_secret`");
    add(
        "kite",
        &kite_json("AB2").replace(TOTP, "not base32 at all!"),
    )
    .assert_fails_with("field `totp_secret`");
    add(
        "kite",
        &kite_json("AB2").replace(TOTP, "otpauth://totp/x?issuer=y"),
    )
    .assert_fails_with("field `totp_secret`");
    add(
        "kite",
        &kite_json("AB2").replace(
            TOTP,
            &format!("otpauth://totp/Kite:AB2?secret={TOTP}&digits=8"),
        ),
    )
    .assert_fails_with("asks for digits=8");
    add(
        "kite",
        &kite_json("AB2").replace("\"password\"", "\"pass\""),
    )
    .assert_fails_with("unknown field `pass`");
    add(
        "kite",
        &kite_json("AB2").replace(&format!("\"{PASSWORD}\""), "12345678"),
    )
    .assert_fails_with("--from-json");
    add("kite", "not json").assert_fails_with("--from-json");
    add("iifl-xts", &kite_json("AB2"))
        .assert_fails_with("field `password` is not used by broker iifl-xts");
    s.run(
        &["user", "add", "u 2", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("AB2")),
    )
    .assert_fails_with("invalid user id");
    // No terminal and no --from-json: refused rather than hanging on a prompt.
    s.run(&["user", "add", "u2", "--broker", "kite"], &[], None)
        .assert_fails_with("--from-json");

    assert_eq!(s.digest(), before, "a refused command changed the vault");
    assert!(
        s.ok(&["user", "list"], &[], None)
            .stdout()
            .contains("1 account(s)")
    );
}

#[test]
fn wrong_keys_and_damaged_files_fail_cleanly_and_leave_the_file_unchanged() {
    let s = Sandbox::new();
    s.ok(&["init"], &[("ENCRYPTION_KEY", KEY_A)], None);
    for i in 0..20 {
        let json = kite_json(&format!("AB{i}"));
        s.ok(
            &[
                "user",
                "add",
                &format!("u{i}"),
                "--broker",
                "kite",
                "--from-json",
                "-",
            ],
            &[("ENCRYPTION_KEY", KEY_A)],
            Some(&json),
        );
    }
    let good = std::fs::read(s.vault()).unwrap();
    let before = s.digest();

    s.run(&["user", "list"], &[("ENCRYPTION_KEY", KEY_B)], None)
        .assert_fails_with("wrong master key");
    s.run(
        &["user", "rm", "u1", "--broker", "kite"],
        &[("ENCRYPTION_KEY", KEY_B)],
        None,
    )
    .assert_fails_with("wrong master key");
    s.run(&["vault", "verify"], &[("ENCRYPTION_KEY", "zz")], None)
        .assert_fails_with("invalid master key from ENCRYPTION_KEY");
    s.run(&["user", "list"], &[], None)
        .assert_fails_with("key file");
    assert_eq!(s.digest(), before);

    // Truncated anywhere.
    for len in [0, 100, 4096, good.len() / 2, good.len() - 1] {
        std::fs::write(s.vault(), &good[..len]).unwrap();
        let digest = s.digest();
        s.run(&["vault", "verify"], &[("ENCRYPTION_KEY", KEY_A)], None)
            .assert_fails_with("damaged");
        s.run(&["user", "list"], &[("ENCRYPTION_KEY", KEY_A)], None)
            .assert_fails_with("damaged");
        assert_eq!(s.digest(), digest, "truncated to {len}: the file changed");
    }

    // A damaged header.
    let mut bad = good.clone();
    bad[..16].fill(0x5a);
    std::fs::write(s.vault(), &bad).unwrap();
    s.run(&["vault", "verify"], &[("ENCRYPTION_KEY", KEY_A)], None)
        .assert_fails_with("damaged");
    assert_eq!(std::fs::read(s.vault()).unwrap(), bad);

    // Each 4 KiB page garbled in turn: refused with a clear message and left as it was, unless the
    // page is one redb is not using (then verify passes). Never a panic.
    let mut refused = 0;
    for page in 1..good.len() / 4096 {
        let mut bad = good.clone();
        for b in &mut bad[page * 4096..(page + 1) * 4096] {
            *b ^= 0xa5;
        }
        std::fs::write(s.vault(), &bad).unwrap();
        let run = s.run(&["vault", "verify"], &[("ENCRYPTION_KEY", KEY_A)], None);
        if run.0.status.success() {
            assert!(run.stdout().contains("ok:"), "{}", run.all());
        } else {
            run.assert_fails_with("damaged");
            assert_eq!(
                std::fs::read(s.vault()).unwrap(),
                bad,
                "page {page}: a refused open changed the file"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "no garbled page was noticed");

    // A passphrase vault (created with small argon2 costs; the binary uses the stored ones).
    std::fs::write(s.vault(), &good).unwrap();
    let p = Sandbox::new();
    let options = VaultOptions {
        argon2: Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..VaultOptions::default()
    };
    drop(
        Vault::create(
            p.vault(),
            Engine::Redb,
            &KeyMaterial::Passphrase("right one".into()),
            options,
        )
        .unwrap(),
    );
    let before = p.digest();
    p.run(
        &["user", "list"],
        &[("TOKENBOT_PASSPHRASE", "wrong one")],
        None,
    )
    .assert_fails_with("wrong passphrase");
    p.run(&["user", "list"], &[("ENCRYPTION_KEY", KEY_A)], None)
        .assert_fails_with("protected by a passphrase");
    assert_eq!(p.digest(), before);
    p.ok(
        &["user", "list"],
        &[("TOKENBOT_PASSPHRASE", "right one")],
        None,
    );
}

#[test]
fn verify_counts_records_and_fails_on_a_swapped_record() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    s.ok(
        &["user", "add", "a", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("A1")),
    );
    s.ok(
        &["user", "add", "b", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("B1")),
    );
    let run = s.ok(&["vault", "verify"], &[], None);
    let out = run.stdout();
    assert!(
        out.contains("accounts     2") && out.contains("credentials  2") && out.contains("ok:"),
        "{out}"
    );

    let vault = Vault::open(
        s.vault(),
        Engine::Redb,
        &library_key(&s),
        VaultOptions::default(),
    )
    .unwrap();
    let (a, b) = (
        AccountKey::parse("a", "kite").unwrap(),
        AccountKey::parse("b", "kite").unwrap(),
    );
    let raw_a = vault
        .raw_account_record("credentials", &a)
        .unwrap()
        .unwrap();
    let raw_b = vault
        .raw_account_record("credentials", &b)
        .unwrap()
        .unwrap();
    vault
        .put_raw_account_record("credentials", &a, &raw_b)
        .unwrap();
    vault
        .put_raw_account_record("credentials", &b, &raw_a)
        .unwrap();
    drop(vault);
    let run = s.run(&["vault", "verify"], &[], None);
    assert_eq!(run.0.status.code(), Some(1), "{}", run.all());
    let out = run.stdout();
    assert!(
        out.contains("FAILED credentials a/kite") && out.contains("FAILED credentials b/kite"),
        "{out}"
    );
    assert!(out.contains("integrity check failed"), "{out}");
}

#[test]
fn rekey_from_env_and_into_key_files() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    s.ok(
        &["user", "add", "a", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("A1")),
    );
    s.run(&["vault", "rekey"], &[], None)
        .assert_fails_with("TOKENBOT_NEW_ENCRYPTION_KEY");
    s.run(
        &["vault", "rekey", "--new-key-file", "x.key"],
        &[("TOKENBOT_NEW_ENCRYPTION_KEY", KEY_C)],
        None,
    )
    .assert_fails_with("exactly one");

    s.ok(
        &["vault", "rekey"],
        &[("TOKENBOT_NEW_ENCRYPTION_KEY", KEY_C)],
        None,
    );
    s.run(&["user", "list"], &[], None)
        .assert_fails_with("wrong master key");
    let c = [("ENCRYPTION_KEY", KEY_C)];
    assert!(s.ok(&["user", "list"], &c, None).stdout().contains("A1"));

    // Into a new key file.
    s.ok(
        &["vault", "rekey", "--new-key-file", "data/next.key"],
        &c,
        None,
    );
    s.run(&["user", "list"], &c, None)
        .assert_fails_with("wrong master key");
    let next = [("TOKENBOT_VAULT__KEY_FILE", "data/next.key")];
    s.ok(&["user", "list"], &next, None);
    let old = std::fs::read_to_string(s.path("data/next.key")).unwrap();
    // Rotating the key file in use replaces it only after the rekey committed.
    s.ok(
        &["vault", "rekey", "--new-key-file", "data/next.key"],
        &next,
        None,
    );
    assert_ne!(
        std::fs::read_to_string(s.path("data/next.key")).unwrap(),
        old
    );
    assert!(!s.path("data/next.key.new").exists());
    let run = s.ok(&["vault", "verify"], &next, None);
    assert!(run.stdout().contains("ok:"), "{}", run.all());
    s.run(
        &["vault", "rekey", "--new-key-file", "data/vault.key"],
        &next,
        None,
    )
    .assert_fails_with("refusing to overwrite");
}

#[test]
fn copy_moves_the_vault_to_another_engine() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    s.ok(
        &["user", "add", "a", "--broker", "kite", "--from-json", "-"],
        &[],
        Some(&kite_json("A1")),
    );
    let run = s.ok(&["vault", "copy", "--to", "redb:data/copy.redb"], &[], None);
    assert!(run.stdout().contains("verified"), "{}", run.all());
    let copy = [
        ("TOKENBOT_VAULT__PATH", "data/copy.redb"),
        ("TOKENBOT_VAULT__KEY_FILE", "data/vault.key"),
    ];
    assert!(s.ok(&["user", "list"], &copy, None).stdout().contains("A1"));
    s.run(&["vault", "copy", "--to", "redb:data/copy.redb"], &[], None)
        .assert_fails_with("already exists");
    s.run(&["vault", "copy", "--to", "lmdb:x"], &[], None)
        .assert_fails_with("unknown engine");
    if cfg!(feature = "sled") {
        s.ok(&["vault", "copy", "--to", "sled:data/copy.sled"], &[], None);
        let sled = [
            ("TOKENBOT_VAULT__PATH", "data/copy.sled"),
            ("TOKENBOT_VAULT__ENGINE", "sled"),
            ("TOKENBOT_VAULT__KEY_FILE", "data/vault.key"),
        ];
        assert!(s.ok(&["user", "list"], &sled, None).stdout().contains("A1"));
    } else {
        s.run(&["vault", "copy", "--to", "sled:data/copy.sled"], &[], None)
            .assert_fails_with("no sled engine");
    }
}

/// Schemas of the test database a test made; dropped with it.
struct Schemas(String, Vec<String>);

impl Drop for Schemas {
    fn drop(&mut self) {
        let sql: String = (self.1.iter())
            .map(|s| format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE;"))
            .collect();
        let _ = Command::new("psql")
            .args(["-q", "-d", &self.0, "-c", &sql])
            .output();
    }
}

#[test]
fn a_vault_in_postgres_is_created_used_and_copied_both_ways_without_showing_its_password() {
    let Some(url) = crate::mirror::support::database_url("vault in postgres through the CLI")
    else {
        return;
    };
    // The test server trusts local connections, so a password in the URL is accepted and
    // ignored: it stands for a real one, which no output may show.
    let password = "pg-Pa55word-never-shown";
    let with_password = url.replacen("://postgres@", &format!("://postgres:{password}@"), 1);
    assert_ne!(
        with_password, url,
        "the test URL names the postgres user: {url}"
    );
    let (schema, copied) = (
        format!("cli_vault_{}", std::process::id()),
        format!("cli_copy_{}", std::process::id()),
    );
    let _cleanup = Schemas(url.clone(), vec![schema.clone(), copied.clone()]);
    let s = Sandbox::new();
    let pg = |schema: &str| {
        vec![
            ("TOKENBOT_VAULT__ENGINE", "postgres".to_owned()),
            ("TOKENBOT_VAULT_URL", with_password.clone()),
            ("TOKENBOT_VAULT__SCHEMA", schema.to_owned()),
            ("ENCRYPTION_KEY", KEY_A.to_owned()),
        ]
    };
    let run = |args: &[&str], env: &[(&'static str, String)], stdin: Option<&str>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = s.run(args, &env, stdin);
        assert!(
            !run.all().contains(password),
            "the password in: {}",
            run.all()
        );
        run
    };
    let main = pg(&schema);

    // No vault in the schema yet: serve refuses, naming the database, not the password.
    let refused = run(&["serve"], &main, None);
    refused.assert_fails_with("tokenbot init");
    assert!(
        refused.all().contains(&format!("schema {schema}")),
        "{}",
        refused.all()
    );

    let init = run(&["init"], &main, None);
    assert!(init.0.status.success(), "{}", init.all());
    assert!(init.stdout().contains("created"), "{}", init.all());
    assert!(init.stdout().contains("Postgres"), "{}", init.all());
    let added = run(
        &["user", "add", "a", "--broker", "kite", "--from-json", "-"],
        &main,
        Some(&kite_json("A1")),
    );
    assert!(added.0.status.success(), "{}", added.all());
    assert!(run(&["user", "list"], &main, None).stdout().contains("A1"));
    assert!(!s.path("data/vault.redb").exists(), "nothing on disk");

    // To a redb file and back into another schema: each copy verified, each opening with the key.
    let to_file = run(
        &["vault", "copy", "--to", "redb:data/back.redb"],
        &main,
        None,
    );
    assert!(to_file.stdout().contains("verified"), "{}", to_file.all());
    let file = vec![
        ("TOKENBOT_VAULT__PATH", "data/back.redb".to_owned()),
        ("TOKENBOT_VAULT_URL", with_password.clone()),
        ("TOKENBOT_VAULT__SCHEMA", copied.clone()),
        ("ENCRYPTION_KEY", KEY_A.to_owned()),
    ];
    assert!(run(&["user", "list"], &file, None).stdout().contains("A1"));
    let to_pg = run(&["vault", "copy", "--to", "postgres:"], &file, None);
    assert!(to_pg.stdout().contains("verified"), "{}", to_pg.all());
    assert!(
        run(&["user", "list"], &pg(&copied), None)
            .stdout()
            .contains("A1")
    );
    run(&["vault", "copy", "--to", "postgres:"], &file, None).assert_fails_with("already exists");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plain_serve_with_no_vault_refuses_and_creates_no_key() {
    let s = Sandbox::new();
    std::fs::remove_dir(s.path("data")).unwrap();
    s.run(&["serve"], &[("PORT", &free_port().to_string())], None)
        .assert_fails_with("tokenbot init");
    s.run(&["serve"], &[("PORT", &free_port().to_string())], None)
        .assert_fails_with("serve --dev");
    assert!(!s.path("data").exists(), "no key, no vault, no directory");
    // With a key but no vault (a missing volume, another working directory): refused too.
    s.run(
        &["serve"],
        &[
            ("PORT", &free_port().to_string()),
            ("ENCRYPTION_KEY", &"ab".repeat(32)),
        ],
        None,
    )
    .assert_fails_with("no vault at");
    assert!(!s.vault().exists());
}

#[test]
fn serve_dev_on_a_fresh_checkout_creates_a_private_vault_and_holds_it() {
    let s = Sandbox::new();
    std::fs::remove_dir(s.path("data")).unwrap();
    let port = free_port().to_string();
    let server = s
        .command(&["serve", "--dev"], &[("PORT", &port)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(server);
    let port: u16 = port.parse().unwrap();
    let mut health = None;
    for _ in 0..600 {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("serve exited with {status}");
        }
        if let Some(response) = http_get(port, "/health") {
            health = Some(response);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let health = health.expect("serve never answered");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(s.vault().is_file() && s.path("data/vault.key").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.vault()), 0o600, "the vault file");
        assert_eq!(mode(&s.path("data/vault.key")), 0o600, "the key file");
        assert_eq!(mode(&s.path("data")), 0o700, "the vault's directory");
    }
    // The daemon holds the vault: the CLI says so instead of failing obscurely.
    s.run(&["user", "list"], &[], None)
        .assert_fails_with("in use by another process");
    drop(server);
    s.ok(&["user", "list"], &[], None);
}

#[test]
fn missing_key_file_beside_an_existing_vault_is_an_error_not_a_new_key() {
    let s = Sandbox::new();
    s.ok(&["init"], &[], None);
    std::fs::remove_file(s.path("data/vault.key")).unwrap();
    let before = s.digest();
    s.run(&["init"], &[], None)
        .assert_fails_with("exists but the key file");
    s.run(&["serve"], &[("PORT", &free_port().to_string())], None)
        .assert_fails_with("exists but the key file");
    assert!(!s.path("data/vault.key").exists());
    assert_eq!(s.digest(), before);
}
