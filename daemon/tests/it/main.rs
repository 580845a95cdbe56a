//! Every integration test of the daemon, in one test binary (as ripgrep and cargo do): each test
//! binary links the whole daemon, so one binary links it once instead of once per area. A module
//! per area; `support` and `log_capture` are shared by all of them.

mod api;
mod binary;
mod cluster;
mod drop_in;
mod log_capture;
mod mirror;
mod plugin_host;
mod refresh;
mod strategies;
mod support;
mod totp_callback;
mod vault;
