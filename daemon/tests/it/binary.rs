//! The real `tokenbot` binary: serving, stopping on SIGTERM, and living with plugins.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tokenbot");

/// A working directory with a config listening on an ephemeral port and JSON logs.
fn workdir(plugins: &Path) -> tempfile::TempDir {
    workdir_with(plugins, "")
}

/// As [`workdir`], with extra `[server]` keys.
fn workdir_with(plugins: &Path, server: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[plugins]\ndir = {:?}\n[log]\nformat = \"json\"\n",
            plugins.display().to_string()
        ),
    )
    .unwrap();
    dir
}

fn tokenbot(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("TOKENBOT_CONFIG")
        .env_remove("ENCRYPTION_KEY")
        .env_remove("PORT")
        .env_remove("DATABASE_URL");
    cmd
}

/// Start `serve`; return the child, its address, and the log lines read up to "listening".
fn serve(dir: &Path) -> (Child, String, Vec<String>) {
    serve_with(tokenbot(dir).args(["serve", "--dev"]))
}

/// As [`serve`], with a command of the caller's (JSON logs required).
fn serve_with(command: &mut Command) -> (Child, String, Vec<String>) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        seen.push(line.clone());
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if json["fields"]["message"] == "listening" {
            break json["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, seen)
}

/// A blocking GET; status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("the daemon did not stop within 10 s of SIGTERM");
}

#[test]
fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir(plugins.path());
    let (mut child, addr, _) = serve(dir.path());
    let (status, body) = get(&addr, "/health");
    assert_eq!(status, 200);
    assert!(body.contains(r#"{"status":"ok"}"#), "{body}");
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

/// What `cargo run --release -- serve` does on a fresh clone: the shipped `tokenbot.toml`, no
/// `data/` contents, no key configured. Only the address (a free port) and the log format (to
/// read the address back) are overridden, by environment as an operator would.
#[test]
fn serve_with_the_shipped_config_on_a_fresh_checkout_creates_a_dev_key_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::workspace_root().join("tokenbot.toml"),
        dir.path().join("tokenbot.toml"),
    )
    .unwrap();
    let (mut child, addr, seen) = serve_with(
        tokenbot(dir.path())
            .args(["serve", "--dev"])
            .env("TOKENBOT_SERVER__LISTEN", "127.0.0.1:0")
            .env("TOKENBOT_LOG__FORMAT", "json"),
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("created a NEW DEVELOPMENT MASTER KEY")),
        "the dev key is announced: {seen:#?}"
    );
    assert!(dir.path().join("data/vault.redb").is_file());
    let key = dir.path().join("data/vault.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, body) = get(&addr, "/health");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

/// Regression: the SIGTERM handler was installed on the shutdown future's first poll, after the
/// "listening" line, so a SIGTERM sent on that line killed the daemon (exit by signal, no drain)
/// in 19 of 20 runs of the end-to-end suite.
#[test]
fn sigterm_the_moment_it_says_listening_still_stops_cleanly() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir(plugins.path());
    for _ in 0..3 {
        let (mut child, _, _) = serve(dir.path());
        sigterm(&child);
        let status = wait_exit(&mut child);
        assert!(status.success(), "{status}");
    }
}

#[test]
fn daemon_keeps_serving_with_broken_plugins() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("garbage.so"), b"\x7fELF but not really").unwrap();
    std::fs::write(plugins.path().join("empty.so"), b"").unwrap();
    let dir = workdir(plugins.path());
    let (mut child, addr, logs) = serve(dir.path());
    let failures = logs
        .iter()
        .filter(|l| l.contains("plugin not loaded"))
        .count();
    assert_eq!(failures, 2, "{logs:#?}");
    assert_eq!(get(&addr, "/health").0, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

#[test]
fn a_kite_plugin_replaces_the_bundled_kite() {
    let so = support::broker_so("broker-kite");
    let plugins = tempfile::tempdir().unwrap();
    let installed = support::install(&so, plugins.path(), "kite.so");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&installed).unwrap()))
    };
    let dir = workdir(plugins.path());
    let output = tokenbot(dir.path())
        .args(["plugins", "list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let kite = stdout
        .lines()
        .find(|l| l.starts_with("kite "))
        .expect("a kite row");
    assert!(kite.contains(&installed.display().to_string()), "{kite}");
    assert!(kite.contains(&digest), "{kite}");
    let abi = format!(
        "{}.{}",
        broker_api::abi::ABI_MAJOR,
        broker_api::abi::ABI_MINOR
    );
    assert!(
        kite.split_whitespace().nth(2) == Some(abi.as_str()),
        "{kite}"
    );
    let bundled = stdout.lines().filter(|l| l.contains(" bundled ")).count();
    assert_eq!(
        bundled,
        crate::support::BUNDLED_BROKERS.len() - 1,
        "every other strategy stays bundled:\n{stdout}"
    );
    assert!(stderr.contains("replaces an earlier strategy"), "{stderr}");
}

#[test]
fn bad_config_is_refused_with_key_value_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenbot.toml"),
        "[brokers.kite]\ntimezone = \"Mars/Olympus\"\n",
    )
    .unwrap();
    let output = tokenbot(dir.path()).arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("brokers.kite.timezone") && stderr.contains("Mars/Olympus"),
        "{stderr}"
    );
}

#[test]
fn a_broker_setting_its_strategy_does_not_declare_is_refused_at_start() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir(plugins.path());
    let path = dir.path().join("tokenbot.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("[brokers.iifl]\ntotp_auth_headr = \"plain\"\n");
    std::fs::write(&path, config).unwrap();
    let output = tokenbot(dir.path()).arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("brokers.iifl.totp_auth_headr") && stderr.contains("totp_auth_header"),
        "{stderr}"
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir_with(plugins.path(), "header_read_timeout_secs = 1");
    let (mut child, addr, _) = serve(dir.path());
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The server must close the connection by itself; the read timeout only bounds a broken test.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest).is_ok();
    assert!(closed, "the slow connection was still open after 30 s");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    // A connection that sends nothing at all is closed too, and so is a keep-alive connection
    // idle after its request.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut nothing = Vec::new();
    assert!(
        silent.read_to_end(&mut nothing).is_ok() && nothing.is_empty(),
        "the silent connection was still open after 30 s"
    );
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answered = Vec::new();
    assert!(
        idle.read_to_end(&mut answered).is_ok(),
        "the idle keep-alive connection was still open after 30 s"
    );
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));
    // Others are served meanwhile and after.
    assert_eq!(get(&addr, "/health").0, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

/// A daemon killed when dropped: a failing test does not leave it running (holding the test's
/// output pipe open).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send `GET /health` on `stream` and read the answer's head and body (`{"status":"ok"}`).
fn health_on(stream: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::{Read, Write};
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with(r#"{"status":"ok"}"#) {
        match stream.read(&mut buf)? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn a_connection_past_server_max_connections_is_closed_at_once() {
    use std::io::Read;
    use std::net::TcpStream;
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir_with(plugins.path(), "max_connections = 1");
    let (child, addr, _) = serve(dir.path());
    let mut daemon = Running(child);
    // Read timeouts only bound a broken test; nothing below waits for one.
    let connect = || {
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    // A keep-alive connection, answered: it holds the only slot.
    let mut held = connect();
    assert!(health_on(&mut held).unwrap().starts_with("HTTP/1.1 200"));
    // The next is closed without an answer, not left waiting.
    let mut extra = connect();
    let mut got = Vec::new();
    match extra.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection past the limit was not closed: {e}"),
    }
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // The held one is still served; once it is gone, its slot serves another.
    assert!(health_on(&mut held).unwrap().starts_with("HTTP/1.1 200"));
    drop(held);
    let mut served = false;
    for _ in 0..200 {
        if health_on(&mut connect())
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200")
        {
            served = true;
            break;
        }
        // The server notices the close in its own time: until then, the slot is taken.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "no connection was served after the held one closed");
    sigterm(&daemon.0);
    assert!(wait_exit(&mut daemon.0).success());
}

/// (soft, hard) of `Max open files` in `/proc/<pid>/limits`.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let figures: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (figures[0], figures[1])
}

#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    let (_, hard) = open_file_limits(std::process::id());
    let soft = (hard / 2).min(512);
    assert!(soft < hard);
    let plugins = tempfile::tempdir().unwrap();
    let dir = workdir(plugins.path());
    let mut command = Command::new("sh");
    command
        .current_dir(dir.path())
        .args([
            "-c",
            &format!("ulimit -Sn {soft} && exec \"$0\" serve --dev"),
            BIN,
        ])
        .env_remove("TOKENBOT_CONFIG")
        .env_remove("ENCRYPTION_KEY")
        .env_remove("PORT")
        .env_remove("DATABASE_URL");
    let (child, _, _) = serve_with(&mut command);
    let mut daemon = Running(child);
    assert_eq!(open_file_limits(daemon.0.id()), (hard, hard));
    sigterm(&daemon.0);
    assert!(wait_exit(&mut daemon.0).success());
}
