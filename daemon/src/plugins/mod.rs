//! The plugin host: registers the bundled strategies and every `.so` in `[plugins] dir` through the
//! same entry function, validates them, and calls them.
//!
//! Libraries are never unloaded: a plugin may have handed out pointers (its table, its strings)
//! that live as long as the process. Rescans (SIGHUP) only add or replace.

mod call;
mod egress;
mod env;
mod error;
pub mod host;
mod manifest;
mod plugin;
mod registry;
pub mod skew;
pub mod totp;

/// Credential field names shared by every broker (the vault's list).
pub use crate::vault::CREDENTIAL_FIELDS;
pub use call::{decode_output, run_blocking};
pub use egress::Egress;
pub use env::{AccountAccess, CallLimits, PluginEnv, deadline};
pub use error::{LoadError, PluginError};
pub use plugin::{Plugin, Source};
pub use registry::{BUNDLED, LoadFailure, Registry};

/// Largest output a plugin call may produce.
pub const OUTPUT_CAP: usize = 1 << 20;
