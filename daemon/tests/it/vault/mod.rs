//! The vault: its suite against every engine, crash consistency, and the CLI through the binary.

mod cli;
mod crash;
mod suite;
