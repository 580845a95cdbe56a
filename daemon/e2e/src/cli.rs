//! The driver's options: flags parsed by clap, then the figures `--quick` leaves to their defaults.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

/// The PostgreSQL the mirror writes to when neither `--pg-url` nor the environment names one.
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The flags as given; a figure left out takes its full or quick default in [`Flags::resolve`].
#[derive(Parser)]
#[command(
    name = "tokenbot-e2e",
    about = "The end-to-end fault, load and abuse suite (run it through scripts/e2e)"
)]
pub struct Flags {
    /// The tokenbot binary to test (release for the figures; `scripts/e2e --quick` passes a debug
    /// build)
    #[arg(long, value_name = "PATH")]
    daemon: PathBuf,
    /// The schemathesis CLI (scripts/e2e installs it into target/e2e-venv)
    #[arg(long, value_name = "PATH")]
    schemathesis: Option<PathBuf>,
    /// The bounded run for CI (smaller figures below)
    #[arg(long)]
    quick: bool,
    /// The high-availability figures instead of the scenarios above: three daemons sharing a
    /// PostgreSQL vault, SIGKILL of the leader during its scheduled run, reads from a follower
    /// against a redb daemon, refresh-all against its floor (with --quick: the small version)
    #[arg(long)]
    ha: bool,
    /// Work directory, wiped first [default: target/e2e/full or target/e2e/quick]
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// PostgreSQL for the mirror [default: $TOKENBOT_E2E_DATABASE_URL, else
    /// postgres://postgres@127.0.0.1:5432/test]
    #[arg(long, value_name = "URL")]
    pg_url: Option<String>,
    /// Accounts provisioned [default: full 1000, quick 200; --ha: full 1000, quick 100]
    #[arg(long, value_name = "N")]
    accounts: Option<usize>,
    /// Chaos cycles, or --ha failover cycles [default: full 20, quick 3]
    #[arg(long, value_name = "N")]
    cycles: Option<usize>,
    /// Keep-alive connections of the load phase [default: full 10000, quick 1000; --ha: full
    /// 1000, quick 200]
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// Length of the load phase in seconds [default: full 30, quick 5; --ha: full 10, quick 5]
    #[arg(long, value_name = "N")]
    load_secs: Option<u64>,
    /// Slowloris connections [default: full 1000, quick 200]
    #[arg(long, value_name = "N")]
    slowloris: Option<usize>,
    /// Length of the slowloris window in seconds [default: full 20, quick 12]
    #[arg(long, value_name = "N")]
    slow_secs: Option<u64>,
    /// Schemathesis examples per operation [default: full 50, quick 5]
    #[arg(long, value_name = "N")]
    examples: Option<u32>,
    /// Latency the fake Kite adds per request, in milliseconds
    #[arg(long, value_name = "N", default_value_t = 20)]
    latency_ms: u64,
    /// Scenarios to leave out (comma-separated: chaos, load, slowloris, schemathesis); a skipped
    /// scenario is a FAIL in the summary
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    skip: Vec<String>,
}

/// The options of one run, every figure decided.
pub struct Options {
    pub daemon: PathBuf,
    pub schemathesis: Option<PathBuf>,
    pub quick: bool,
    /// The high-availability figures (`scenario::ha`) instead of the scenarios.
    pub ha: bool,
    pub work: PathBuf,
    pub pg_url: String,
    pub accounts: usize,
    pub cycles: usize,
    pub connections: usize,
    pub load_secs: u64,
    pub slowloris: usize,
    pub slow_secs: u64,
    pub examples: u32,
    pub latency_ms: u64,
    pub skip: BTreeSet<String>,
}

impl Options {
    /// `full` or `quick` (`ha full`, `ha quick`), as the output names the mode.
    pub fn mode(&self) -> &'static str {
        match (self.ha, self.quick) {
            (false, false) => "full",
            (false, true) => "quick",
            (true, false) => "ha full",
            (true, true) => "ha quick",
        }
    }

    pub fn skips(&self, scenario: &str) -> bool {
        self.skip.contains(scenario)
    }
}

/// The full run's figure, or the quick run's.
fn pick<T>(quick: bool, full: T, fast: T) -> T {
    if quick { fast } else { full }
}

impl Flags {
    /// Fill in the defaults of the mode and check what clap cannot.
    pub fn resolve(self) -> anyhow::Result<Options> {
        let (quick, ha) = (self.quick, self.ha);
        let pg_url = self.pg_url.unwrap_or_else(|| {
            std::env::var("TOKENBOT_E2E_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_PG_URL.into())
        });
        let options = Options {
            daemon: self.daemon,
            schemathesis: self.schemathesis,
            quick,
            ha,
            work: self.work.unwrap_or_else(|| {
                PathBuf::from(match (ha, quick) {
                    (false, false) => "target/e2e/full",
                    (false, true) => "target/e2e/quick",
                    (true, false) => "target/e2e/ha-full",
                    (true, true) => "target/e2e/ha-quick",
                })
            }),
            pg_url,
            accounts: self
                .accounts
                .unwrap_or(pick(quick, 1000, if ha { 100 } else { 200 })),
            cycles: self.cycles.unwrap_or(pick(quick, 20, 3)),
            connections: self.connections.unwrap_or(if ha {
                pick(quick, 1000, 200)
            } else {
                pick(quick, 10_000, 1000)
            }),
            load_secs: self.load_secs.unwrap_or(if ha {
                pick(quick, 10, 5)
            } else {
                pick(quick, 30, 5)
            }),
            slowloris: self.slowloris.unwrap_or(pick(quick, 1000, 200)),
            slow_secs: self.slow_secs.unwrap_or(pick(quick, 20, 12)),
            examples: self.examples.unwrap_or(pick(quick, 50, 5)),
            latency_ms: self.latency_ms,
            skip: self
                .skip
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if options.daemon.as_os_str().is_empty() {
            bail!("--daemon PATH is required");
        }
        if options.accounts < 2 {
            bail!("--accounts must be at least 2");
        }
        Ok(options)
    }
}
