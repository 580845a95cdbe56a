//! The host side of the ABI: the static host table and its callbacks (`http`, `log`,
//! `now_unix_ms`, `totp`, `sleep_ms`), each running on the calling plugin's thread with the
//! [`PluginCall`] of the current call. HTTP egress itself is `egress`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use broker_api::abi::{self, Bytes, CallCtx, HOST_MAGIC, Header, HostTable, Sink, Status};
use broker_api::wire::{HostError, HttpRequest, TotpCode, TotpRequest, WIRE_VERSION};
use zeroize::Zeroizing;

use super::egress::{Egress, Exchange, exchange};
use crate::clock::Clock;
use crate::plugins::totp::{FreshCode, StepGuard, fresh_code};

/// The one host table of the process. Plugins may keep the pointer forever.
pub static HOST_TABLE: HostTable = HostTable {
    header: Header {
        magic: HOST_MAGIC,
        struct_size: std::mem::size_of::<HostTable>() as u32,
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
    },
    http: host_http,
    log: host_log,
    now_unix_ms: host_now,
    totp: host_totp,
    sleep_ms: host_sleep,
};

/// Everything a host callback needs during one plugin call. Created per call, passed to the plugin
/// as an opaque `*mut CallCtx`, and borrowed back by each callback.
pub struct PluginCall {
    /// Broker id, for logs.
    pub broker: String,
    /// `user_id/broker`, the account this call acts for; keys the TOTP step guard.
    pub account: String,
    /// Egress: the shared client, this login's cookies, the hosts allowed.
    pub http: Egress,
    /// Runtime the HTTP futures run on (the callback blocks its thread on them).
    pub runtime: tokio::runtime::Handle,
    /// The clock plugins see.
    pub clock: Arc<dyn Clock>,
    /// The account's decoded TOTP secret, if it has one. Never leaves the host.
    pub totp_secret: Option<Zeroizing<Vec<u8>>>,
    /// Steps already handed out, process-wide.
    pub steps: Arc<StepGuard>,
    /// Each broker's clock skew: fed by the `Date` of every response, read to choose TOTP steps.
    pub skew: Arc<crate::plugins::skew::ClockSkew>,
    /// Records a step durably before its code is handed out (the vault, for logins the
    /// refresher runs). `None`: the step lives in `steps` alone.
    pub step_log: Option<StepLog>,
    /// When the whole call must be over.
    pub deadline: Instant,
    /// The same deadline on [`PluginCall::clock`], which a test's manual clock moves: a
    /// plugin's sleeps end the call on either.
    pub clock_deadline_ms: i64,
    /// Strings replaced by `[redacted]` in plugin log lines; grows with every TOTP code handed out
    /// and every token-like value seen in a response.
    pub redactor: Redactor,
}

/// Durable record of a TOTP step handed out for this call's account; `Err` (why) withholds it.
pub type StepLog = Arc<dyn Fn(u64) -> Result<(), String> + Send + Sync>;

/// Replaces known secrets in text.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Mutex<Vec<Zeroizing<String>>>,
}

impl Redactor {
    /// Add a secret; values shorter than 4 characters are ignored (they would redact noise).
    pub fn add(&self, secret: &str) {
        if secret.len() < 4 {
            return;
        }
        let mut secrets = self.secrets.lock();
        if !secrets.iter().any(|s| s.as_str() == secret) {
            secrets.push(Zeroizing::new(secret.to_owned()));
            // Longest first, so a secret containing another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every known secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock();
        crate::redact::redact(text, secrets.iter().map(|s| s.as_str()))
    }
}

impl PluginCall {
    /// The opaque pointer handed to the plugin for this call.
    pub fn as_ptr(&self) -> *mut CallCtx {
        (self as *const PluginCall).cast_mut().cast()
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now())
    }
}

/// Borrow the call back from the pointer the plugin hands us.
///
/// # Safety
/// `call` must be the pointer of a live `PluginCall` for the current plugin call.
unsafe fn current_call<'a>(call: *mut CallCtx) -> Option<&'a PluginCall> {
    // SAFETY: the host created this pointer from a PluginCall that outlives the plugin call.
    unsafe { call.cast::<PluginCall>().cast_const().as_ref() }
}

fn write_json<T: serde::Serialize>(out: Sink, value: &T) {
    if let Ok(bytes) = serde_json::to_vec(value) {
        // SAFETY: `out` is the sink the plugin passed for this callback.
        unsafe { abi::sink_write(out, &bytes) };
    }
}

fn fail(out: Sink, status: Status, kind: &str, message: impl Into<String>) -> Status {
    write_json(
        out,
        &HostError {
            v: WIRE_VERSION,
            kind: kind.into(),
            message: message.into(),
        },
    );
    status
}

/// Run a callback body, turning a panic into a status: a panic must never unwind into a plugin.
fn guarded(out: Option<Sink>, body: impl FnOnce() -> Status) -> Status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        if let Some(out) = out {
            fail(
                out,
                Status::PANIC,
                "panic",
                "the host panicked in a callback",
            );
        }
        Status::PANIC
    })
}

unsafe extern "C" fn host_now(call: *mut CallCtx) -> i64 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back the pointer of its current call.
        match unsafe { current_call(call) } {
            Some(ctx) => ctx.clock.now_ms(),
            None => crate::clock::SystemClock.now_ms(),
        }
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn host_sleep(call: *mut CallCtx, ms: u64) -> Status {
    guarded(None, || {
        // SAFETY: the plugin passes back the pointer of its current call.
        let Some(ctx) = (unsafe { current_call(call) }) else {
            return Status::BAD_INPUT;
        };
        let wanted = Duration::from_millis(ms);
        let in_time = ctx.remaining().is_some_and(|left| left > wanted)
            && ctx.clock.now_ms().saturating_add_unsigned(ms) < ctx.clock_deadline_ms;
        if !in_time {
            return Status::TIMEOUT;
        }
        ctx.clock.sleep_ms(ms);
        Status::OK
    })
}

unsafe extern "C" fn host_log(call: *mut CallCtx, level: i32, message: Bytes) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, message) = unsafe { (current_call(call), message.as_slice()) };
        let message = String::from_utf8_lossy(message);
        let Some(ctx) = ctx else { return };
        let message = ctx.redactor.redact(&message);
        let (broker, account) = (ctx.broker.as_str(), ctx.account.as_str());
        match level {
            1 => tracing::error!(target: "plugin", broker, account, "{message}"),
            2 => tracing::warn!(target: "plugin", broker, account, "{message}"),
            3 => tracing::info!(target: "plugin", broker, account, "{message}"),
            4 => tracing::debug!(target: "plugin", broker, account, "{message}"),
            _ => tracing::trace!(target: "plugin", broker, account, "{message}"),
        }
    }));
}

unsafe extern "C" fn host_totp(call: *mut CallCtx, request: Bytes, out: Sink) -> Status {
    guarded(Some(out), || {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, request) = unsafe { (current_call(call), request.as_slice()) };
        let Some(ctx) = ctx else {
            return fail(out, Status::BAD_INPUT, "bad_request", "no call context");
        };
        if serde_json::from_slice::<TotpRequest>(request).is_err() {
            return fail(
                out,
                Status::BAD_INPUT,
                "bad_request",
                "invalid TOTP request JSON",
            );
        }
        let Some(secret) = &ctx.totp_secret else {
            return fail(
                out,
                Status::ERROR,
                "no_totp_secret",
                "this account has no totp_secret",
            );
        };
        // Waiting for a fresh step must still fit in the call's deadline.
        let budget = ctx.remaining().unwrap_or_default().as_millis() as u64;
        // The step is the broker's: our clock plus its skew, when that is known and large.
        let offset = ctx.skew.correction_ms(&ctx.broker, ctx.clock.now_ms());
        match fresh_code(
            &ctx.steps,
            ctx.clock.as_ref(),
            offset,
            &ctx.account,
            secret,
            budget,
        ) {
            Ok(fresh) => send_code(ctx, fresh, offset, out),
            Err(wait) => fail(
                out,
                Status::TIMEOUT,
                "timeout",
                format!("a fresh TOTP step starts in {wait} ms, after the login deadline"),
            ),
        }
    })
}

/// Record `fresh`'s step as used, then hand its code to the plugin, unless recording failed or
/// took so long that the code would expire on its way.
fn send_code(ctx: &PluginCall, fresh: FreshCode, offset: i64, out: Sink) -> Status {
    // Written before the code leaves: after a crash, the next process knows the step was used
    // even if the broker saw the code and nothing else was recorded.
    if let Some(log) = &ctx.step_log
        && let Err(why) = log(fresh.step)
    {
        return fail(
            out,
            Status::ERROR,
            "step_not_recorded",
            format!("the TOTP step could not be recorded, so it was not used: {why}"),
        );
    }
    // Recording may have waited (the vault's write lock, a slow database): a code that would
    // expire on its way is not sent. Its step stays used, which is safe.
    let end_ms = (fresh.step as i64 + 1) * crate::plugins::totp::STEP_MS;
    let valid_for_ms = end_ms - ctx.clock.now_ms() - offset;
    if valid_for_ms < crate::plugins::totp::MIN_REMAINING_MS / 2 {
        return fail(
            out,
            Status::ERROR,
            "step_not_recorded",
            format!(
                "recording the TOTP step took until {valid_for_ms} ms before its end, \
                 too late to send its code"
            ),
        );
    }
    ctx.redactor.add(&fresh.code);
    write_json(
        out,
        &TotpCode {
            v: WIRE_VERSION,
            code: broker_api::wire::Sensitive::new(fresh.code.as_str()),
            step: fresh.step,
            valid_for_ms: valid_for_ms.max(0) as u64,
        },
    );
    Status::OK
}

unsafe extern "C" fn host_http(call: *mut CallCtx, request: Bytes, out: Sink) -> Status {
    guarded(Some(out), || {
        // SAFETY: the plugin passes back its call pointer and bytes valid for this call.
        let (ctx, request) = unsafe { (current_call(call), request.as_slice()) };
        let Some(ctx) = ctx else {
            return fail(out, Status::BAD_INPUT, "bad_request", "no call context");
        };
        let request: HttpRequest = match serde_json::from_slice(request) {
            Ok(r) => r,
            Err(e) => return fail(out, Status::BAD_INPUT, "bad_request", e.to_string()),
        };
        let learn_secret = |secret: &str| ctx.redactor.add(secret);
        let observe_date = |date: &str| ctx.skew.observe(&ctx.broker, date, ctx.clock.now_ms());
        let scope = Exchange {
            http: &ctx.http,
            runtime: &ctx.runtime,
            deadline: ctx.deadline,
            learn_secret: &learn_secret,
            observe_date: &observe_date,
        };
        match exchange(&scope, request) {
            Ok(response) => {
                write_json(out, &response);
                Status::OK
            }
            Err((status, kind, message)) => fail(out, status, kind, message),
        }
    })
}
