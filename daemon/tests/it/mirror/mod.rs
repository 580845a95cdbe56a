//! The Postgres mirror against a real PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`).

mod delivery;
mod extras;
mod failures;
mod restart;
mod support;
mod template;
mod tls;
