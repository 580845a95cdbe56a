//! The vault test suite, run against every engine: redb always, sled with `--features sled`,
//! PostgreSQL on the test database (`TOKENBOT_TEST_DATABASE_URL`; without it those tests say they
//! were skipped, except under CI).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokenbot::vault::*;

/// Small argon2 costs: the production defaults are for people, not test loops.
fn options() -> VaultOptions {
    VaultOptions {
        argon2: Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..VaultOptions::default()
    }
}

fn raw_key(byte: u8) -> KeyMaterial {
    KeyMaterial::Key(MasterKey::from_bytes([byte; 32]))
}

fn passphrase(p: &str) -> KeyMaterial {
    KeyMaterial::Passphrase(SecretString::from(p))
}

/// Where a test's vaults live: files in a temporary directory, or schemas of the test database
/// (dropped with the place).
struct Place {
    dir: tempfile::TempDir,
    engine: Engine,
    /// For PostgreSQL: the test database, and this place's prefix for schema names.
    db: Option<(String, String)>,
    schemas: std::sync::Mutex<Vec<String>>,
}

impl Place {
    fn new(engine: Engine) -> Place {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let db = std::env::var("TOKENBOT_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|url| {
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (url, format!("vault_test_{}_{n}", std::process::id()))
            });
        Place {
            dir: tempfile::tempdir().unwrap(),
            engine,
            db,
            schemas: std::sync::Mutex::default(),
        }
    }

    /// The vault called `name` on this place's engine.
    fn at(&self, name: &str) -> Location {
        self.at_for(self.engine, name)
    }

    /// The vault called `name` on `engine`.
    fn at_for(&self, engine: Engine, name: &str) -> Location {
        match engine {
            Engine::Redb => Location::Path(self.dir.path().join(format!("{name}.redb"))),
            Engine::Sled => Location::Path(self.dir.path().join(format!("{name}.sled"))),
            Engine::Postgres => {
                let (url, prefix) = self.db.as_ref().expect("a test database");
                let schema = format!("{prefix}_{name}");
                self.schemas.lock().unwrap().push(schema.clone());
                Location::Postgres(PgTarget::new(SecretString::from(url.clone()), &schema))
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some((url, _)) = &self.db else { return };
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap());
        if !schemas.is_empty() {
            let sql: String = schemas
                .iter()
                .map(|s| format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE;"))
                .collect();
            pg(
                url,
                move |c| async move { c.batch_execute(&sql).await.unwrap() },
            );
        }
    }
}

/// Run `f` on a connection to the test database.
fn pg<T, Fut>(url: &str, f: impl FnOnce(Arc<tokio_postgres::Client>) -> Fut) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(connection);
        f(Arc::new(client)).await
    })
}

/// Whether `engine` can be tested here: PostgreSQL needs the test database.
fn available(engine: Engine) -> bool {
    engine != Engine::Postgres
        || crate::mirror::support::database_url("the vault suite on PostgreSQL").is_some()
}

fn account_key(user: &str, broker: &str) -> AccountKey {
    AccountKey::parse(user, broker).unwrap()
}

/// Every secret contains this marker, so a file without the marker holds none of them.
const MARK: &str = "Zq8Wm";

fn secret(kind: &str, i: usize) -> String {
    format!("{kind}-{i:05}-{MARK}-{}", i * 7919 % 10007)
}

fn new_account(user: &str, broker: &str, i: usize) -> NewAccount {
    NewAccount {
        key: account_key(user, broker),
        broker_user_id: format!("BU{i:05}Pl41n"),
        credentials: Credentials {
            password: Some(secret("pw", i).into()),
            api_key: Some(secret("ak", i).into()),
            api_secret: Some(secret("as", i).into()),
            totp_secret: Some(secret("totp", i).into()),
            // A field a strategy declares beyond the five (ABI 1.2): encrypted like the rest.
            extra: [("pin".to_owned(), secret("pin", i).into())].into(),
        },
        auto_refresh: true,
        managed_externally: false,
    }
}

fn new_token(i: usize) -> NewToken {
    NewToken {
        access_token: secret("tok", i).into(),
        issued_at_ms: 1_700_000_000_000 + i as i64,
        expires_at_ms: 1_700_086_400_000 + i as i64,
        extras: SecretJson::from_value(&serde_json::json!({ "refresh_token": secret("rt", i) })),
        served_extras: SecretJson::from_value(
            &serde_json::json!({ "feed_token": secret("ft", i) }),
        ),
    }
}

fn exposed(s: &Option<SecretString>) -> Option<&str> {
    s.as_ref().map(|s| s.expose_secret())
}

fn assert_credentials(vault: &Vault, key: &AccountKey, i: usize) {
    let c = vault.credentials(key).unwrap().expect("credentials");
    assert_eq!(exposed(&c.password), Some(secret("pw", i).as_str()));
    assert_eq!(exposed(&c.api_key), Some(secret("ak", i).as_str()));
    assert_eq!(exposed(&c.api_secret), Some(secret("as", i).as_str()));
    assert_eq!(exposed(&c.totp_secret), Some(secret("totp", i).as_str()));
    assert_eq!(
        c.get("pin").map(|p| p.expose_secret()),
        Some(secret("pin", i).as_str())
    );
}

/// Everything stored: every file under a path (a redb file, or a sled directory), or every key
/// and value of a PostgreSQL vault's table, as the database holds them.
fn raw_bytes(at: &Location) -> Vec<u8> {
    match at {
        Location::Path(path) => file_bytes(path),
        Location::Postgres(target) => {
            let sql = format!(
                "SELECT k, v FROM \"{}\".records ORDER BY tbl, k",
                target.schema
            );
            pg(target.url.expose_secret(), move |c| async move {
                let rows = c.query(&sql, &[]).await.unwrap();
                rows.iter()
                    .flat_map(|r| [r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)])
                    .flatten()
                    .collect()
            })
        }
    }
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    if path.is_file() {
        out.extend(std::fs::read(path).unwrap());
    } else {
        for entry in std::fs::read_dir(path).unwrap() {
            out.extend(file_bytes(&entry.unwrap().path()));
        }
    }
    out
}

fn digest(at: &Location) -> Vec<u8> {
    Sha256::digest(raw_bytes(at)).to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn attempt(time_ms: i64, outcome: Outcome) -> Attempt {
    Attempt {
        time_ms,
        trigger: Trigger::Schedule,
        attempt: 1,
        duration_ms: 1234,
        outcome,
        error_class: (outcome == Outcome::Failed).then(|| "network".to_owned()),
        message: (outcome == Outcome::Failed).then(|| "connection reset".to_owned()),
    }
}

fn round_trips(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(
        &path,
        engine,
        &raw_key(1),
        VaultOptions {
            attempts_per_account: 5,
            audit_keep: 3,
            ..options()
        },
    )
    .unwrap();
    let kite = account_key("28748327", "kite");
    let iifl = account_key("28748327", "iifl");

    // Accounts and credentials.
    let account = vault
        .put_account(&new_account("28748327", "kite", 1))
        .unwrap();
    assert_eq!(account.state(), AccountState::Active);
    vault
        .put_account(&new_account("28748327", "iifl", 2))
        .unwrap();
    vault.put_account(&new_account("other", "kite", 3)).unwrap();
    assert_eq!(vault.get_account(&kite).unwrap().unwrap(), account);
    assert_credentials(&vault, &kite, 1);
    assert!(
        vault
            .get_account(&account_key("nobody", "kite"))
            .unwrap()
            .is_none()
    );
    assert!(
        vault
            .credentials(&account_key("nobody", "kite"))
            .unwrap()
            .is_none()
    );
    let users: Vec<String> = vault
        .list_accounts()
        .unwrap()
        .iter()
        .map(|a| a.key().to_string())
        .collect();
    assert_eq!(users, ["28748327/iifl", "28748327/kite", "other/kite"]);
    assert_eq!(vault.user_accounts(&kite.user).unwrap().len(), 2);

    // Flags, attention, derived state; new credentials clear attention.
    let a = vault
        .set_flags(
            &kite,
            Flags {
                auto_refresh: Some(false),
                managed_externally: None,
                clear_attention: false,
            },
        )
        .unwrap();
    assert_eq!(a.state(), AccountState::Paused);
    let attention = Attention {
        class: "invalid_credentials".into(),
        message: "wrong password".into(),
        since_ms: 5,
    };
    let a = vault.set_attention(&kite, attention.clone()).unwrap();
    assert_eq!(
        (a.state(), a.attention),
        (AccountState::NeedsAttention, Some(attention))
    );
    let a = vault
        .update_credentials(&kite, &new_account("x", "kite", 11).credentials)
        .unwrap();
    assert_eq!((a.state(), a.attention), (AccountState::Paused, None));
    assert_credentials(&vault, &kite, 11);
    vault
        .set_attention(
            &kite,
            Attention {
                class: "c".into(),
                message: "m".into(),
                since_ms: 1,
            },
        )
        .unwrap();
    assert_eq!(vault.clear_attention(&kite).unwrap().attention, None);
    let a = vault
        .set_flags(
            &kite,
            Flags {
                auto_refresh: Some(true),
                managed_externally: Some(true),
                clear_attention: false,
            },
        )
        .unwrap();
    assert_eq!(a.state(), AccountState::ManagedExternally);
    assert!(matches!(
        vault.set_flags(&account_key("nobody", "kite"), Flags::default()),
        Err(VaultError::NoSuchAccount(_))
    ));

    // Tokens: generations grow; each put writes an outbox record in the same transaction.
    assert!(vault.get_token(&kite).unwrap().is_none());
    let g1 = vault.put_token(&kite, &new_token(1)).unwrap();
    let g2 = vault.put_token(&kite, &new_token(2)).unwrap();
    let g3 = vault.put_token(&iifl, &new_token(3)).unwrap();
    assert!(g1 < g2 && g2 < g3, "{g1} {g2} {g3}");
    let t = vault.get_token(&kite).unwrap().unwrap();
    assert_eq!(t.access_token.expose_secret(), secret("tok", 2));
    assert_eq!(
        (t.issued_at_ms, t.expires_at_ms, t.generation),
        (1_700_000_000_002, 1_700_086_400_002, g2)
    );
    assert_eq!(t.extras.expose_value()["refresh_token"], secret("rt", 2));
    assert_eq!(
        t.served_extras.expose_value()["feed_token"],
        secret("ft", 2)
    );
    assert!(matches!(
        vault.put_token(&account_key("nobody", "kite"), &new_token(0)),
        Err(VaultError::NoSuchAccount(_))
    ));

    let outbox = vault.outbox_peek(10).unwrap();
    assert_eq!(vault.outbox_len().unwrap(), 3);
    assert_eq!(
        outbox.iter().map(|r| r.generation).collect::<Vec<_>>(),
        [g1, g2, g3]
    );
    assert!(outbox.windows(2).all(|w| w[0].seq < w[1].seq));
    let first = &outbox[0];
    assert_eq!(
        (first.user.as_str(), first.broker.as_str(), first.status),
        ("28748327", "kite", OutboxStatus::Active)
    );
    assert_eq!(first.broker_user_id, "BU00001Pl41n");
    assert_eq!(
        exposed(&first.access_token),
        Some(secret("tok", 1).as_str())
    );
    assert_eq!(
        (first.issued_at_ms, first.expires_at_ms),
        (Some(1_700_000_000_001), Some(1_700_086_400_001))
    );
    assert_eq!(vault.outbox_ack(outbox[1].seq).unwrap(), 2);
    assert_eq!(vault.outbox_len().unwrap(), 1);
    assert_eq!(vault.outbox_peek(10).unwrap()[0].generation, g3);

    // Attempts: newest first, per account or per user, trimmed to the last 5 per account.
    for i in 0..8 {
        vault
            .append_attempt(&kite, &attempt(100 + i, Outcome::Success))
            .unwrap();
    }
    vault
        .append_attempt(&iifl, &attempt(500, Outcome::Failed))
        .unwrap();
    let kite_attempts = vault.attempts(&kite, 100).unwrap();
    assert_eq!(
        kite_attempts
            .iter()
            .map(|a| a.attempt.time_ms)
            .collect::<Vec<_>>(),
        [107, 106, 105, 104, 103]
    );
    assert_eq!(vault.attempts(&kite, 2).unwrap().len(), 2);
    let user_attempts = vault.attempts(&kite.user, 3).unwrap();
    assert_eq!(
        user_attempts
            .iter()
            .map(|a| a.attempt.time_ms)
            .collect::<Vec<_>>(),
        [500, 107, 106]
    );
    assert_eq!(user_attempts[0].account, iifl);
    assert_eq!(user_attempts[0].attempt, attempt(500, Outcome::Failed));
    assert!(matches!(
        vault.append_attempt(
            &account_key("nobody", "kite"),
            &attempt(1, Outcome::Skipped)
        ),
        Err(VaultError::NoSuchAccount(_))
    ));

    // Audit: newest first, trimmed to the last 3.
    for i in 0..5 {
        vault
            .append_audit(&AuditEntry {
                time_ms: i,
                api_key_name: "backend".into(),
                user: kite.user.clone(),
                broker: kite.broker.clone(),
            })
            .unwrap();
    }
    assert_eq!(
        vault
            .audit(10)
            .unwrap()
            .iter()
            .map(|e| e.time_ms)
            .collect::<Vec<_>>(),
        [4, 3, 2]
    );

    // Everything survives a reopen.
    drop(vault);
    let vault = Vault::open(&path, engine, &raw_key(1), options()).unwrap();
    assert_eq!(vault.get_token(&kite).unwrap().unwrap().generation, g2);
    assert_credentials(&vault, &kite, 11);
    assert_eq!(vault.attempts(&kite, 100).unwrap().len(), 5);
    assert_eq!(vault.outbox_len().unwrap(), 1);
    let report = vault.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(report.counts["accounts"], 3);
    assert_eq!(report.counts["tokens"], 2);

    // Deleting an account drops its secrets, token and attempts and tells the mirror.
    assert!(vault.delete_account(&kite).unwrap());
    assert!(!vault.delete_account(&kite).unwrap());
    assert!(vault.get_account(&kite).unwrap().is_none());
    assert!(vault.credentials(&kite).unwrap().is_none());
    assert!(vault.get_token(&kite).unwrap().is_none());
    assert!(vault.attempts(&kite, 10).unwrap().is_empty());
    let revoked = vault.outbox_peek(10).unwrap().pop().unwrap();
    assert_eq!(
        (
            revoked.status,
            revoked.user.as_str(),
            revoked.broker.as_str()
        ),
        (OutboxStatus::Revoked, "28748327", "kite")
    );
    assert!(revoked.access_token.is_none() && revoked.generation > g3);
    // A re-added account's next token still outranks the revocation.
    vault
        .put_account(&new_account("28748327", "kite", 1))
        .unwrap();
    assert!(vault.put_token(&kite, &new_token(9)).unwrap() > revoked.generation);
    // delete_token, and a changed broker user id, revoke too.
    assert!(vault.delete_token(&kite).unwrap());
    assert!(!vault.delete_token(&kite).unwrap());
    vault.put_token(&iifl, &new_token(4)).unwrap();
    vault
        .put_account(&NewAccount {
            broker_user_id: "ELSEWHERE".into(),
            ..new_account("28748327", "iifl", 2)
        })
        .unwrap();
    assert!(vault.get_token(&iifl).unwrap().is_none());
    assert_eq!(
        vault.outbox_peek(100).unwrap().last().unwrap().status,
        OutboxStatus::Revoked
    );
    assert!(vault.verify().unwrap().is_ok());
}

fn plaintexts_never_reach_the_file(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &raw_key(2), options()).unwrap();
    let accounts: Vec<NewAccount> = (0..1000)
        .map(|i| new_account(&format!("user{i:04}"), "kite", i))
        .collect();
    vault.put_accounts(&accounts[..500]).unwrap();
    for account in &accounts[500..] {
        vault.put_account(account).unwrap();
    }
    for (i, account) in accounts.iter().enumerate() {
        vault.put_token(&account.key, &new_token(i)).unwrap();
    }
    assert_credentials(&vault, &accounts[999].key, 999);
    drop(vault);

    let bytes = raw_bytes(&path);
    // Every secret contains MARK: no MARK, no secret. Spot-check whole plaintexts too.
    assert!(
        !contains(&bytes, MARK.as_bytes()),
        "a secret reached the vault file"
    );
    for i in (0..1000).step_by(97) {
        for kind in ["pw", "ak", "as", "totp", "pin", "tok", "rt", "ft"] {
            assert!(
                !contains(&bytes, secret(kind, i).as_bytes()),
                "{kind} {i} in the file"
            );
        }
    }
    // The scan does see data: broker user ids are not secret and are stored as they are.
    assert!(contains(&bytes, b"BU00999Pl41n"));
    if let Location::Postgres(target) = &path {
        dump_holds_no_secret(target);
    }
}

/// What an operator's `pg_dump` of the vault's schema shows: values as text, `bytea` in hex.
/// Neither form of any secret is there; the broker user ids are, so the search sees data.
fn dump_holds_no_secret(target: &PgTarget) {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema", &target.schema, "--data-only", "--dbname"])
        .arg(target.url.expose_secret())
        .output()
        .expect("pg_dump runs (PostgreSQL's client tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(
        dump.contains(&hex::encode("BU00999Pl41n")),
        "the dump shows no data"
    );
    for i in (0..1000).step_by(97) {
        for kind in ["pw", "ak", "as", "totp", "pin", "tok", "rt", "ft"] {
            let plain = secret(kind, i);
            assert!(!dump.contains(&plain), "{kind} {i} in the dump");
            assert!(
                !dump.contains(&hex::encode(&plain)),
                "{kind} {i} in the dump, in hex"
            );
        }
    }
    assert!(!dump.contains(MARK) && !dump.contains(&hex::encode(MARK)));
}

fn tampered_records_fail_integrity(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &raw_key(3), options()).unwrap();
    let (a, b) = (account_key("alice", "kite"), account_key("bob", "kite"));
    vault.put_account(&new_account("alice", "kite", 1)).unwrap();
    vault.put_account(&new_account("bob", "kite", 2)).unwrap();
    vault.put_token(&a, &new_token(1)).unwrap();
    vault.put_token(&b, &new_token(2)).unwrap();
    let creds_a = vault
        .raw_account_record("credentials", &a)
        .unwrap()
        .unwrap();
    let creds_b = vault
        .raw_account_record("credentials", &b)
        .unwrap()
        .unwrap();

    // Any flipped byte: an integrity error naming the record, never garbage.
    for i in 0..creds_a.len() {
        let mut bad = creds_a.clone();
        bad[i] ^= 1 << (i % 8);
        vault
            .put_raw_account_record("credentials", &a, &bad)
            .unwrap();
        match vault.credentials(&a) {
            Err(VaultError::Integrity {
                table: "credentials",
                key,
            }) => assert_eq!(key, "alice/kite"),
            other => panic!("byte {i}: expected an integrity error, got {other:?}"),
        }
    }
    let token_a = vault.raw_account_record("tokens", &a).unwrap().unwrap();
    let mut bad = token_a.clone();
    bad[token_a.len() / 2] ^= 0x40;
    vault.put_raw_account_record("tokens", &a, &bad).unwrap();
    assert!(matches!(
        vault.get_token(&a),
        Err(VaultError::Integrity {
            table: "tokens",
            ..
        })
    ));
    let report = vault.verify().unwrap();
    let failed: Vec<(&str, &str)> = report
        .failures
        .iter()
        .map(|f| (f.table, f.key.as_str()))
        .collect();
    assert_eq!(
        failed,
        [("credentials", "alice/kite"), ("tokens", "alice/kite")],
        "{:?}",
        report.failures
    );
    vault
        .put_raw_account_record("tokens", &a, &token_a)
        .unwrap();

    // Two users' credential records swapped: both fail.
    vault
        .put_raw_account_record("credentials", &a, &creds_b)
        .unwrap();
    vault
        .put_raw_account_record("credentials", &b, &creds_a)
        .unwrap();
    assert!(matches!(
        vault.credentials(&a),
        Err(VaultError::Integrity { .. })
    ));
    assert!(matches!(
        vault.credentials(&b),
        Err(VaultError::Integrity { .. })
    ));
    // A credentials record moved into the tokens table fails too.
    vault
        .put_raw_account_record("tokens", &b, &creds_a)
        .unwrap();
    assert!(matches!(
        vault.get_token(&b),
        Err(VaultError::Integrity { .. })
    ));
    assert_eq!(vault.verify().unwrap().failures.len(), 3);

    // Restored, all is well again.
    vault
        .put_raw_account_record("credentials", &a, &creds_a)
        .unwrap();
    vault
        .put_raw_account_record("credentials", &b, &creds_b)
        .unwrap();
    vault.delete_token(&b).unwrap();
    assert_credentials(&vault, &a, 1);
    assert_credentials(&vault, &b, 2);
    assert!(vault.verify().unwrap().is_ok());
}

fn wrong_keys_are_refused_before_any_write(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &raw_key(4), options()).unwrap();
    vault.put_account(&new_account("u", "kite", 1)).unwrap();
    drop(vault);
    let before = digest(&path);
    assert!(matches!(
        Vault::open(&path, engine, &raw_key(5), options()),
        Err(VaultError::WrongKey)
    ));
    assert!(matches!(
        Vault::open_read_only(&path, engine, &raw_key(5), options()),
        Err(VaultError::WrongKey)
    ));
    assert!(matches!(
        Vault::open(&path, engine, &passphrase("x"), options()),
        Err(VaultError::KeyKindMismatch { .. })
    ));
    // sled has no read-only handle, and its open writes: redb and PostgreSQL promise untouched
    // storage.
    if engine != Engine::Sled {
        assert_eq!(digest(&path), before, "a refused open changed the file");
    }
    assert!(Vault::open(&path, engine, &raw_key(4), options()).is_ok());

    let path = place.at("pass");
    let vault = Vault::create(&path, engine, &passphrase("correct horse"), options()).unwrap();
    vault.put_account(&new_account("u", "kite", 1)).unwrap();
    drop(vault);
    assert_eq!(
        Vault::inspect(&path, engine).unwrap(),
        VaultInfo {
            passphrase: true,
            schema_version: SCHEMA_VERSION
        }
    );
    let before = digest(&path);
    assert!(matches!(
        Vault::open(&path, engine, &passphrase("wrong horse"), options()),
        Err(VaultError::WrongPassphrase)
    ));
    assert!(matches!(
        Vault::open(&path, engine, &raw_key(4), options()),
        Err(VaultError::KeyKindMismatch { .. })
    ));
    if engine != Engine::Sled {
        assert_eq!(digest(&path), before);
    }
    let vault = Vault::open(&path, engine, &passphrase("correct horse"), options()).unwrap();
    assert_credentials(&vault, &account_key("u", "kite"), 1);

    assert!(matches!(
        Vault::open(place.at("none"), engine, &raw_key(4), options()),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        Vault::create(&path, engine, &raw_key(4), options()),
        Err(VaultError::AlreadyExists(_))
    ));
}

fn rekey_of_1000_accounts(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &raw_key(6), options()).unwrap();
    let accounts: Vec<NewAccount> = (0..1000)
        .map(|i| new_account(&format!("user{i:04}"), "iifl", i))
        .collect();
    vault.put_accounts(&accounts).unwrap();
    for i in (0..1000).step_by(10) {
        vault.put_token(&accounts[i].key, &new_token(i)).unwrap();
    }
    let before: Vec<Vec<u8>> = accounts
        .iter()
        .map(|a| {
            vault
                .raw_account_record("credentials", &a.key)
                .unwrap()
                .unwrap()
        })
        .collect();

    vault.rekey(&passphrase("new passphrase")).unwrap();
    // The open handle switched keys.
    assert_credentials(&vault, &accounts[500].key, 500);
    for (a, old) in accounts.iter().zip(&before) {
        assert_ne!(
            &vault
                .raw_account_record("credentials", &a.key)
                .unwrap()
                .unwrap(),
            old,
            "{} not re-encrypted",
            a.key
        );
    }
    drop(vault);

    assert!(matches!(
        Vault::open(&path, engine, &raw_key(6), options()),
        Err(VaultError::KeyKindMismatch { .. })
    ));
    let vault = Vault::open(&path, engine, &passphrase("new passphrase"), options()).unwrap();
    for (i, a) in accounts.iter().enumerate() {
        assert_credentials(&vault, &a.key, i);
    }
    for i in (0..1000).step_by(10) {
        assert_eq!(
            vault
                .get_token(&accounts[i].key)
                .unwrap()
                .unwrap()
                .access_token
                .expose_secret(),
            secret("tok", i)
        );
    }
    assert!(vault.verify().unwrap().is_ok());

    // And on to another raw key: the old passphrase and the first key open nothing.
    vault.rekey(&raw_key(7)).unwrap();
    drop(vault);
    assert!(matches!(
        Vault::open(&path, engine, &raw_key(6), options()),
        Err(VaultError::WrongKey)
    ));
    assert!(matches!(
        Vault::open(&path, engine, &passphrase("new passphrase"), options()),
        Err(VaultError::KeyKindMismatch { .. })
    ));
    let vault = Vault::open(&path, engine, &raw_key(7), options()).unwrap();
    for (i, a) in accounts.iter().enumerate() {
        assert_credentials(&vault, &a.key, i);
    }
    let report = vault.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(
        (
            report.counts["credentials"],
            report.counts["tokens"],
            report.counts["outbox"]
        ),
        (1000, 100, 100)
    );
}

fn copies_open_with_the_same_key(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &passphrase("copy me"), options()).unwrap();
    for i in 0..20 {
        let a = new_account(&format!("u{i}"), "kite", i);
        vault.put_account(&a).unwrap();
        vault.put_token(&a.key, &new_token(i)).unwrap();
        vault
            .append_attempt(&a.key, &attempt(i as i64, Outcome::Success))
            .unwrap();
    }
    let mut targets = vec![Engine::Redb];
    if cfg!(feature = "sled") {
        targets.push(Engine::Sled);
    }
    if available(Engine::Postgres) {
        targets.push(Engine::Postgres);
    }
    for target in targets {
        let to = place.at_for(target, &format!("copy_{target:?}").to_lowercase());
        let copied = vault.copy_to(target, &to).unwrap();
        assert_eq!(copied.counts, vault.counts().unwrap());
        assert!(matches!(
            vault.copy_to(target, &to),
            Err(VaultError::AlreadyExists(_))
        ));
        let copy = Vault::open(&to, target, &passphrase("copy me"), options()).unwrap();
        let report = copy.verify().unwrap();
        assert!(
            report.is_ok() && report.counts == copied.counts,
            "{report:?}"
        );
        assert_credentials(&copy, &account_key("u7", "kite"), 7);
        assert_eq!(
            copy.attempts(&account_key("u7", "kite"), 10).unwrap().len(),
            1
        );
        drop(copy);
        assert!(matches!(
            Vault::open(&to, target, &passphrase("nope"), options()),
            Err(VaultError::WrongPassphrase)
        ));
    }
}

fn shared_across_threads(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Arc::new(Vault::create(&path, engine, &raw_key(8), options()).unwrap());
    for t in 0..4 {
        vault
            .put_account(&new_account(&format!("t{t}"), "kite", t))
            .unwrap();
    }
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let vault = vault.clone();
            std::thread::spawn(move || {
                let key = account_key(&format!("t{t}"), "kite");
                let mut generations = Vec::new();
                for i in 0..10 {
                    generations.push(vault.put_token(&key, &new_token(t * 100 + i)).unwrap());
                    assert_credentials(&vault, &key, t);
                }
                generations
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40, "generations repeat");
    assert_eq!(vault.outbox_len().unwrap(), 40);
}

/// `user_tokens` is served from memory; every write that can change what it returns must show
/// through at once, and log appends must not disturb it.
fn cached_reads_follow_every_write(engine: Engine) {
    let place = Place::new(engine);
    let vault = Vault::create(place.at("vault"), engine, &raw_key(9), options()).unwrap();
    let user = UserId::new("cache-user").unwrap();
    let tokens = |vault: &Vault| -> Vec<(String, Option<String>)> {
        vault
            .user_tokens(&user)
            .unwrap()
            .iter()
            .map(|(a, t)| {
                (
                    a.broker.as_str().to_owned(),
                    t.as_ref()
                        .map(|t| t.access_token.expose_secret().to_owned()),
                )
            })
            .collect()
    };
    assert!(tokens(&vault).is_empty());
    vault
        .put_account(&new_account("cache-user", "kite", 1))
        .unwrap();
    assert_eq!(tokens(&vault), [("kite".to_owned(), None)]);
    let key = account_key("cache-user", "kite");
    vault.put_token(&key, &new_token(1)).unwrap();
    assert_eq!(
        tokens(&vault),
        [("kite".to_owned(), Some(secret("tok", 1)))]
    );
    // Reads and log appends leave the cached entry as it is.
    vault
        .append_audit(&AuditEntry {
            time_ms: 1,
            api_key_name: "k".into(),
            user: user.clone(),
            broker: key.broker.clone(),
        })
        .unwrap();
    let before = vault.user_tokens(&user).unwrap();
    assert!(
        Arc::ptr_eq(&before, &vault.user_tokens(&user).unwrap()),
        "a read was not served from memory"
    );
    vault.put_token(&key, &new_token(2)).unwrap();
    assert_eq!(
        tokens(&vault),
        [("kite".to_owned(), Some(secret("tok", 2)))]
    );
    vault
        .put_account(&new_account("cache-user", "iifl", 2))
        .unwrap();
    assert_eq!(tokens(&vault).len(), 2);
    vault
        .set_flags(
            &key,
            Flags {
                auto_refresh: Some(false),
                managed_externally: None,
                clear_attention: false,
            },
        )
        .unwrap();
    let cached = vault.user_tokens(&user).unwrap();
    let kite = cached
        .iter()
        .find(|(a, _)| a.broker.as_str() == "kite")
        .unwrap();
    assert!(!kite.0.auto_refresh);
    assert!(vault.delete_token(&key).unwrap());
    assert_eq!(
        tokens(&vault),
        [("iifl".to_owned(), None), ("kite".to_owned(), None)]
    );
    assert!(vault.delete_account(&key).unwrap());
    assert_eq!(tokens(&vault), [("iifl".to_owned(), None)]);
}

fn attention(class: &str) -> Attention {
    Attention {
        class: class.into(),
        message: "from the broker".into(),
        since_ms: 1,
    }
}

/// Re-saving an account (periodic provisioning, a form sent twice) must not re-arm a password the
/// broker called wrong: attention is cleared only by a change of a field its class depends on.
fn attention_survives_saves_that_cannot_fix_it(engine: Engine) {
    let place = Place::new(engine);
    let vault = Vault::create(place.at("vault"), engine, &raw_key(9), options()).unwrap();
    let account = new_account("u1", "kite", 1);
    let key = account.key.clone();
    vault.put_account(&account).unwrap();
    let state = |v: &Vault| v.get_account(&key).unwrap().unwrap().state();

    vault
        .set_attention(&key, attention("invalid_credentials"))
        .unwrap();
    vault.put_account(&account).unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "identical re-save"
    );
    vault.put_accounts(std::slice::from_ref(&account)).unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "identical import"
    );
    // Brokers read their user ids in any case (Angel One upper-cases them): a case-only edit
    // names the same broker account, fixes nothing, and keeps its token.
    vault.put_token(&key, &new_token(1)).unwrap();
    let mut recased = account.clone();
    recased.broker_user_id = account.broker_user_id.to_lowercase();
    vault.put_account(&recased).unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "a case-only user id edit"
    );
    assert!(vault.get_token(&key).unwrap().is_some(), "the token stays");
    let mut new_totp = account.clone();
    new_totp.credentials.totp_secret = Some("another totp secret".into());
    vault.put_account(&new_totp).unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "a TOTP change fixes no password"
    );
    vault
        .update_credentials(&key, &new_totp.credentials)
        .unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "same again, through update"
    );
    let mut new_password = new_totp.clone();
    new_password.credentials.password = Some("a new password".into());
    vault.put_account(&new_password).unwrap();
    assert_eq!(state(&vault), AccountState::Active, "a new password");

    vault
        .set_attention(&key, attention("twofa_rejected"))
        .unwrap();
    let mut password_again = new_password.clone();
    password_again.credentials.password = Some("yet another password".into());
    vault
        .update_credentials(&key, &password_again.credentials)
        .unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "a password fixes no TOTP secret"
    );
    let mut totp_again = password_again.clone();
    totp_again.credentials.totp_secret = Some("the right totp secret".into());
    vault
        .update_credentials(&key, &totp_again.credentials)
        .unwrap();
    assert_eq!(state(&vault), AccountState::Active, "a new TOTP secret");

    vault
        .set_attention(&key, attention("automation_blocked"))
        .unwrap();
    let mut everything = totp_again.clone();
    everything.credentials.password = Some("p4".into());
    vault.put_account(&everything).unwrap();
    assert_eq!(
        state(&vault),
        AccountState::NeedsAttention,
        "no credential fixes a block"
    );
    vault
        .set_flags(
            &key,
            Flags {
                clear_attention: true,
                ..Flags::default()
            },
        )
        .unwrap();
    assert_eq!(
        state(&vault),
        AccountState::Active,
        "the operator's explicit clear"
    );
}

/// With sharing allowed, a wrong password found through one user's account stops the others'
/// logins of the same broker account; with it refused (the default), the second is refused.
fn shared_broker_accounts_share_a_wrong_password(engine: Engine) {
    let place = Place::new(engine);
    let path = place.at("vault");
    let vault = Vault::create(&path, engine, &raw_key(10), options()).unwrap();
    let first = new_account("u1", "kite", 1);
    vault.put_account(&first).unwrap();
    let mut second = new_account("u2", "kite", 1);
    second.broker_user_id = second.broker_user_id.to_ascii_lowercase();
    assert!(matches!(
        vault.put_account(&second),
        Err(VaultError::BrokerAccountTaken { .. })
    ));
    assert!(matches!(
        vault.put_accounts(std::slice::from_ref(&second)),
        Err(VaultError::BrokerAccountTaken { .. })
    ));
    drop(vault);

    let shared = VaultOptions {
        allow_shared_broker_accounts: true,
        ..options()
    };
    let vault = Vault::open(&path, engine, &raw_key(10), shared).unwrap();
    vault.put_account(&second).unwrap();
    let other = new_account("u3", "kite", 3);
    vault.put_account(&other).unwrap();
    vault
        .set_attention(&second.key, attention("invalid_credentials"))
        .unwrap();
    let state = |k: &AccountKey| vault.get_account(k).unwrap().unwrap().state();
    assert_eq!(state(&first.key), AccountState::NeedsAttention);
    assert_eq!(state(&second.key), AccountState::NeedsAttention);
    assert_eq!(
        state(&other.key),
        AccountState::Active,
        "another broker account"
    );
}

macro_rules! suite {
    ($module:ident, $engine:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn every_record_type_round_trips() {
                if available($engine) {
                    round_trips($engine)
                }
            }

            #[test]
            fn plaintexts_of_1000_accounts_never_reach_the_file() {
                if available($engine) {
                    plaintexts_never_reach_the_file($engine)
                }
            }

            #[test]
            fn flipped_or_swapped_records_fail_integrity() {
                if available($engine) {
                    tampered_records_fail_integrity($engine)
                }
            }

            #[test]
            fn wrong_key_or_passphrase_is_refused_before_any_write() {
                if available($engine) {
                    wrong_keys_are_refused_before_any_write($engine)
                }
            }

            #[test]
            fn rekey_of_1000_accounts_reencrypts_everything() {
                if available($engine) {
                    rekey_of_1000_accounts($engine)
                }
            }

            #[test]
            fn copies_to_every_engine_open_with_the_same_key() {
                if available($engine) {
                    copies_open_with_the_same_key($engine)
                }
            }

            #[test]
            fn one_vault_serves_many_threads() {
                if available($engine) {
                    shared_across_threads($engine)
                }
            }

            #[test]
            fn resaving_identical_credentials_keeps_needs_attention() {
                if available($engine) {
                    attention_survives_saves_that_cannot_fix_it($engine)
                }
            }

            #[test]
            fn one_broker_account_for_two_users_is_refused_or_shares_its_attention() {
                if available($engine) {
                    shared_broker_accounts_share_a_wrong_password($engine)
                }
            }

            #[test]
            fn cached_token_reads_follow_every_write() {
                if available($engine) {
                    cached_reads_follow_every_write($engine)
                }
            }
        }
    };
}

suite!(redb, Engine::Redb);
#[cfg(feature = "sled")]
suite!(sled, Engine::Sled);
suite!(postgres, Engine::Postgres);

/// Poll `check` every 20 ms for up to `within`; how long it took, or `None`.
fn within(
    within: std::time::Duration,
    mut check: impl FnMut() -> bool,
) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

#[test]
fn daemons_sharing_a_postgres_vault_have_one_leader_one_login_per_account_and_fresh_caches() {
    if !available(Engine::Postgres) {
        return;
    }
    let place = Place::new(Engine::Postgres);
    let at = place.at("shared");
    let first = Vault::create(&at, Engine::Postgres, &raw_key(11), options()).unwrap();
    first.put_account(&new_account("u", "kite", 1)).unwrap();
    let second = Vault::open(&at, Engine::Postgres, &raw_key(11), options()).unwrap();
    let reader = Vault::open_read_only(&at, Engine::Postgres, &raw_key(11), options()).unwrap();
    assert!(first.is_shared() && second.is_shared() && !reader.is_shared());

    // One leader; the other follows, and asking again changes nothing.
    assert!(first.lead().unwrap());
    assert!(!second.lead().unwrap());
    assert!(first.lead().unwrap());
    assert!(!reader.lead().unwrap());

    // One login of an account at a time, across daemons; another account is free.
    let key = account_key("u", "kite");
    let lease = first.lease(&key).unwrap().expect("free");
    assert!(lease.held());
    assert!(second.lease(&key).unwrap().is_none());
    assert!(second.lease(&account_key("v", "kite")).unwrap().is_some());
    drop(lease);
    let theirs = std::cell::RefCell::new(None);
    within(std::time::Duration::from_secs(2), || {
        *theirs.borrow_mut() = second.lease(&key).unwrap();
        theirs.borrow().is_some()
    })
    .expect("given back when dropped");
    assert!(first.lease(&key).unwrap().is_none());
    drop(theirs);

    // A TOTP step handed out by one daemon is refused to the other.
    first.record_totp_step(&key, 1_000).unwrap();
    assert!(matches!(
        second.record_totp_step(&key, 1_000),
        Err(VaultError::StepUsed(1_000))
    ));
    second.record_totp_step(&key, 1_001).unwrap();

    // A token stored by one daemon reaches the other's cached reads and its listener.
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    second.set_token_listener(Arc::new(move |changes: &[TokenChange]| {
        h.lock().unwrap().extend(changes.iter().cloned());
    }));
    let user = UserId::new("u").unwrap();
    let token_of = |vault: &Vault| {
        vault.user_tokens(&user).unwrap()[0]
            .1
            .as_ref()
            .map(|t| t.access_token.expose_secret().to_owned())
    };
    assert_eq!(token_of(&second), None);
    first.put_token(&key, &new_token(7)).unwrap();
    let took = within(std::time::Duration::from_secs(1), || {
        token_of(&second) == Some(secret("tok", 7))
    })
    .expect("the new token on the other daemon within 1 s");
    eprintln!("cache propagation: {took:?}");
    within(std::time::Duration::from_secs(1), || {
        !heard.lock().unwrap().is_empty()
    })
    .expect("the other daemon's listener hears the change");
    assert_eq!(heard.lock().unwrap()[0].user, user);

    // Leadership passes when its holder ends.
    drop(first);
    within(std::time::Duration::from_secs(2), || second.lead().unwrap()).expect("taken over");
    assert_credentials(&reader, &account_key("u", "kite"), 1);
}

#[test]
fn an_unreachable_vault_database_is_named_without_its_password() {
    let at = Location::Postgres(PgTarget::new(
        SecretString::from("postgres://tokenbot:s3cret-Pw-9@127.0.0.1:1/vaultdb"),
        "tokenbot",
    ));
    let e = Vault::open(&at, Engine::Postgres, &raw_key(1), options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("127.0.0.1:1/vaultdb, schema tokenbot"), "{e}");
    assert!(!e.contains("s3cret-Pw-9"), "{e}");
}

/// End the session holding an advisory lock of the vault of `target`, as a database restart or
/// an operator's `pg_terminate_backend` would: its leadership (the lock `(SHA-256 prefix of
/// "tokenbot vault <schema>", 1)`), or the lease of `account` (the one-`bigint` lock of the
/// SHA-256 prefix of "tokenbot lease <schema>\0" and the account's record key).
fn end_session(target: &PgTarget, account: Option<(&str, &str)>) {
    let (classid, objid, subid) = match account {
        None => {
            let digest = Sha256::digest(format!("tokenbot vault {}", target.schema).as_bytes());
            let key = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
            (i64::from(key), 1_i64, 2_i32)
        }
        Some((user, broker)) => {
            let mut hash = Sha256::new();
            hash.update(format!("tokenbot lease {}\0", target.schema).as_bytes());
            hash.update((user.len() as u16).to_be_bytes());
            hash.update(user.as_bytes());
            hash.update([broker.len() as u8]);
            hash.update(broker.as_bytes());
            let d = hash.finalize();
            let high = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            let low = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            (i64::from(high), i64::from(low), 1)
        }
    };
    pg(target.url.expose_secret(), move |c| async move {
        let ended = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
                 WHERE locktype = 'advisory' AND classid::bigint = $1 \
                 AND objid::bigint = $2 AND objsubid = $3",
                &[&classid, &objid, &(subid as i16)],
            )
            .await
            .unwrap();
        assert_eq!(ended.get::<_, i64>(0), 1, "one session to end");
    });
    // The client notices its connection closed within moments.
    std::thread::sleep(std::time::Duration::from_millis(300));
}

#[test]
fn a_lost_leadership_or_lease_session_stops_this_daemon_at_once() {
    if !available(Engine::Postgres) {
        return;
    }
    let place = Place::new(Engine::Postgres);
    let at = place.at("lost_session");
    let Location::Postgres(target) = &at else {
        unreachable!()
    };
    let first = Vault::create(&at, Engine::Postgres, &raw_key(12), options()).unwrap();
    first.put_account(&new_account("u", "kite", 1)).unwrap();
    assert!(first.lead().unwrap());

    // Nobody else wanted it: a follower at once (stepping down waits for nothing), then the
    // leader again at the next ask.
    end_session(target, None);
    assert!(!first.lead().unwrap());
    assert!(first.lead().unwrap());

    // Another daemon took it meanwhile: this one follows, and still writes.
    end_session(target, None);
    let second = Vault::open(&at, Engine::Postgres, &raw_key(12), options()).unwrap();
    assert!(second.lead().unwrap());
    assert!(!first.lead().unwrap());
    first.put_account(&new_account("u2", "kite", 2)).unwrap();
    drop(second);
    within(std::time::Duration::from_secs(2), || first.lead().unwrap()).expect("led again");

    // A lease whose session ended says so, and the account is free for another daemon.
    let key = account_key("u", "kite");
    let lease = first.lease(&key).unwrap().unwrap();
    assert!(lease.confirm());
    end_session(target, Some(("u", "kite")));
    assert!(!lease.held() && !lease.confirm());
    let second = Vault::open(&at, Engine::Postgres, &raw_key(12), options()).unwrap();
    assert!(second.lease(&key).unwrap().is_some());
}

#[test]
fn a_save_from_credentials_read_earlier_is_refused_once_they_changed() {
    let place = Place::new(Engine::Redb);
    let vault = Vault::create(place.at("vault"), Engine::Redb, &raw_key(13), options()).unwrap();
    let account = new_account("u", "kite", 1);
    vault.put_account(&account).unwrap();
    let key = account_key("u", "kite");
    let seen = vault.credentials(&key).unwrap().unwrap();
    // Meanwhile the password is replaced through another path.
    let mut replaced = account.clone();
    replaced.credentials.password = Some("pw-new".into());
    vault.put_account(&replaced).unwrap();
    // A form that kept the password it read (and changed the API secret) is refused whole.
    let mut from_form = account.clone();
    from_form.credentials.api_secret = Some("as-new".into());
    assert!(matches!(
        vault.put_account_if_unchanged(&from_form, &seen),
        Err(VaultError::Changed(_))
    ));
    let now = vault.credentials(&key).unwrap().unwrap();
    assert_eq!(exposed(&now.password), Some("pw-new"));
    assert_eq!(exposed(&now.api_secret), Some(secret("as", 1).as_str()));
    // Read again, the same save goes through.
    let mut from_form = replaced.clone();
    from_form.credentials.api_secret = Some("as-new".into());
    let seen = vault.credentials(&key).unwrap().unwrap();
    vault.put_account_if_unchanged(&from_form, &seen).unwrap();
    assert_eq!(
        exposed(&vault.credentials(&key).unwrap().unwrap().api_secret),
        Some("as-new")
    );
}

#[test]
fn a_vault_database_demanding_tls_is_reached_over_verified_tls() {
    if !available(Engine::Postgres) {
        return;
    }
    // The test server's Debian snake-oil certificate, issued to `localhost`.
    const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if cfg!(feature = "postgres-tls") && !std::path::Path::new(SNAKEOIL).exists() {
        crate::support::say_skipped("the vault over TLS", &format!("no {SNAKEOIL} here"));
        return;
    }
    let place = Place::new(Engine::Postgres);
    let Location::Postgres(mut target) = place.at("tls") else {
        unreachable!()
    };
    let application = format!("tokenbot_vault_tls_{}", std::process::id());
    let mut url = url::Url::parse(target.url.expose_secret()).unwrap();
    url.set_host(Some("localhost")).unwrap();
    let root = if cfg!(feature = "postgres-tls") {
        format!("&sslrootcert={SNAKEOIL}")
    } else {
        String::new()
    };
    target.url = SecretString::from(format!(
        "{url}?hostaddr=127.0.0.1&sslmode=require&application_name={application}{root}"
    ));
    let at = Location::Postgres(target.clone());
    if !cfg!(feature = "postgres-tls") {
        let e = Vault::create(&at, Engine::Postgres, &raw_key(14), options())
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres-tls"), "{e}");
        return;
    }
    let vault = Vault::create(&at, Engine::Postgres, &raw_key(14), options()).unwrap();
    vault.put_account(&new_account("u", "kite", 1)).unwrap();
    let (sessions, all_tls): (i64, bool) = pg(&place.db.as_ref().unwrap().0, |c| async move {
        let row = c
            .query_one(
                "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    });
    assert!(
        sessions >= 1 && all_tls,
        "{sessions} sessions, all TLS: {all_tls}"
    );
}
