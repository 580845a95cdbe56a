//! The test binary's one tracing subscriber, which writes every event at TRACE into a buffer the
//! tests read back. Plugins log from blocking threads, so the subscriber must be the global one,
//! and a process has only one: the plugin-host tests and the strategies' harness share it.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the subscriber (once per test binary) and return its buffer.
pub fn install() -> &'static Mutex<Vec<u8>> {
    LOG.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(buffer))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the first subscriber of this test binary");
        buffer
    })
}

fn buffer() -> std::sync::MutexGuard<'static, Vec<u8>> {
    let log = LOG.get().expect("log_capture::install() ran");
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything logged since [`install`] ran.
pub fn text() -> String {
    String::from_utf8_lossy(&buffer()).into_owned()
}

/// How many bytes have been logged: a mark for [`since`].
pub fn len() -> usize {
    LOG.get().map_or(0, |_| buffer().len())
}

/// The whole lines logged from byte `from` on (each event is written as one line).
pub fn since(from: usize) -> Vec<u8> {
    let log = buffer();
    let tail = &log[from.min(log.len())..];
    let end = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tail[..end].to_vec()
}
