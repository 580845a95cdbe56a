//! A plugin: its validated table, where it came from, and how a `.so` is checked and loaded.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use broker_api::abi::{
    self, Bytes, EntryFn, PLUGIN_MAGIC, PLUGIN_TABLE_MIN_SIZE, PluginFn, PluginTable,
};
use broker_api::wire::Manifest;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::LoadError;
use super::host::HOST_TABLE;
use super::manifest::validate;

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
    pub(super) table: PluginTable,
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
    pub(super) fn optional(&self, offset: usize, f: Option<PluginFn>) -> Option<PluginFn> {
        let end = offset + std::mem::size_of::<Option<PluginFn>>();
        (self.table.header.struct_size as usize >= end)
            .then_some(f)
            .flatten()
    }
}
