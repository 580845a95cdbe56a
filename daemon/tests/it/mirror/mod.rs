//! The Postgres mirror against a real PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`).

mod delivery;
mod extras;
mod failures;
mod restart;
// Its database URL is shared with the vault suite's PostgreSQL engine.
pub(crate) mod support;
mod template;
mod tls;
