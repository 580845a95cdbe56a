//! The C ABI: the only FFI in the contract, mirrored by `include/tokenbot_broker.h`.
//!
//! Rules that keep this stable across compilers and languages:
//! - every struct is `#[repr(C)]`, starts with a [`Header`], and only ever grows at the end;
//! - data crosses as borrowed [`Bytes`] (valid for the duration of the call) holding versioned JSON;
//! - outputs go into a caller-owned [`Sink`], so memory is never freed on the other side;
//! - results are a [`Status`] (an `i32`, never a Rust enum).

use std::ffi::c_void;

/// Name of the exported entry symbol, without the trailing NUL.
pub const ENTRY_SYMBOL: &str = "tokenbot_broker_v1";
/// `"TKBH"` read as a little-endian `u32`: the host table's magic.
pub const HOST_MAGIC: u32 = u32::from_le_bytes(*b"TKBH");
/// `"TKBP"` read as a little-endian `u32`: the plugin table's magic.
pub const PLUGIN_MAGIC: u32 = u32::from_le_bytes(*b"TKBP");
/// Incompatible changes bump the major; a host refuses any other major.
pub const ABI_MAJOR: u16 = 1;
/// Appended fields bump the minor; readers check `struct_size` before reading them.
pub const ABI_MINOR: u16 = 3;

/// Leading part of every table that crosses the boundary.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`HOST_MAGIC`] or [`PLUGIN_MAGIC`].
    pub magic: u32,
    /// `size_of` the whole table as its writer compiled it.
    pub struct_size: u32,
    /// ABI major version of the writer.
    pub abi_major: u16,
    /// ABI minor version of the writer.
    pub abi_minor: u16,
}

/// Result code of every call across the boundary. A newtype, not an enum: an unknown value from a
/// newer peer is still a valid `Status`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

impl Status {
    /// Success; the sink holds the call's output JSON.
    pub const OK: Status = Status(0);
    /// A typed failure; the sink holds an error JSON (`wire::ErrorOutput` or `wire::HostError`).
    pub const ERROR: Status = Status(1);
    /// The callee panicked; the panic was caught at the boundary.
    pub const PANIC: Status = Status(2);
    /// The input could not be decoded.
    pub const BAD_INPUT: Status = Status(3);
    /// The callee does not implement this function.
    pub const UNSUPPORTED: Status = Status(4);
    /// The host refused the request (e.g. an HTTP host the plugin did not declare).
    pub const DENIED: Status = Status(5);
    /// An output or response exceeded its size cap.
    pub const TOO_LARGE: Status = Status(6);
    /// A deadline passed.
    pub const TIMEOUT: Status = Status(7);

    /// Whether this is [`Status::OK`].
    pub fn is_ok(self) -> bool {
        self == Status::OK
    }
}

/// Borrowed bytes, valid only for the duration of the call that passes them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// Start of the data; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrow a slice for the duration of a call.
    pub fn new(data: &[u8]) -> Bytes {
        Bytes {
            ptr: data.as_ptr(),
            len: data.len(),
        }
    }

    /// View the bytes as a slice.
    ///
    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes for the lifetime `'a`, or `len` must be 0.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller guarantees ptr/len describe live memory for 'a.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Appends `data` to the sink's buffer. May be called several times; the data is copied.
pub type SinkWriteFn = unsafe extern "C" fn(ctx: *mut c_void, data: Bytes);

/// A caller-owned output buffer: the callee writes, the caller owns and frees.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sink {
    /// Opaque state of the caller.
    pub ctx: *mut c_void,
    /// Append function.
    pub write: SinkWriteFn,
}

/// Opaque per-call context created by the host for one plugin call and handed back to every host
/// callback made during that call (cookie jar, account, deadline, secrets to redact).
#[repr(C)]
pub struct CallCtx {
    _private: [u8; 0],
}

/// `http(call, request JSON, out) -> status`: one HTTP exchange.
pub type HttpFn = unsafe extern "C" fn(call: *mut CallCtx, request: Bytes, out: Sink) -> Status;
/// `log(call, level, message)`: `level` is 1 error, 2 warn, 3 info, 4 debug, 5 trace.
pub type LogFn = unsafe extern "C" fn(call: *mut CallCtx, level: i32, message: Bytes);
/// `now_unix_ms(call)`: the host's clock (injectable in tests).
pub type NowFn = unsafe extern "C" fn(call: *mut CallCtx) -> i64;
/// `totp(call, request JSON, out) -> status`: a fresh TOTP code for the call's account.
pub type TotpFn = unsafe extern "C" fn(call: *mut CallCtx, request: Bytes, out: Sink) -> Status;
/// `sleep_ms(call, ms)`: block the calling thread for `ms` milliseconds of the host's clock.
/// Returns [`Status::TIMEOUT`] at once, without sleeping, when the call's deadline would pass
/// first. Added in ABI 1.1: read it only when the host table's `struct_size` covers it.
pub type SleepFn = unsafe extern "C" fn(call: *mut CallCtx, ms: u64) -> Status;

/// Functions the host offers to plugins. Owned by the host, valid for the life of the process.
#[repr(C)]
#[derive(Debug)]
pub struct HostTable {
    /// `magic == HOST_MAGIC`.
    pub header: Header,
    /// One HTTP exchange.
    pub http: HttpFn,
    /// A log line; the host redacts known secrets.
    pub log: LogFn,
    /// Current time in Unix milliseconds.
    pub now_unix_ms: NowFn,
    /// A TOTP code for the account of this call.
    pub totp: TotpFn,
    /// Sleep on the host's clock within the call's deadline (ABI 1.1; see [`SleepFn`]).
    pub sleep_ms: SleepFn,
}

/// A plugin function: `(host, call, input JSON, out) -> status`.
pub type PluginFn = unsafe extern "C" fn(
    host: *const HostTable,
    call: *mut CallCtx,
    input: Bytes,
    out: Sink,
) -> Status;

/// What a plugin exports. Owned by the plugin, valid for the life of the process (libraries are never
/// unloaded).
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    /// `magic == PLUGIN_MAGIC`.
    pub header: Header,
    /// Broker id, UTF-8 (e.g. `kite`).
    pub id: Bytes,
    /// Strategy version, UTF-8.
    pub version: Bytes,
    /// Manifest JSON (`wire::Manifest`).
    pub manifest: Bytes,
    /// Headless login: `wire::LoginRequest` in, `wire::LoginOutput` or `wire::ErrorOutput` out.
    pub login: Option<PluginFn>,
    /// Token check: `wire::VerifyRequest` in, `wire::VerifyOutput` out. Optional.
    pub verify: Option<PluginFn>,
    /// Assisted login, step 1: `wire::AssistedUrlRequest` in, `wire::AssistedUrlOutput` out. Optional.
    pub assisted_url: Option<PluginFn>,
    /// Assisted login, step 2: `wire::AssistedFinishRequest` in, `wire::LoginOutput` out. Optional.
    pub assisted_finish: Option<PluginFn>,
}

/// Smallest plugin table a host accepts: everything up to and including `login`.
pub const PLUGIN_TABLE_MIN_SIZE: usize =
    std::mem::offset_of!(PluginTable, login) + std::mem::size_of::<Option<PluginFn>>();

/// Smallest host table a plugin may rely on: ABI 1.0's four callbacks.
pub const HOST_TABLE_MIN_SIZE: usize = std::mem::offset_of!(HostTable, sleep_ms);

/// Whether a host table whose header says `struct_size` has the field that ends at `end` (the
/// field's offset plus its size): how a reader checks for a callback added after ABI 1.0.
pub const fn table_has(struct_size: u32, end: usize) -> bool {
    struct_size as usize >= end
}

/// Signature of the entry symbol: returns the plugin's table, or null to refuse this host.
pub type EntryFn = unsafe extern "C" fn(host: *const HostTable) -> *const PluginTable;

/// A growable buffer behind a [`Sink`], with a size cap. Used by both sides.
#[derive(Debug, Default)]
pub struct SinkBuf {
    data: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl SinkBuf {
    /// A buffer that accepts at most `cap` bytes; more marks it overflowed and is dropped.
    pub fn with_cap(cap: usize) -> SinkBuf {
        SinkBuf {
            data: Vec::new(),
            cap,
            overflowed: false,
        }
    }

    /// A [`Sink`] writing into this buffer; valid while `self` is neither moved nor dropped.
    pub fn sink(&mut self) -> Sink {
        Sink {
            ctx: (self as *mut SinkBuf).cast(),
            write: sink_buf_write,
        }
    }

    /// Whether a write was refused because of the cap.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

unsafe extern "C" fn sink_buf_write(ctx: *mut c_void, data: Bytes) {
    // A panic must not unwind into the caller; nothing below panics except on allocation failure.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `ctx` was created by `SinkBuf::sink` from a live `&mut SinkBuf`.
        let buf = unsafe { &mut *ctx.cast::<SinkBuf>() };
        // SAFETY: the writer passes bytes valid for this call.
        let bytes = unsafe { data.as_slice() };
        if buf.overflowed || buf.data.len().saturating_add(bytes.len()) > buf.cap {
            buf.overflowed = true;
            return;
        }
        buf.data.extend_from_slice(bytes);
    });
}

/// Write all of `data` into `sink`.
///
/// # Safety
/// `sink` must come from the caller of the current function and still be valid.
pub unsafe fn sink_write(sink: Sink, data: &[u8]) {
    // SAFETY: the caller vouches for the sink; `data` outlives the call.
    unsafe { (sink.write)(sink.ctx, Bytes::new(data)) }
}
