//! The HTTP API: through `api::app(state)` with `oneshot`, and the real binary on a socket.

mod assisted;
mod auth;
mod brokers;
mod e2e;
mod extras;
mod openapi;
mod routes;
mod support;
mod upstox;
mod user_routes;
