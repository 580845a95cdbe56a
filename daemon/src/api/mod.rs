//! The HTTP API. `app(state)` builds the router, so tests can drive it without a socket.

pub mod serve;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

/// The router of the whole API.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

async fn health(State(_state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "ok"}))
}
