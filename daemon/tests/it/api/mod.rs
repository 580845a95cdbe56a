//! The HTTP API: through `api::app(state)` with `oneshot`, the real binary on a socket, and the
//! console in a headless browser.

mod assisted;
mod auth;
mod brokers;
mod clock;
mod console;
mod console_browser;
mod console_forms;
mod e2e;
mod events;
mod extras;
mod openapi;
mod routes;
// Shared with the strategies tests that go through the API end to end.
pub(crate) mod support;
mod upstox;
mod user_routes;
