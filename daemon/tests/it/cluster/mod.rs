//! High availability on the PostgreSQL vault: several `tokenbot serve` processes (the real binary)
//! on one vault, against the fake Kite and a real PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`).
//! One node leads (scheduler, catch-up, mirror) and another takes over within
//! `[vault] failover_secs` of its death; every node serves the API, runs the refreshes asked of it
//! with one login per account cluster-wide, sees the others' writes within a second, and keeps
//! serving the tokens it read while cut off from PostgreSQL.

mod cache;
mod leader;
mod mirror;
mod single_flight;
mod support;
