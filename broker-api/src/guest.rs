//! The safe side a strategy written in Rust sees: implement [`Strategy`], call
//! [`export_strategy!`](crate::export_strategy), and talk to the host through [`Host`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::{
    self, Bytes, CallCtx, HOST_MAGIC, HostTable, PLUGIN_MAGIC, PluginFn, PluginTable, Sink,
    SinkBuf, Status,
};
use crate::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, ErrorOutput, HostError,
    HttpRequest, HttpResponse, LoginOutput, LoginRequest, Manifest, TotpCode, TotpRequest,
    VerifyOutput, VerifyRequest, WIRE_VERSION,
};

/// Largest answer a plugin accepts from a host callback.
const HOST_REPLY_CAP: usize = 8 << 20;

/// A broker login strategy. Every method runs on a host thread that may block; the host bounds
/// the total time with a deadline.
pub trait Strategy: 'static {
    /// Broker id, e.g. `kite`. Lowercase letters, digits and `-`.
    const ID: &'static str;
    /// Strategy version.
    const VERSION: &'static str;
    /// Whether [`Strategy::verify`] is implemented.
    const HAS_VERIFY: bool = false;
    /// Whether the assisted-login pair is implemented.
    const HAS_ASSISTED: bool = false;

    /// What the strategy needs and offers.
    fn manifest() -> Manifest;

    /// Log in headlessly.
    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput>;

    /// Check a token with the broker.
    fn verify(_host: &Host<'_>, _req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        Err(unsupported("verify"))
    }

    /// Build the broker's login URL for a person to open.
    fn assisted_url(
        _host: &Host<'_>,
        _req: AssistedUrlRequest,
    ) -> Result<AssistedUrlOutput, ErrorOutput> {
        Err(unsupported("assisted login"))
    }

    /// Finish a login from the broker's redirect query.
    fn assisted_finish(
        _host: &Host<'_>,
        _req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        Err(unsupported("assisted login"))
    }
}

fn unsupported(what: &str) -> ErrorOutput {
    ErrorOutput::new(
        crate::wire::ErrorClass::Protocol,
        format!("{what} is not supported by this strategy"),
    )
}

/// Log levels of the `log` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Progress worth an operator's eye.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

/// Failure of a host callback as a strategy sees it.
#[derive(Clone, Debug)]
pub struct HostCallError {
    /// Status the host returned.
    pub status: Status,
    /// The host's explanation.
    pub error: HostError,
}

impl std::fmt::Display for HostCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {}: {}", self.error.kind, self.error.message)
    }
}

impl std::error::Error for HostCallError {}

/// The host's callbacks, copied field by field out of a host table that may be shorter than
/// this crate's [`HostTable`] (an older host): no reference to a whole table is ever made.
#[derive(Clone, Copy)]
struct HostFns {
    http: abi::HttpFn,
    log: abi::LogFn,
    now_unix_ms: abi::NowFn,
    totp: abi::TotpFn,
    /// ABI 1.1; `None` from a 1.0 host.
    sleep_ms: Option<abi::SleepFn>,
}

impl HostFns {
    /// # Safety
    /// `host` must point at a host table for which [`host_is_compatible`] holds.
    unsafe fn read(host: *const HostTable) -> HostFns {
        // SAFETY: the caller checked the table covers ABI 1.0's fields; `sleep_ms` is read only
        // when the header's size covers it. Each read is of one field, through the raw pointer.
        unsafe {
            let size = (*host).header.struct_size;
            let sleep_end =
                std::mem::offset_of!(HostTable, sleep_ms) + std::mem::size_of::<abi::SleepFn>();
            HostFns {
                http: (*host).http,
                log: (*host).log,
                now_unix_ms: (*host).now_unix_ms,
                totp: (*host).totp,
                sleep_ms: abi::table_has(size, sleep_end).then(|| (*host).sleep_ms),
            }
        }
    }
}

/// The host's services for the duration of one plugin call.
pub struct Host<'a> {
    table: HostFns,
    call: *mut CallCtx,
    _host: std::marker::PhantomData<&'a HostTable>,
}

impl Host<'_> {
    /// One HTTP exchange through the host (cookies, allowed hosts and deadline are the host's).
    pub fn http(&self, req: &HttpRequest) -> Result<HttpResponse, HostCallError> {
        self.call_json(self.table.http, req)
    }

    /// A TOTP code for this call's account, from a step never used before for it.
    pub fn totp(&self) -> Result<TotpCode, HostCallError> {
        self.call_json(self.table.totp, &TotpRequest { v: WIRE_VERSION })
    }

    /// Wait `ms` milliseconds on the host's clock. `Err` with status `TIMEOUT` when the call's
    /// deadline would pass first (nothing was waited), or `UNSUPPORTED` from a host older than
    /// ABI 1.1: either way the strategy stops retrying.
    pub fn sleep(&self, ms: u64) -> Result<(), HostCallError> {
        let Some(sleep_ms) = self.table.sleep_ms else {
            return Err(HostCallError {
                status: Status::UNSUPPORTED,
                error: HostError {
                    v: WIRE_VERSION,
                    kind: "unsupported".into(),
                    message: "the host has no sleep (ABI 1.0)".into(),
                },
            });
        };
        // SAFETY: the callback and call context come from the host for this call.
        let status = unsafe { sleep_ms(self.call, ms) };
        if status.is_ok() {
            return Ok(());
        }
        Err(HostCallError {
            status,
            error: HostError {
                v: WIRE_VERSION,
                kind: if status == Status::TIMEOUT {
                    "timeout"
                } else {
                    "error"
                }
                .into(),
                message: format!("the host did not sleep {ms} ms (status {})", status.0),
            },
        })
    }

    /// The host's clock, in Unix milliseconds.
    pub fn now_unix_ms(&self) -> i64 {
        // SAFETY: the table and call context come from the host for this call.
        unsafe { (self.table.now_unix_ms)(self.call) }
    }

    /// A log line. The host redacts the secrets it knows; strategies still never log one.
    pub fn log(&self, level: Level, message: &str) {
        // SAFETY: as above; the message outlives the call.
        unsafe { (self.table.log)(self.call, level as i32, Bytes::new(message.as_bytes())) }
    }

    fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        f: unsafe extern "C" fn(*mut CallCtx, Bytes, Sink) -> Status,
        req: &Req,
    ) -> Result<Resp, HostCallError> {
        let input = serde_json::to_vec(req).map_err(|e| local_error("bad_request", e))?;
        let mut out = SinkBuf::with_cap(HOST_REPLY_CAP);
        // SAFETY: the table and call context come from the host for this call; input and out
        // outlive the call.
        let status = unsafe { f(self.call, Bytes::new(&input), out.sink()) };
        if out.overflowed() {
            return Err(local_error("too_large", "host reply over the plugin's cap"));
        }
        if status.is_ok() {
            return serde_json::from_slice(out.bytes()).map_err(|e| local_error("bad_reply", e));
        }
        let error = serde_json::from_slice(out.bytes()).unwrap_or_else(|_| HostError {
            v: WIRE_VERSION,
            kind: "unknown".into(),
            message: format!("host returned status {}", status.0),
        });
        Err(HostCallError { status, error })
    }
}

fn local_error(kind: &str, e: impl std::fmt::Display) -> HostCallError {
    HostCallError {
        status: Status::ERROR,
        error: HostError {
            v: WIRE_VERSION,
            kind: kind.into(),
            message: e.to_string(),
        },
    }
}

/// A plugin table with the storage its `Bytes` point into. Built once per process, never freed.
#[doc(hidden)]
pub struct StaticTable(PluginTable);

// SAFETY: the table only points into leaked, immutable data and at functions.
unsafe impl Sync for StaticTable {}
// SAFETY: as for `Sync`: nothing in the table is tied to the thread that built it.
unsafe impl Send for StaticTable {}

impl StaticTable {
    /// Pointer to the table.
    pub fn as_ptr(&self) -> *const PluginTable {
        &self.0
    }
}

fn leak_bytes(s: String) -> Bytes {
    let s: &'static str = Box::leak(s.into_boxed_str());
    Bytes::new(s.as_bytes())
}

/// Builds the table of `S`. Used by [`export_strategy!`](crate::export_strategy).
#[doc(hidden)]
pub fn build_table<S: Strategy>() -> StaticTable {
    let manifest = serde_json::to_string(&S::manifest()).unwrap_or_default();
    StaticTable(PluginTable {
        header: abi::Header {
            magic: PLUGIN_MAGIC,
            struct_size: std::mem::size_of::<PluginTable>() as u32,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
        },
        id: leak_bytes(S::ID.to_owned()),
        version: leak_bytes(S::VERSION.to_owned()),
        manifest: leak_bytes(manifest),
        login: Some(login_shim::<S> as PluginFn),
        verify: S::HAS_VERIFY.then_some(verify_shim::<S> as PluginFn),
        assisted_url: S::HAS_ASSISTED.then_some(assisted_url_shim::<S> as PluginFn),
        assisted_finish: S::HAS_ASSISTED.then_some(assisted_finish_shim::<S> as PluginFn),
    })
}

/// Whether a host table is one this plugin can use. `host` must be null or point at a host table.
fn host_is_compatible(host: *const HostTable) -> bool {
    if host.is_null() {
        return false;
    }
    // SAFETY: non-null; the header is the first field of every host table ever shipped.
    let header = unsafe { (*host).header };
    header.magic == HOST_MAGIC
        && header.abi_major == abi::ABI_MAJOR
        && header.struct_size as usize >= abi::HOST_TABLE_MIN_SIZE
}

/// The wire types an entry point reads and answers, decoded and encoded by this crate's code.
///
/// The methods are not generic, so serde's code for each type is compiled once, here, rather than
/// into every strategy's shims (eleven bundled strategies carried a copy each).
trait Codec: Sized {
    /// `None` when `input` is not JSON of this shape.
    fn decode(input: &[u8]) -> Option<Self>;
    /// `None` when the value cannot be written as JSON.
    fn encode(&self) -> Option<Vec<u8>>;
}

macro_rules! codec {
    ($($wire:ty),*) => {$(
        impl Codec for $wire {
            #[inline(never)]
            fn decode(input: &[u8]) -> Option<Self> {
                serde_json::from_slice(input).ok()
            }

            #[inline(never)]
            fn encode(&self) -> Option<Vec<u8>> {
                serde_json::to_vec(self).ok()
            }
        }
    )*};
}

codec!(
    LoginRequest,
    VerifyRequest,
    AssistedUrlRequest,
    AssistedFinishRequest,
    LoginOutput,
    VerifyOutput,
    AssistedUrlOutput,
    ErrorOutput
);

/// Runs `f` with decoded input and writes its encoded result, catching panics.
fn shim<Req: Codec, Out: Codec>(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
    f: impl FnOnce(&Host<'_>, Req) -> Result<Out, ErrorOutput>,
) -> Status {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if !host_is_compatible(host) {
            return Status::BAD_INPUT;
        }
        let host = Host {
            // SAFETY: checked non-null and compatible above; the host keeps it alive.
            table: unsafe { HostFns::read(host) },
            call,
            _host: std::marker::PhantomData,
        };
        // SAFETY: the host passes bytes valid for this call.
        let Some(req) = Req::decode(unsafe { input.as_slice() }) else {
            return Status::BAD_INPUT;
        };
        let (status, body) = match f(&host, req) {
            Ok(output) => (Status::OK, output.encode()),
            Err(error) => (Status::ERROR, error.encode()),
        };
        match body {
            Some(body) => {
                // SAFETY: `out` is the caller's sink for this call.
                unsafe { abi::sink_write(out, &body) };
                status
            }
            None => Status::ERROR,
        }
    }));
    result.unwrap_or(Status::PANIC)
}

unsafe extern "C" fn login_shim<S: Strategy>(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
) -> Status {
    shim(host, call, input, out, S::login)
}

unsafe extern "C" fn verify_shim<S: Strategy>(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
) -> Status {
    shim(host, call, input, out, S::verify)
}

unsafe extern "C" fn assisted_url_shim<S: Strategy>(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
) -> Status {
    shim(host, call, input, out, S::assisted_url)
}

unsafe extern "C" fn assisted_finish_shim<S: Strategy>(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
) -> Status {
    shim(host, call, input, out, S::assisted_finish)
}

/// Body of an entry function: checks the host and returns the (lazily built) table, or null.
#[doc(hidden)]
pub fn entry<S: Strategy>(
    host: *const HostTable,
    table: &'static std::sync::OnceLock<StaticTable>,
) -> *const PluginTable {
    catch_unwind(|| {
        if !host_is_compatible(host) {
            return std::ptr::null();
        }
        table.get_or_init(build_table::<S>).as_ptr()
    })
    .unwrap_or(std::ptr::null())
}

/// Export a [`Strategy`].
///
/// Always defines `pub extern "C" fn entry(host) -> *const PluginTable` in the calling module, which
/// a host that bundles the strategy registers directly. With the calling crate's `plugin` feature on,
/// also exports the unmangled `tokenbot_broker_v1` symbol that makes the crate's `cdylib` a drop-in
/// plugin. (It is opt-in because several bundled strategies linked into one binary would otherwise
/// each define that symbol.)
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        $crate::define_entry!($strategy);

        #[cfg(feature = "plugin")]
        $crate::export_plugin!(entry);
    };
}

/// Define `pub extern "C" fn entry(host) -> *const PluginTable` for a [`Strategy`] in the calling
/// module, and export nothing: what a strategy crate the daemon bundles uses, as it must not define
/// the plugin symbol that every other bundled strategy would define too. Its plugin crate (a
/// `cdylib` of its own) exports that `entry` with [`export_plugin!`](crate::export_plugin).
#[macro_export]
macro_rules! define_entry {
    ($strategy:ty) => {
        /// Entry function of this strategy: the same one its plugin exports.
        pub extern "C" fn entry(
            host: *const $crate::abi::HostTable,
        ) -> *const $crate::abi::PluginTable {
            static TABLE: ::std::sync::OnceLock<$crate::guest::StaticTable> =
                ::std::sync::OnceLock::new();
            $crate::guest::entry::<$strategy>(host, &TABLE)
        }
    };
}

/// Export an entry function (one that [`define_entry!`](crate::define_entry) defined) as the
/// unmangled `tokenbot_broker_v1` symbol, making the calling `cdylib` a drop-in plugin. Call it once
/// per library.
#[macro_export]
macro_rules! export_plugin {
    ($entry:path) => {
        /// The plugin entry symbol.
        // SAFETY: the library calls this macro once, so it defines the symbol once.
        #[unsafe(no_mangle)]
        pub extern "C" fn tokenbot_broker_v1(
            host: *const $crate::abi::HostTable,
        ) -> *const $crate::abi::PluginTable {
            $entry(host)
        }
    };
}
