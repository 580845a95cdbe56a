//! Helpers shared by the bundled strategies: India-time expiry rules and the triage of broker
//! responses and host failures into error classes.
//!
//! Like `broker-api`, this crate never depends on an async runtime, an HTTP client or a database:
//! all I/O goes through the host's callbacks.
#![deny(missing_docs)]

pub mod http;
pub mod ist;
pub mod jwt;
