//! Health for load balancers, after Vault's `/v1/sys/health`: one path, [`ACTIVE_PATH`], whose
//! status code says what this node is, so a balancer can send writes to the active node alone:
//!
//! - `200` the active node (or a node alone) whose audit log can be written;
//! - `429` a healthy warm standby (it serves reads; calls go to the active node);
//! - `503` a node that cannot reach its store (or whose log cannot be written, or a standby that
//!   stopped following).
//!
//! The body is a small JSON object saying the same for people. It reads state, never changes it,
//! and needs no credential (it says nothing a balancer's probe may not know).

use crate::gateway::Gateway;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

/// The load balancers' health path.
pub const ACTIVE_PATH: &str = "/health/active";

/// The route of [`ACTIVE_PATH`].
pub fn router(gateway: Gateway) -> axum::Router {
    axum::Router::new()
        .route(ACTIVE_PATH, get(active))
        .with_state(gateway)
}

async fn active(State(gateway): State<Gateway>) -> impl IntoResponse {
    let (code, body) = match gateway.standby() {
        None => match gateway.audit().health().unwritable {
            None => (StatusCode::OK, json!({"role": "active"})),
            Some(unwritable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"role": "active", "problem": unwritable.reason}),
            ),
        },
        Some(standing) => {
            let body = json!({
                "role": "standby",
                "active": standing.view.active,
                "active_grpc": standing.view.active_grpc,
                "active_http": standing.view.active_http,
                "applied_seq": standing.applied_seq,
                "lag_records": standing.lag_records,
                "problem": standing.problem,
            });
            match standing.problem {
                None => (StatusCode::TOO_MANY_REQUESTS, body),
                Some(_) => (StatusCode::SERVICE_UNAVAILABLE, body),
            }
        }
    };
    (code, Json(body))
}
