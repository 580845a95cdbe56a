//! The stable contract between the tokenbot daemon and its broker login strategies.
//!
//! - [`abi`]: the C ABI (entry symbol, host and plugin tables, status codes, sinks). The only FFI.
//! - [`wire`]: the versioned JSON messages that cross it.
//! - [`guest`]: the safe side for strategies written in Rust, and [`export_strategy!`].
//!
//! This crate never depends on an async runtime, an HTTP client or a database: plugins stay small,
//! and all I/O goes through the host's callbacks.
#![deny(missing_docs)]

pub mod abi;
pub mod guest;
pub mod wire;

pub use guest::{Host, Level, Strategy};
