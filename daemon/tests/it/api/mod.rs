//! The HTTP API: through `api::app(state)` with `oneshot`, and the real binary on a socket.

mod assisted;
mod auth;
mod brokers;
mod clock;
mod console;
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
