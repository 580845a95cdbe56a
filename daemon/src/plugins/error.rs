//! Why a plugin was not loaded, and why a call to one failed.

use broker_api::abi;
use broker_api::wire::ErrorOutput;

use super::OUTPUT_CAP;

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

/// Why a plugin call failed: the typed failure the plugin reported, or the plugin misbehaving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
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
