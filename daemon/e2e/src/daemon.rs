//! The daemon under test: its work directory and `tokenbot.toml`, starting it (address from the
//! JSON "listening" line), SIGKILL / SIGTERM, `vault verify`, and its memory figures.
//!
//! Everything the daemon writes to stderr is kept in `stderr/NN-label.log` in the work directory
//! (for the secrets audit); its own `[log] dir` files are in `logs/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What every start of the daemon shares.
pub struct DaemonEnv {
    pub bin: PathBuf,
    pub work: PathBuf,
    pub config: PathBuf,
    /// Env variables the daemon gets (keys, secrets).
    pub env: Vec<(String, String)>,
    starts: AtomicUsize,
}

/// Settings written into `tokenbot.toml`.
pub struct ConfigSpec<'a> {
    pub kite_web_url: &'a str,
    pub kite_api_url: &'a str,
    pub pg_url: &'a str,
    pub pg_schema: &'a str,
    pub concurrency: u32,
    pub header_read_timeout_secs: u64,
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub addr: String,
    pub label: String,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DaemonEnv {
    pub fn new(bin: &Path, work: &Path, env: Vec<(String, String)>) -> DaemonEnv {
        DaemonEnv {
            bin: bin.to_owned(),
            work: work.to_owned(),
            config: work.join("tokenbot.toml"),
            env,
            starts: AtomicUsize::new(0),
        }
    }

    pub fn vault_path(&self) -> PathBuf {
        self.work.join("vault.redb")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.work.join("logs")
    }

    pub fn stderr_dir(&self) -> PathBuf {
        self.work.join("stderr")
    }

    /// Write `tokenbot.toml`.
    pub fn write_config(&self, spec: &ConfigSpec<'_>) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.work.join("plugins"))?;
        std::fs::create_dir_all(self.log_dir())?;
        std::fs::create_dir_all(self.stderr_dir())?;
        let q = |p: PathBuf| format!("{:?}", p.display().to_string());
        let text = format!(
            r#"# Written by tokenbot-e2e.
[server]
listen = "127.0.0.1:0"
header_read_timeout_secs = {timeout}

[vault]
path = {vault}

[refresh]
concurrency = {conc}
max_attempts = 3
backoff_initial_ms = 200
backoff_max_ms = 2000
login_timeout_secs = 90

[brokers.kite]
web_url = {web:?}
api_url = {api:?}
rate_limit_per_sec = 100000.0
concurrency = {conc}

[mirror.postgres]
url = {pg:?}
schema = {schema:?}
notify_channel = {schema:?}
batch_size = 100
poll_interval_ms = 50
backoff_initial_ms = 50
backoff_max_ms = 1000
connect_timeout_secs = 5

[plugins]
dir = {plugins}

[log]
level = "info,tokenbot=debug"
format = "json"
dir = {logs}
"#,
            timeout = spec.header_read_timeout_secs,
            vault = q(self.vault_path()),
            conc = spec.concurrency,
            web = spec.kite_web_url,
            api = spec.kite_api_url,
            pg = spec.pg_url,
            schema = spec.pg_schema,
            plugins = q(self.work.join("plugins")),
            logs = q(self.log_dir()),
        );
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.work)
            .arg("--config")
            .arg(&self.config);
        // Nothing from the caller's environment configures the daemon but what is set here.
        for (name, _) in std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .filter(|(k, _)| {
                k.starts_with("TOKENBOT_")
                    || matches!(
                        k.as_str(),
                        "PORT"
                            | "DATABASE_URL"
                            | "ENCRYPTION_KEY"
                            | "JWT_SECRET"
                            | "LOG_LEVEL"
                            | "RUST_LOG"
                    )
            })
        {
            cmd.env_remove(name);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start `serve` with this log level; wait for "listening" (30 s at most).
    pub fn start(&self, label: &str, log_level: &str) -> anyhow::Result<Daemon> {
        self.start_with(label, log_level, &[])
    }

    /// [`DaemonEnv::start`] with more env variables (configuration overrides).
    pub fn start_with(
        &self,
        label: &str,
        log_level: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Daemon> {
        self.start_serve(label, log_level, extra, true)
    }

    /// `serve`, with `--dev` (which creates a missing vault) or without (a vault `init` made).
    pub fn start_serve(
        &self,
        label: &str,
        log_level: &str,
        extra: &[(String, String)],
        dev: bool,
    ) -> anyhow::Result<Daemon> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let label = format!("{n:02}-{label}");
        let log_path = self.stderr_dir().join(format!("{label}.log"));
        let serve: &[&str] = if dev { &["serve", "--dev"] } else { &["serve"] };
        let mut child = self
            .command()
            .args(serve)
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .env("TOKENBOT_LOG__LEVEL", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut out = match std::fs::File::create(&log_path) {
                Ok(f) => std::io::BufWriter::new(f),
                Err(e) => panic!("{}: {e}", log_path.display()),
            };
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                if let Some(sender) = &tx {
                    let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if json["fields"]["message"] == "listening"
                        && let Some(addr) = json["fields"]["addr"].as_str()
                    {
                        let _ = sender.send(addr.to_owned());
                        tx = None;
                        let _ = out.flush();
                    }
                }
            }
            let _ = out.flush();
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                let daemon = Daemon {
                    child,
                    addr,
                    label,
                    reader: Some(reader),
                };
                // The daemon installs its SIGTERM handler only once its accept loop runs, a moment
                // after "listening": a SIGTERM in between kills it by the default action (see the
                // e2e report). An answered /health means the loop runs.
                wait_ready(&daemon.addr)?;
                Ok(daemon)
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = reader.join();
                bail!(
                    "the daemon ({label}) did not log \"listening\" within 30 s (exit: {status:?}); see {}",
                    self.stderr_dir().join(format!("{label}.log")).display()
                )
            }
        }
    }

    /// `tokenbot vault verify` (the daemon must be stopped): exit success, and its output, which is
    /// also kept in `stderr/` for the audit.
    pub fn verify(&self, label: &str) -> anyhow::Result<(bool, String)> {
        self.verify_with(label, &[])
    }

    /// [`DaemonEnv::verify`] with more env variables (another vault).
    pub fn verify_with(
        &self,
        label: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<(bool, String)> {
        self.run_cli(&format!("verify-{label}"), &["vault", "verify"], extra)
    }

    /// Run a command of the binary to its end (`vault verify`, `init`): exit success, and its
    /// output, which is also kept in `stderr/<label>.log` for the audit.
    pub fn run_cli(
        &self,
        label: &str,
        args: &[&str],
        extra: &[(String, String)],
    ) -> anyhow::Result<(bool, String)> {
        let out = self
            .command()
            .args(args)
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .env("TOKENBOT_LOG__LEVEL", "info,tokenbot=debug")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", args.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(self.stderr_dir().join(format!("{label}.log")), &text)?;
        Ok((out.status.success(), text))
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(())
    }

    /// SIGTERM; wait for a clean exit (60 s at most, then SIGKILL and fail).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                if !status.success() {
                    bail!(
                        "the daemon ({}) exited with {status} after SIGTERM",
                        self.label
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the daemon ({}) did not stop within 60 s of SIGTERM",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `(VmRSS, VmHWM)` in KiB from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon left over by an error path: never leave it running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Wait until `GET /health` answers 200 (10 s at most).
fn wait_ready(addr: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(
                s,
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        if answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon at {addr} logged \"listening\" but /health did not answer 200 within 10 s"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(VmRSS, VmHWM)` in KiB of a process.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
