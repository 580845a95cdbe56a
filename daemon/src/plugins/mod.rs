//! The plugin host: registers the bundled strategies and every `.so` in `[plugins] dir` through the
//! same entry function, validates them, and calls them.
//!
//! Libraries are never unloaded: a plugin may have handed out pointers (its table, its strings)
//! that live as long as the process. Rescans (SIGHUP) only add or replace.

pub mod host;
pub mod totp;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use broker_api::abi::{
    self, Bytes, EntryFn, PLUGIN_MAGIC, PLUGIN_TABLE_MIN_SIZE, PluginFn, PluginTable, SinkBuf,
    Status,
};
use broker_api::wire::{self, ErrorOutput, Manifest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::config::PluginsConfig;
use host::{CallContext, HOST_TABLE};

/// Largest output a plugin call may produce.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Credential field names shared by every broker (the vault's list).
pub use crate::vault::CREDENTIAL_FIELDS;

/// Why a plugin was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or `dlopen` refused it.
    #[error("cannot open: {0}")]
    Open(String),
    /// The file's SHA-256 is not in `[plugins] sha256_allowlist`.
    #[error("sha256 {0} is not in the allowlist")]
    NotAllowed(String),
    /// Someone other than this process's user or root could change the file.
    #[error("refused: {0}")]
    Unsafe(String),
    /// The library does not export `tokenbot_broker_v1`.
    #[error("no entry symbol `{}`", abi::ENTRY_SYMBOL)]
    NoEntrySymbol,
    /// The entry function returned null (it refused this host, or failed).
    #[error("the entry function returned no table")]
    NullTable,
    /// The table does not start with the plugin magic.
    #[error("wrong magic {0:#010x}")]
    BadMagic(u32),
    /// The plugin was built for another ABI major.
    #[error("ABI major {found} is not supported (this host speaks {supported})")]
    AbiMajor {
        /// The plugin's major.
        found: u16,
        /// The host's major.
        supported: u16,
    },
    /// The table is shorter than ABI 1.0's minimum.
    #[error("plugin table of {size} bytes is shorter than the minimum {min}")]
    TableTooShort {
        /// Declared size.
        size: u32,
        /// Minimum accepted.
        min: usize,
    },
    /// The manifest, id or version is not valid.
    #[error("invalid manifest: {0}")]
    BadManifest(String),
}

/// Why a plugin call failed, apart from a login error the plugin reported.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin reported a typed failure.
    #[error("{}: {}", .0.class, .0.message)]
    Failed(ErrorOutput),
    /// The plugin panicked (caught at the boundary).
    #[error("the plugin panicked")]
    Panicked,
    /// The plugin's output was over [`OUTPUT_CAP`].
    #[error("the plugin's output exceeded {OUTPUT_CAP} bytes")]
    OutputTooLarge,
    /// The plugin's output was not the JSON the call expects.
    #[error("the plugin's output is not valid: {0}")]
    BadOutput(String),
    /// The plugin does not implement this function.
    #[error("the plugin does not support {0}")]
    Unsupported(&'static str),
    /// Any other status.
    #[error("the plugin returned status {0}")]
    Status(i32),
    /// The blocking task running the plugin could not be joined.
    #[error("the plugin call was aborted")]
    Aborted,
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Source {
    /// Compiled into this binary.
    Bundled,
    /// Loaded from a `.so`.
    Path(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bundled => f.write_str("bundled"),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A validated plugin table.
pub struct Plugin {
    /// Broker id.
    pub id: String,
    /// Strategy version.
    pub version: String,
    /// ABI version the plugin was built for.
    pub abi: (u16, u16),
    /// Bundled or a path.
    pub source: Source,
    /// SHA-256 of the `.so` (none for bundled).
    pub sha256: Option<String>,
    /// Parsed manifest.
    pub manifest: Manifest,
    /// A copy of the plugin's table: the bytes its header declares, the rest zero (no function,
    /// empty bytes), so a table shorter than this build's is never read past its end.
    table: PluginTable,
}

// SAFETY: the table is immutable, points only into the plugin's static data and at functions, and
// the library is never unloaded; the ABI requires plugin functions to be callable from any thread.
unsafe impl Send for Plugin {}
// SAFETY: as above; nothing in `Plugin` is mutated after validation.
unsafe impl Sync for Plugin {}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A plugin that failed to load, kept for `plugins list` and `/health/detailed`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[serde(serialize_with = "as_display")]
    pub error: LoadError,
}

fn as_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A plugin runs with the daemon's rights: its file must be owned by this process's user or
/// root, and writable by no one else.
fn check_owner(meta: &std::fs::Metadata) -> Result<(), LoadError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o022 != 0 {
            return Err(LoadError::Unsafe(format!(
                "the file is writable by its group or others (mode {:o}); chmod go-w it",
                meta.mode() & 0o777
            )));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && meta.uid() != 0 {
            return Err(LoadError::Unsafe(format!(
                "the file is owned by uid {}, neither this process's user ({me}) nor root",
                meta.uid()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Read a text field of a plugin table.
///
/// # Safety
/// `bytes` must point into memory the plugin keeps alive for the process.
unsafe fn table_text(bytes: Bytes, what: &str) -> Result<String, LoadError> {
    // SAFETY: plugin tables point into static data of the plugin, which is never unloaded.
    let raw = unsafe { bytes.as_slice() };
    String::from_utf8(raw.to_vec())
        .map_err(|_| LoadError::BadManifest(format!("{what} is not UTF-8")))
}

impl Plugin {
    /// Validate the table returned by `entry`.
    ///
    /// # Safety
    /// `entry` must be a function with the [`EntryFn`] contract whose code stays loaded forever.
    pub unsafe fn from_entry(
        entry: EntryFn,
        source: Source,
        sha256: Option<String>,
    ) -> Result<Plugin, LoadError> {
        // SAFETY: the caller vouches for `entry`; the host table is static.
        let table = unsafe { entry(&HOST_TABLE) };
        if table.is_null() {
            return Err(LoadError::NullTable);
        }
        // SAFETY: non-null; every table starts with a header, read alone before trusting the size.
        let header = unsafe { table.cast::<abi::Header>().read_unaligned() };
        if header.magic != PLUGIN_MAGIC {
            return Err(LoadError::BadMagic(header.magic));
        }
        if header.abi_major != abi::ABI_MAJOR {
            return Err(LoadError::AbiMajor {
                found: header.abi_major,
                supported: abi::ABI_MAJOR,
            });
        }
        if (header.struct_size as usize) < PLUGIN_TABLE_MIN_SIZE {
            return Err(LoadError::TableTooShort {
                size: header.struct_size,
                min: PLUGIN_TABLE_MIN_SIZE,
            });
        }
        let mut copy = std::mem::MaybeUninit::<PluginTable>::zeroed();
        let declared = (header.struct_size as usize).min(std::mem::size_of::<PluginTable>());
        // SAFETY: the plugin declares `struct_size` readable bytes at `table` (at least ABI 1.0's,
        // checked above), and at most a whole `PluginTable` is copied. All-zero bytes are a valid
        // `PluginTable`: a zero header, null-and-empty `Bytes`, and `None` for every
        // `Option<fn>`; the copied prefix holds what the plugin put there.
        let table: PluginTable = unsafe {
            std::ptr::copy_nonoverlapping(
                table.cast::<u8>(),
                copy.as_mut_ptr().cast::<u8>(),
                declared,
            );
            copy.assume_init()
        };
        // SAFETY: the fields point into the plugin's static data.
        let (id, version, manifest) = unsafe {
            (
                table_text(table.id, "id")?,
                table_text(table.version, "version")?,
                table_text(table.manifest, "manifest")?,
            )
        };
        let manifest: Manifest =
            serde_json::from_str(&manifest).map_err(|e| LoadError::BadManifest(e.to_string()))?;
        validate(&id, &version, &manifest)?;
        if table.login.is_none() {
            return Err(LoadError::BadManifest("no login function".into()));
        }
        Ok(Plugin {
            id,
            version,
            abi: (header.abi_major, header.abi_minor),
            source,
            sha256,
            manifest,
            table,
        })
    }

    /// Load a `.so`. The library is leaked: never unloaded.
    ///
    /// The file is opened once: its owner and mode are checked, it is hashed, and it is loaded,
    /// all through the same descriptor (`/proc/self/fd/N`), so what was checked and hashed is
    /// what runs even if the path is replaced meanwhile.
    pub fn load_file(path: &Path, allowlist: &[String]) -> Result<Plugin, LoadError> {
        let open = |e: std::io::Error| LoadError::Open(e.to_string());
        let mut file = std::fs::File::open(path).map_err(open)?;
        check_owner(&file.metadata().map_err(open)?)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(open)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if !allowlist.is_empty() && !allowlist.iter().any(|a| a.eq_ignore_ascii_case(&sha256)) {
            return Err(LoadError::NotAllowed(sha256));
        }
        #[cfg(target_os = "linux")]
        let load_path = {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        };
        #[cfg(not(target_os = "linux"))]
        let load_path = path.to_owned();
        // SAFETY: loading runs the library's initialisers; the operator chose this directory
        // (and, optionally, pinned the digests).
        let library = unsafe { libloading::Library::new(&load_path) }
            .map_err(|e| LoadError::Open(e.to_string()))?;
        // The loader knows the library by the name `/proc/self/fd/N` and would hand the same
        // library back for a later file opened as the same N: the descriptor stays open, like the
        // library, for the life of the process.
        std::mem::forget(file);
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: the symbol is declared by the ABI with the `EntryFn` signature.
        let entry = unsafe { library.get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes()) }
            .map_err(|_| LoadError::NoEntrySymbol)?;
        // SAFETY: `entry` lives in a library that is never unloaded.
        unsafe { Plugin::from_entry(*entry, Source::Path(path.to_owned()), Some(sha256)) }
    }

    /// The effective base URLs: the manifest's defaults overridden by configuration.
    pub fn base_urls(&self, configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut urls = self.manifest.base_urls.clone();
        urls.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
        urls
    }

    /// The effective settings: the manifest's defaults overridden by configuration. `Err` names
    /// a configured key the strategy does not declare (a typo must not pass for a choice).
    pub fn settings(
        &self,
        configured: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut settings = self.manifest.settings.clone();
        for (name, value) in configured {
            if !settings.contains_key(name) {
                let known: Vec<&str> = self.manifest.settings.keys().map(String::as_str).collect();
                return Err(format!(
                    "brokers.{}.{name}: unknown key: neither a base URL (names end in `_url`) nor a \
                     setting of this strategy (settings: {})",
                    self.id,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            settings.insert(name.clone(), value.clone());
        }
        Ok(settings)
    }

    /// Hosts the plugin may reach: those it declares plus those of configured URLs and extras.
    pub fn allowed_hosts(
        &self,
        configured_urls: &BTreeMap<String, String>,
        extra: &[String],
    ) -> HashSet<String> {
        let mut hosts: HashSet<String> = self
            .manifest
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        for url in configured_urls.values() {
            if let Some(host) = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
            {
                hosts.insert(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase(),
                );
            }
        }
        hosts
    }

    /// Whether `verify` is implemented.
    pub fn has_verify(&self) -> bool {
        self.optional(std::mem::offset_of!(PluginTable, verify), self.table.verify)
            .is_some()
    }

    /// Whether assisted login is implemented.
    pub fn has_assisted(&self) -> bool {
        self.optional(
            std::mem::offset_of!(PluginTable, assisted_url),
            self.table.assisted_url,
        )
        .is_some()
            && self
                .optional(
                    std::mem::offset_of!(PluginTable, assisted_finish),
                    self.table.assisted_finish,
                )
                .is_some()
    }

    /// A function past the minimum table, if the plugin's table is long enough to hold it.
    fn optional(&self, offset: usize, f: Option<PluginFn>) -> Option<PluginFn> {
        let end = offset + std::mem::size_of::<Option<PluginFn>>();
        (self.table.header.struct_size as usize >= end)
            .then_some(f)
            .flatten()
    }

    /// Call `login` on the current (blocking) thread.
    pub fn login_blocking(
        &self,
        ctx: &CallContext,
        req: &wire::LoginRequest,
    ) -> Result<wire::LoginOutput, CallError> {
        self.call(self.table.login, "login", ctx, req)
    }

    /// Call `verify` on the current (blocking) thread.
    pub fn verify_blocking(
        &self,
        ctx: &CallContext,
        req: &wire::VerifyRequest,
    ) -> Result<wire::VerifyOutput, CallError> {
        let f = self.optional(std::mem::offset_of!(PluginTable, verify), self.table.verify);
        self.call(f, "verify", ctx, req)
    }

    /// Call `assisted_url` on the current (blocking) thread.
    pub fn assisted_url_blocking(
        &self,
        ctx: &CallContext,
        req: &wire::AssistedUrlRequest,
    ) -> Result<wire::AssistedUrlOutput, CallError> {
        let f = self.optional(
            std::mem::offset_of!(PluginTable, assisted_url),
            self.table.assisted_url,
        );
        self.call(f, "assisted login", ctx, req)
    }

    /// Call `assisted_finish` on the current (blocking) thread.
    pub fn assisted_finish_blocking(
        &self,
        ctx: &CallContext,
        req: &wire::AssistedFinishRequest,
    ) -> Result<wire::LoginOutput, CallError> {
        let f = self.optional(
            std::mem::offset_of!(PluginTable, assisted_finish),
            self.table.assisted_finish,
        );
        self.call(f, "assisted login", ctx, req)
    }

    fn call<Req: Serialize, Out: DeserializeOwned>(
        &self,
        f: Option<PluginFn>,
        what: &'static str,
        ctx: &CallContext,
        req: &Req,
    ) -> Result<Out, CallError> {
        let f = f.ok_or(CallError::Unsupported(what))?;
        let input = serde_json::to_vec(req).map_err(|e| CallError::BadOutput(e.to_string()))?;
        let input = zeroize::Zeroizing::new(input);
        let mut out = SinkBuf::with_cap(OUTPUT_CAP);
        // SAFETY: `f` comes from a validated table of a never-unloaded plugin; the host table is
        // static; `ctx`, `input` and `out` outlive the call.
        let status = unsafe { f(&HOST_TABLE, ctx.as_ptr(), Bytes::new(&input), out.sink()) };
        if out.overflowed() {
            return Err(CallError::OutputTooLarge);
        }
        // A strategy's error text reaches logs, the attempt log and API answers: it gets the
        // redaction its log lines get.
        decode_output(status, out.bytes(), what).map_err(|e| match e {
            CallError::Failed(mut failure) => {
                failure.message = ctx.redactor.redact(&failure.message);
                CallError::Failed(failure)
            }
            other => other,
        })
    }
}

/// Turn what a plugin function returned (its status and the bytes it wrote into the sink) into the
/// call's result: `Out` for [`Status::OK`], the plugin's [`ErrorOutput`] for [`Status::ERROR`],
/// and a [`CallError`] for anything else. `what` names the function for
/// [`CallError::Unsupported`]. Plugin output is untrusted: this never panics (`daemon/fuzz`).
pub fn decode_output<Out: DeserializeOwned>(
    status: Status,
    bytes: &[u8],
    what: &'static str,
) -> Result<Out, CallError> {
    match status {
        Status::OK => {
            serde_json::from_slice(bytes).map_err(|e| CallError::BadOutput(e.to_string()))
        }
        Status::ERROR => match serde_json::from_slice::<ErrorOutput>(bytes) {
            Ok(error) => Err(CallError::Failed(error)),
            Err(e) => Err(CallError::BadOutput(e.to_string())),
        },
        Status::PANIC => Err(CallError::Panicked),
        Status::UNSUPPORTED => Err(CallError::Unsupported(what)),
        Status::TOO_LARGE => Err(CallError::OutputTooLarge),
        other => Err(CallError::Status(other.0)),
    }
}

fn validate(id: &str, version: &str, manifest: &Manifest) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::BadManifest(m));
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad(format!("id {id:?} must be 1-64 of [a-z0-9-]"));
    }
    if version.is_empty() {
        return bad("empty version".into());
    }
    if manifest.v == 0 {
        return bad("manifest version 0".into());
    }
    for field in &manifest.credential_fields {
        if !CREDENTIAL_FIELDS.contains(&field.name.as_str()) {
            return bad(format!("unknown credential field {:?}", field.name));
        }
    }
    if !manifest
        .credential_fields
        .iter()
        .any(|f| f.name == "broker_user_id")
    {
        return bad("credential fields must include broker_user_id".into());
    }
    (manifest.schedule.parse::<croner::Cron>())
        .map_err(|e| LoadError::BadManifest(format!("schedule: {e}")))?;
    manifest
        .timezone
        .parse::<chrono_tz::Tz>()
        .map_err(|e| LoadError::BadManifest(format!("timezone: {e}")))?;
    for (name, url) in &manifest.base_urls {
        url::Url::parse(url)
            .map_err(|e| LoadError::BadManifest(format!("base URL {name}: {e}")))?;
    }
    let rate = manifest.rate_limit_per_sec;
    if manifest.max_concurrency == 0 || !(rate.is_finite() && rate > 0.0) {
        return bad("max_concurrency and rate_limit_per_sec must be positive".into());
    }
    Ok(())
}

/// The strategies compiled into this binary, by their entry functions.
pub const BUNDLED: &[EntryFn] = &[
    broker_kite::entry,
    broker_iifl::entry,
    broker_iifl_xts::entry,
];

/// The loaded strategies, by broker id. Readers clone the `Arc` of the current map; a rescan builds
/// a new map and swaps it in, so a login in flight keeps the plugin it started with.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: RwLock<Arc<BTreeMap<String, Arc<Plugin>>>>,
    /// Failures of the last scan, for `plugins list` and `/health/detailed`.
    failures: RwLock<Vec<LoadFailure>>,
    /// `.so` files already loaded, by path and digest: a rescan does not load them again.
    loaded: RwLock<BTreeMap<PathBuf, String>>,
}

impl Registry {
    /// Bundled strategies, then every `.so` of `config.dir`.
    pub fn load(config: &PluginsConfig) -> Registry {
        let registry = Registry::default();
        let mut map = BTreeMap::new();
        for entry in BUNDLED {
            // SAFETY: bundled entry functions are part of this binary.
            match unsafe { Plugin::from_entry(*entry, Source::Bundled, None) } {
                Ok(plugin) => {
                    map.insert(plugin.id.clone(), Arc::new(plugin));
                }
                Err(e) => tracing::error!(error = %e, "a bundled strategy failed to register"),
            }
        }
        *registry.plugins.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        registry.rescan(config);
        registry
    }

    /// Load `.so` files not loaded yet (new paths, or changed digests); report failures.
    pub fn rescan(&self, config: &PluginsConfig) {
        let mut failures = Vec::new();
        let mut map = (**self.plugins.read().unwrap_or_else(|e| e.into_inner())).clone();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&config.dir) {
            Ok(dir) => dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), error = %e, "cannot read the plugins directory");
                Vec::new()
            }
        };
        paths.sort();
        for path in paths {
            let digest = std::fs::read(&path)
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_default();
            if self
                .loaded
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&path)
                == Some(&digest)
            {
                continue;
            }
            match Plugin::load_file(&path, &config.sha256_allowlist) {
                Ok(plugin) => {
                    match map.get(&plugin.id) {
                        Some(old) => tracing::warn!(
                            id = %plugin.id, path = %path.display(), replaces = %old.source, version = %plugin.version,
                            "plugin replaces an earlier strategy with the same id"
                        ),
                        None => {
                            tracing::info!(id = %plugin.id, path = %path.display(), version = %plugin.version, "plugin loaded")
                        }
                    }
                    self.loaded
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(path, digest);
                    map.insert(plugin.id.clone(), Arc::new(plugin));
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "plugin not loaded");
                    failures.push(LoadFailure { path, error });
                }
            }
        }
        *self.plugins.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        *self.failures.write().unwrap_or_else(|e| e.into_inner()) = failures;
    }

    /// The strategy for `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every configured setting that its broker's strategy does not declare, as messages.
    /// Brokers with no loaded strategy are left alone (their logins already fail clearly).
    pub fn unknown_settings(
        &self,
        brokers: &BTreeMap<String, crate::config::BrokerConfig>,
    ) -> Vec<String> {
        brokers
            .iter()
            .filter_map(|(id, broker)| self.get(id)?.settings(&broker.settings).err())
            .collect()
    }

    /// Every loaded strategy, by id.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<Plugin>>> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failures of the last scan.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Settings for building call contexts.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Whole-call deadline.
    pub timeout: Duration,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
    /// Largest HTTP response body.
    pub response_cap: usize,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(15),
            response_cap: 2 << 20,
        }
    }
}

/// Deadline `settings.timeout` from now.
pub fn deadline(settings: &CallSettings) -> Instant {
    Instant::now() + settings.timeout
}

/// What every plugin call shares: the clock, the TOTP guard, HTTP clients and limits.
#[derive(Debug)]
pub struct Services {
    /// The clock plugins see.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// TOTP steps handed out, process-wide.
    pub steps: Arc<totp::StepGuard>,
    /// Deadlines and caps.
    pub settings: CallSettings,
    /// One pooled client per egress family (`true`: IPv4 only); built on first use.
    clients: std::sync::Mutex<BTreeMap<bool, reqwest::Client>>,
}

/// Who a call acts for and what it may know.
pub struct CallTarget<'a> {
    /// The plugin.
    pub plugin: &'a Plugin,
    /// `user_id/broker`.
    pub account: String,
    /// Configured base URLs of this broker.
    pub configured_urls: &'a BTreeMap<String, String>,
    /// Extra allowed hosts from configuration.
    pub extra_hosts: &'a [String],
    /// Force IPv4 egress.
    pub ipv4_only: bool,
    /// The account's decoded TOTP secret.
    pub totp_secret: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Secrets to redact from plugin logs (password, API secret, ...).
    pub secrets: Vec<&'a str>,
}

impl Services {
    /// Services on `clock` with `settings`.
    pub fn new(clock: Arc<dyn crate::clock::Clock>, settings: CallSettings) -> Services {
        Services {
            clock,
            steps: Arc::default(),
            settings,
            clients: Default::default(),
        }
    }

    fn client(&self, ipv4_only: bool) -> reqwest::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(ipv4_only)
            .or_insert_with(|| {
                let mut builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("tokenbot/", env!("CARGO_PKG_VERSION")))
                    .pool_idle_timeout(Duration::from_secs(30))
                    .connect_timeout(Duration::from_secs(10));
                if ipv4_only {
                    builder = builder.local_address(std::net::IpAddr::from([0, 0, 0, 0]));
                }
                builder.build().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "HTTP client with custom settings failed; using defaults");
                    reqwest::Client::new()
                })
            })
            .clone()
    }

    /// A fresh context (new cookie jar, new deadline) for one call. Must be called inside a tokio
    /// runtime.
    pub fn context(&self, target: CallTarget<'_>) -> CallContext {
        let redactor = host::Redactor::default();
        for secret in &target.secrets {
            redactor.add(secret);
        }
        CallContext {
            broker: target.plugin.id.clone(),
            account: target.account,
            http: host::Egress {
                client: self.client(target.ipv4_only),
                jar: Arc::default(),
                allowed_hosts: Arc::new(
                    target
                        .plugin
                        .allowed_hosts(target.configured_urls, target.extra_hosts),
                ),
                response_cap: self.settings.response_cap,
                default_timeout: self.settings.request_timeout,
                limiter: None,
            },
            runtime: tokio::runtime::Handle::current(),
            clock: self.clock.clone(),
            totp_secret: target.totp_secret,
            steps: self.steps.clone(),
            step_log: None,
            deadline: deadline(&self.settings),
            clock_deadline_ms: self.clock.now_ms().saturating_add(
                i64::try_from(self.settings.timeout.as_millis()).unwrap_or(i64::MAX),
            ),
            redactor,
        }
    }
}

/// Run a blocking plugin call on tokio's blocking pool.
pub async fn run_blocking<T: Send + 'static>(
    plugin: Arc<Plugin>,
    ctx: CallContext,
    f: impl FnOnce(&Plugin, &CallContext) -> Result<T, CallError> + Send + 'static,
) -> Result<T, CallError> {
    tokio::task::spawn_blocking(move || f(&plugin, &ctx))
        .await
        .map_err(|_| CallError::Aborted)?
}
