//! The plugin host against real shared libraries: an out-of-tree Rust strategy, a strategy written
//! in C against the header, and plugins that misbehave in every way the ABI anticipates.

use crate::{log_capture, support};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use broker_api::wire::{Credentials, ErrorClass, LoginRequest, Sensitive};
use tokenbot::clock::ManualClock;
use tokenbot::config::PluginsConfig;
use tokenbot::plugins::totp::{code_at_step, parse_secret};
use tokenbot::plugins::{
    AccountAccess, CallLimits, LoadError, Plugin, PluginEnv, PluginError, Registry, Source,
};

const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const PASSWORD: &str = "hunter2-password-for-u1";
/// A fixed instant with 20 s left in its TOTP step.
const FIXED_NOW_MS: i64 = 1_700_000_010_000;

/// Everything logged by this test process (plugins log from blocking threads, so the subscriber
/// must be global).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    log_capture::install()
}

/// A loopback server standing in for a broker.
#[derive(Default)]
struct Fake {
    hits: AtomicUsize,
}

#[derive(serde::Deserialize)]
struct Params {
    user: Option<String>,
    code: Option<String>,
}

async fn start(Query(p): Query<Params>, State(fake): State<Arc<Fake>>) -> impl IntoResponse {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    let sid = format!("s-{}", p.user.unwrap_or_default());
    (
        [("set-cookie", format!("sid={sid}; Path=/; HttpOnly"))],
        "ok",
    )
}

async fn token(
    Query(p): Query<Params>,
    headers: HeaderMap,
    State(fake): State<Arc<Fake>>,
) -> impl IntoResponse {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(user) = p.user {
        // The C plugin's single request.
        return (StatusCode::OK, format!("ctok-{user}"));
    }
    let cookie = headers
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    let Some(sid) = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("sid="))
    else {
        return (StatusCode::UNAUTHORIZED, "no session cookie".to_owned());
    };
    let secret = parse_secret(TOTP_SECRET).unwrap();
    let expected = code_at_step(&secret, (FIXED_NOW_MS / 30_000) as u64);
    if p.code.as_deref() != Some(expected.as_str()) {
        return (StatusCode::FORBIDDEN, "wrong code".to_owned());
    }
    (StatusCode::OK, format!("tok-{sid}"))
}

async fn fake_broker() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/start", get(start))
        .route("/token", get(token))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

fn c_plugin(variant: Option<&str>) -> PathBuf {
    let dir = support::fixtures_target().join("c-plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let name = variant.unwrap_or("GOOD");
    let out = dir.join(format!("{name}.so"));
    // Tests run on several threads and in several processes: each compile gets its own file.
    static COMPILES: AtomicUsize = AtomicUsize::new(0);
    let n = COMPILES.fetch_add(1, Ordering::SeqCst);
    let tmp = dir.join(format!(".{name}.{}.{n}.so", std::process::id()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/c-plugin/plugin.c");
    let include = support::workspace_root().join("broker-api/include");
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(&include);
    if let Some(v) = variant {
        // A variant compiles out part of the plugin on purpose.
        cc.arg(format!("-D{v}")).arg("-Wno-unused");
    }
    let status = cc
        .arg(&source)
        .arg("-o")
        .arg(&tmp)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed for variant {name}");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn rust_plugin() -> PathBuf {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rust-plugin");
    support::external_so(&project, "example_plugin")
}

fn request(user: &str, api_url: &str) -> LoginRequest {
    LoginRequest {
        v: 1,
        user_id: format!("platform-{user}"),
        broker_user_id: user.to_owned(),
        credentials: Credentials {
            password: Some(Sensitive::new(PASSWORD)),
            api_key: None,
            api_secret: None,
            extra: Default::default(),
        },
        base_urls: BTreeMap::from([("api_url".to_owned(), api_url.to_owned())]),
        settings: BTreeMap::new(),
        attempt: 1,
        redirect_url: None,
    }
}

async fn login(
    plugin: Arc<Plugin>,
    api_url: &str,
    user: &str,
) -> Result<broker_api::wire::LoginOutput, PluginError> {
    let services = PluginEnv::new(
        Arc::new(ManualClock::new(FIXED_NOW_MS)),
        CallLimits::default(),
    );
    let urls = BTreeMap::from([("api_url".to_owned(), api_url.to_owned())]);
    let ctx = services.call_for(AccountAccess {
        plugin: &plugin,
        account: format!("platform-{user}/{}", plugin.id),
        configured_urls: &urls,
        extra_hosts: &[],
        ipv4_only: false,
        totp_secret: Some(parse_secret(TOTP_SECRET).unwrap()),
        secrets: vec![PASSWORD],
    });
    let req = request(user, api_url);
    tokenbot::plugins::run_blocking(plugin, ctx, move |p, ctx| p.login_blocking(ctx, &req)).await
}

fn load(path: &Path) -> Arc<Plugin> {
    Arc::new(Plugin::load_file(path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_tree_rust_strategy_logs_in_through_the_abi() {
    let logs = captured_logs();
    let (url, _fake) = fake_broker().await;
    let plugins = tempfile::tempdir().unwrap();
    let path = support::install(&rust_plugin(), plugins.path(), "example.so");
    let registry = Registry::load(&PluginsConfig {
        dir: plugins.path().to_owned(),
        sha256_allowlist: vec![],
    });
    assert!(registry.failures().is_empty(), "{:?}", registry.failures());
    let plugin = registry
        .get("example")
        .expect("the out-of-tree plugin is registered");
    assert_eq!(plugin.source, Source::Path(path));
    assert_eq!(plugin.version, "0.3.1");
    assert_eq!(plugin.manifest.schedule, "30 7 * * 1-5");

    let output = login(plugin, &url, "u1").await.unwrap();
    // Cookie set by /start was sent to /token by the host's per-login jar; the TOTP code matched.
    assert_eq!(output.access_token.expose(), "tok-s-u1");
    assert_eq!(output.broker_user_id, "u1");
    assert_eq!(output.issued_at_ms, FIXED_NOW_MS);
    assert_eq!(
        output.extras["totp_step"],
        serde_json::json!(FIXED_NOW_MS / 30_000)
    );

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("logging in with password [redacted]"),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "the password reached a log line");
}

#[tokio::test(flavor = "multi_thread")]
async fn c_strategy_logs_in_through_the_abi() {
    let (url, fake) = fake_broker().await;
    let plugin = load(&c_plugin(None));
    assert_eq!(
        (plugin.id.as_str(), plugin.version.as_str()),
        ("c-example", "0.1.0")
    );
    assert_eq!(plugin.abi, (1, 0));
    assert!(!plugin.has_verify() && !plugin.has_assisted());
    let output = login(plugin, &url, "cu7").await.unwrap();
    assert_eq!(output.access_token.expose(), "ctok-cu7");
    assert_eq!(output.expires_at_ms, FIXED_NOW_MS + 3_600_000);
    assert_eq!(output.extras["language"], "c");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn plugins_that_fail_to_load_get_typed_errors() {
    let expected = |variant: &str, e: &LoadError| match variant {
        "NO_ENTRY" => *e == LoadError::NoEntrySymbol,
        "NULL_TABLE" => *e == LoadError::NullTable,
        "BAD_MAGIC" => *e == LoadError::BadMagic(0xDEAD_BEEF),
        "ABI_MAJOR2" => matches!(
            e,
            LoadError::AbiMajor {
                found: 2,
                supported: 1
            }
        ),
        "SHORT_TABLE" => matches!(e, LoadError::TableTooShort { size: 64, min: 72 }),
        "BAD_MANIFEST" => matches!(e, LoadError::BadManifest(_)),
        _ => unreachable!(),
    };
    for variant in [
        "NO_ENTRY",
        "NULL_TABLE",
        "BAD_MAGIC",
        "ABI_MAJOR2",
        "SHORT_TABLE",
        "BAD_MANIFEST",
    ] {
        let err = Plugin::load_file(&c_plugin(Some(variant)), &[]).expect_err(variant);
        assert!(expected(variant, &err), "{variant}: unexpected {err:?}");
    }
}

#[test]
fn sha256_outside_the_allowlist_is_not_loaded() {
    let path = c_plugin(None);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()))
    };
    let err = Plugin::load_file(&path, &["ab".repeat(32)]).unwrap_err();
    assert_eq!(err, LoadError::NotAllowed(digest.clone()));
    assert!(Plugin::load_file(&path, &[digest.to_uppercase()]).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_that_misbehave_during_login_get_typed_errors() {
    let (url, fake) = fake_broker().await;
    let bad_output = login(load(&c_plugin(Some("BAD_OUTPUT"))), &url, "x").await;
    assert!(
        matches!(bad_output, Err(PluginError::BadOutput(_))),
        "{bad_output:?}"
    );
    let too_large = login(load(&c_plugin(Some("BIG_OUTPUT"))), &url, "x").await;
    assert!(
        matches!(too_large, Err(PluginError::OutputTooLarge)),
        "{too_large:?}"
    );

    let rust = load(&rust_plugin());
    let panicked = login(rust.clone(), &url, "panic").await;
    assert!(
        matches!(panicked, Err(PluginError::Panicked)),
        "{panicked:?}"
    );
    // The process survived the panic; the same plugin still works.
    assert!(login(rust.clone(), &url, "u2").await.is_ok());

    let hits_before = fake.hits.load(Ordering::SeqCst);
    match login(rust, &url, "undeclared").await {
        Err(PluginError::Failed(e)) => {
            assert_eq!(e.class, ErrorClass::Network);
            assert!(e.message.starts_with("denied:"), "{}", e.message);
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(fake.hits.load(Ordering::SeqCst), hits_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_error_text_is_redacted_like_its_log_lines() {
    let (url, _fake) = fake_broker().await;
    match login(load(&rust_plugin()), &url, "leaky").await {
        Err(PluginError::Failed(e)) => {
            assert!(!e.message.contains(PASSWORD), "{}", e.message);
            assert!(e.message.contains("[redacted]"), "{}", e.message);
        }
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

#[test]
fn a_directory_of_broken_plugins_leaves_the_rest_loaded() {
    let dir = tempfile::tempdir().unwrap();
    for variant in [
        "NO_ENTRY",
        "NULL_TABLE",
        "BAD_MAGIC",
        "ABI_MAJOR2",
        "SHORT_TABLE",
        "BAD_MANIFEST",
    ] {
        support::install(
            &c_plugin(Some(variant)),
            dir.path(),
            &format!("{variant}.so"),
        );
    }
    std::fs::write(dir.path().join("garbage.so"), b"not an ELF file").unwrap();
    support::install(&c_plugin(None), dir.path(), "good.so");
    let registry = Registry::load(&PluginsConfig {
        dir: dir.path().to_owned(),
        sha256_allowlist: vec![],
    });
    let failures = registry.failures();
    assert_eq!(failures.len(), 7, "{failures:?}");
    assert!(
        failures
            .iter()
            .any(|f| matches!(f.error, LoadError::Open(_)))
    );
    let ids: Vec<String> = registry.all().keys().cloned().collect();
    let mut expected: Vec<&str> = support::BUNDLED_BROKERS.to_vec();
    expected.push("c-example");
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[test]
fn rescan_loads_new_plugins_and_skips_unchanged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = PluginsConfig {
        dir: dir.path().to_owned(),
        sha256_allowlist: vec![],
    };
    let registry = Registry::load(&config);
    assert!(registry.get("c-example").is_none());
    support::install(&c_plugin(None), dir.path(), "c.so");
    registry.rescan(&config);
    let first = registry.get("c-example").expect("loaded on rescan");
    registry.rescan(&config);
    assert!(
        Arc::ptr_eq(&first, &registry.get("c-example").unwrap()),
        "an unchanged file is not reloaded"
    );
}

/// A broker fix ships as a new `.so` installed over the old path (copied beside it, then
/// renamed, as `install` does): the rescan runs the new code, not the library already loaded.
#[test]
fn a_plugin_replaced_at_the_same_path_runs_the_new_code_after_a_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let config = PluginsConfig {
        dir: dir.path().to_owned(),
        sha256_allowlist: vec![],
    };
    support::install(&c_plugin(None), dir.path(), "c.so");
    let registry = Registry::load(&config);
    assert_eq!(registry.get("c-example").unwrap().version, "0.1.0");
    support::install(&c_plugin(Some("NEW_VERSION")), dir.path(), "c.so");
    registry.rescan(&config);
    assert_eq!(registry.get("c-example").unwrap().version, "0.2.0");
}

/// A plugin runs with the daemon's rights: a file its group or others may write is refused, and
/// the bytes that were hashed are the ones loaded (one descriptor for both).
#[test]
fn a_plugin_file_others_could_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = support::install(&rust_plugin(), dir.path(), "example.so");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let err = Plugin::load_file(&path, &[]).unwrap_err();
    assert!(
        err.to_string().contains("writable by its group or others"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plugin = Plugin::load_file(&path, &[]).unwrap();
    let on_disk = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&path).unwrap(),
    ));
    assert_eq!(plugin.sha256.as_deref(), Some(on_disk.as_str()));
}

/// A redirect the host follows for a plugin keeps the plugin's `Authorization` on the same
/// origin and drops it on another one.
#[tokio::test(flavor = "multi_thread")]
async fn a_followed_redirect_to_another_origin_gets_no_authorization() {
    async fn echo(headers: HeaderMap) -> String {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/same",
            get(|| async { axum::response::Redirect::temporary("/echo") }),
        )
        .route(
            "/other",
            get(move || async move {
                axum::response::Redirect::temporary(&format!("http://localhost:{port}/echo"))
            }),
        )
        .route("/echo", get(echo));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let plugin = load(&rust_plugin());
    let services = PluginEnv::new(
        Arc::new(ManualClock::new(FIXED_NOW_MS)),
        CallLimits::default(),
    );
    let urls = BTreeMap::from([("api_url".to_owned(), format!("http://127.0.0.1:{port}"))]);
    let extra = ["localhost".to_owned()];
    let ctx = services.call_for(AccountAccess {
        plugin: &plugin,
        account: "u/example".into(),
        configured_urls: &urls,
        extra_hosts: &extra,
        ipv4_only: false,
        totp_secret: None,
        secrets: vec![],
    });
    let fetch = move |path: &str| {
        let request = serde_json::json!({
            "v": 1, "method": "GET", "url": format!("http://127.0.0.1:{port}{path}"),
            "headers": [["Authorization", "Bearer plugin-secret"]], "follow_redirects": true,
        })
        .to_string();
        let mut out = broker_api::abi::SinkBuf::with_cap(1 << 20);
        // SAFETY: the context is live for the call; request and sink outlive it.
        let status = unsafe {
            (tokenbot::plugins::host::HOST_TABLE.http)(
                ctx.as_ptr(),
                broker_api::abi::Bytes::new(request.as_bytes()),
                out.sink(),
            )
        };
        assert!(status.is_ok(), "{}", String::from_utf8_lossy(out.bytes()));
        let response: broker_api::wire::HttpResponse = serde_json::from_slice(out.bytes()).unwrap();
        response.body
    };
    let (same, other) = tokio::task::spawn_blocking(move || (fetch("/same"), fetch("/other")))
        .await
        .unwrap();
    assert_eq!(same, "Bearer plugin-secret");
    assert_eq!(other, "none");
}
