//! Log output: stderr always; with `[log] dir`, also `combined.<date>.log` (every enabled level)
//! and `error.<date>.log` (errors only), rotated daily. `pretty` or `json` everywhere; files never
//! carry terminal colours.

use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Keeps the file writers flushing; drop it only at exit.
#[must_use = "dropping the guards stops file logging"]
pub struct Guards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Why file logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("log.dir {dir}: {source}")]
pub struct LogError {
    dir: String,
    source: tracing_appender::rolling::InitError,
}

fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Pretty => fmt.boxed(),
    }
}

/// `[log] level`: a default level and per-target ones, `warn,tokenbot::refresh=debug`.
fn filter(level: &str) -> Result<Targets, tracing_subscriber::filter::ParseError> {
    level.parse()
}

/// `[log] level` parses as a filter.
pub fn check_config(config: &LogConfig) -> Result<(), ConfigError> {
    filter(&config.level)
        .map(drop)
        .map_err(|e| ConfigError::invalid("log.level", &config.level, e.to_string()))
}

/// The subscriber for `config`, writing to stderr and, when configured, to the log files.
pub fn subscriber(config: &LogConfig) -> Result<(impl Subscriber + Send + Sync, Guards), LogError> {
    let filter =
        filter(&config.level).unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut layers = vec![layer(config.format, std::io::stderr, stderr_is_terminal)];
    let mut guards = Vec::new();
    if let Some(dir) = &config.dir {
        for (name, level) in [
            ("combined", LevelFilter::TRACE),
            ("error", LevelFilter::ERROR),
        ] {
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix(name)
                .filename_suffix("log")
                .build(dir)
                .map_err(|source| LogError {
                    dir: dir.display().to_string(),
                    source,
                })?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            guards.push(guard);
            layers.push(
                layer(config.format, writer, false)
                    .with_filter(level)
                    .boxed(),
            );
        }
    }
    Ok((
        Registry::default().with(filter).with(layers),
        Guards(guards),
    ))
}

/// Install the subscriber for `config` as the process-wide default.
pub fn init(config: &LogConfig) -> Result<Guards, LogError> {
    let (subscriber, guards) = subscriber(config)?;
    // A second init (tests calling the CLI in-process) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(guards)
}

/// Lets a repeated warning through at most once per period, counting the ones held back: a flood
/// (failed authentications from many addresses, connections past the limit) then costs one line
/// per period instead of one per event.
#[derive(Debug)]
pub struct Throttle {
    every_ms: u64,
    /// When the next line may be written, in ms since `start`.
    next_ms: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
}

impl Throttle {
    /// At most one line per `every`; the first goes through.
    pub fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            next_ms: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
            start: std::time::Instant::now(),
        }
    }

    /// `Some(n)` when the line is to be written now, `n` being how many were held back since the
    /// last one written; `None` (counted) when it is to be held back.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.allow_at(now)
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms.saturating_add(self.every_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Relaxed));
        }
        self.held_back.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_errors_from_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            level: "info".into(),
            format: LogFormat::Json,
            dir: Some(dir.path().to_owned()),
        };
        let (subscriber, guards) = subscriber(&config).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("routine line");
            tracing::error!("broken line");
            tracing::debug!("below the level");
        });
        drop(guards);
        let read = |prefix: &str| {
            let entry = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} file"));
            std::fs::read_to_string(entry).unwrap()
        };
        let combined = read("combined.");
        let errors = read("error.");
        assert!(combined.contains("routine line") && combined.contains("broken line"));
        assert!(!combined.contains("below the level"));
        assert!(errors.contains("broken line") && !errors.contains("routine line"));
        assert!(
            combined
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }

    #[test]
    fn a_throttled_line_is_written_once_a_period_with_the_count_held_back() {
        let throttle = Throttle::new(std::time::Duration::from_secs(60));
        assert_eq!(throttle.allow_at(5), Some(0));
        assert_eq!(throttle.allow_at(6), None);
        assert_eq!(throttle.allow_at(59_000), None);
        assert_eq!(throttle.allow_at(60_005), Some(2));
        assert_eq!(throttle.allow_at(60_006), None);
    }
}
