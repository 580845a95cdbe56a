//! Configuration: built-in defaults, then `tokenbot.toml`, then `TOKENBOT_*` env (`__` nests), then
//! the Node service's env names as-is. Bad config is refused with the key, the value and why.
//!
//! Plain data: this module imports nothing else of the crate. It checks the sections nobody else
//! owns when it loads them; the sections another module interprets (`[vault]`, the schedules of
//! `[brokers.<id>]`, `[mirror.postgres]`) are checked by that module, and `tokenbot::check_config`
//! runs every check.

mod env;
mod error;
mod load;
mod notify;
mod schema;
mod validate;

pub use error::ConfigError;
pub use schema::*;
pub use validate::parse_trusted_proxy;

#[cfg(test)]
mod tests;
