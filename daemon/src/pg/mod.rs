//! What both PostgreSQL clients of the daemon share, the vault's engine and the mirror:
//! connection strings as tokio-postgres takes them (`url`), and TLS with rustls (`tls`, cargo
//! feature `postgres-tls`).

#[cfg(feature = "postgres-tls")]
pub(crate) mod tls;
pub(crate) mod url;
