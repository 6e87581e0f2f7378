//! The HTTP edge: parses and validates requests, calls the [`Node`], and maps
//! outcomes and errors to the contract's status codes and strings.
//!
//! Nothing here decides anything about replication; every rule lives in the
//! core. Checks run in the contract's order: malformed request (400/413),
//! then causality (503), then existence (404). This module owns the router,
//! the error answer and every fixed error string (the contract,
//! `docs/API.md`); the rest is split by role:
//!
//! * [`edge`] — what every request passes first (admission, time bound,
//!   metrics);
//! * [`body`] — reading bodies under a limit and parsing keys, values and
//!   causal metadata;
//! * `kvs`, `view`, `operator` — the handlers and the answer types they
//!   serialise;
//! * `openapi` — the OpenAPI document, derived from those answer types.
//!
//! `/internal/{kind}` (replica to replica) is mounted here but answered by
//! the server half of the transport, [`crate::transport::http::server`].

pub mod body;
pub mod edge;
mod kvs;
mod openapi;
mod operator;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::node::{Node, Unavailable};
use crate::transport::http::server::internal;
use crate::transport::http::Plane;

pub use openapi::ApiDoc;

/// The longest key, in Unicode scalar values (fixed by the contract).
pub const MAX_KEY_CHARS: usize = 50;

pub const ERR_KEY_TOO_LONG: &str = "Key is too long";
pub const ERR_KEY_MISSING: &str = "Key is missing: use /kvs/<key>";
pub const ERR_KEY_NOT_UTF8: &str = "Key is not valid UTF-8 after percent-decoding";
pub const ERR_NO_VALUE: &str = "PUT request does not specify a value";
pub const ERR_NO_KEY: &str = "Key does not exist";
pub const ERR_CAUSAL: &str = "Causal dependencies not satisfied; try again later";
/// A write applied here but not held by `ack_replicas` replicas in time
/// (answered 503 with the write's `causal-metadata`).
pub const ERR_NOT_ACKNOWLEDGED: &str = "Write not acknowledged by enough replicas; it is applied at this replica and will still spread by gossip";
/// Missing dependencies that no live replica holds any more (answered 503
/// with `lost-dependencies`).
pub const ERR_LOST_DEPENDENCIES: &str = "Causal dependencies lost: the replica lives that made them ended before passing them on; send null causal-metadata to continue";
pub const ERR_DRAINING: &str = "Replica is shutting down";
pub const ERR_COUNTERS_EXHAUSTED: &str =
    "Replica cannot take more writes: its write counters are exhausted";
/// A write with `data_dir` set whose durability could not be confirmed.
pub const ERR_STORAGE: &str =
    "Replica could not make the write durable (data directory failing); it may or may not survive a restart";
pub const ERR_VIEW_COUNTER_EXHAUSTED: &str =
    "Replica cannot record more view changes: its decision counter is exhausted";
/// A write at a replica an operator removed from the view.
pub const ERR_REMOVED: &str =
    "This replica was removed from the view: send writes to a replica in the view, or add it back with PUT /view";
pub const ERR_NO_REPLICA: &str = "View has no such replica";
/// `PUT /view` of a replica that holds another cluster's data.
pub const ERR_OTHER_CLUSTER: &str = "That replica belongs to another cluster and holds its data; clusters are not merged (start it empty to add it)";
pub const ERR_NO_SOCKET_ADDRESS: &str = "Request body must contain \"socket-address\": \"IP:PORT\"";
pub const ERR_BAD_SOCKET_ADDRESS: &str = "Field socket-address must be IP:PORT";
/// `IP:PORT` that no replica can be reached at.
pub const ERR_UNUSABLE_SOCKET_ADDRESS: &str = "Field socket-address must be a usable IP:PORT: not 0.0.0.0 or ::, not multicast or broadcast, port not 0";
/// `PUT /view` when the member table holds `MAX_MEMBERS` entries.
pub const ERR_MEMBER_TABLE_FULL: &str =
    "Replica cannot track more members: its member table is full";
/// `PUT`/`DELETE /view` without the configured `admin_token`.
pub const ERR_OPERATOR_TOKEN: &str = "Missing or wrong operator token";
pub const ERR_BAD_METADATA: &str =
    "Field causal-metadata is not valid: send null or the causal-metadata from your last response";
pub const ERR_BODY_NOT_OBJECT: &str = "Request body must be a JSON object";
/// Followed by `: ` and the parser's description of what is wrong.
pub const ERR_BODY_NOT_JSON: &str = "Request body is not valid JSON";
/// An object with a field of the wrong type; followed by `: ` and the
/// parser's description.
pub const ERR_BODY_INVALID: &str = "Request body is not valid";
/// Followed by `: ` and the innermost cause (a connection closed early,
/// broken chunked encoding).
pub const ERR_BODY_UNREADABLE: &str = "Request body could not be read";
pub const ERR_NO_ROUTE: &str = "No such endpoint";
pub const ERR_METHOD_NOT_ALLOWED: &str = "Method not allowed on this endpoint";
/// A public request not answered within `request_timeout_ms`.
pub const ERR_TIMED_OUT: &str = "Request timed out";

/// An error answer: a status and a JSON `{"error": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// A whole JSON body with more than `error` in it, sent instead.
    body: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            body: None,
        }
    }

    /// An error answer whose JSON `body` carries fields beside `error`.
    pub(crate) fn with_body(status: StatusCode, body: String) -> Self {
        ApiError {
            status,
            message: String::new(),
            body: Some(body),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(body) = self.body {
            return (
                self.status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        let body = ErrorBody {
            error: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Unavailable> for ApiError {
    fn from(why: Unavailable) -> Self {
        let message = match why {
            Unavailable::CausalTimeout => ERR_CAUSAL,
            Unavailable::Draining => ERR_DRAINING,
            Unavailable::Removed => ERR_REMOVED,
            Unavailable::CountersExhausted => ERR_COUNTERS_EXHAUSTED,
            Unavailable::StorageFailed => ERR_STORAGE,
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

type ApiResult = Result<Response, ApiError>;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    /// The internal plane's keys and peer records (`/internal`, `/keyring`).
    pub plane: Arc<Plane>,
}

impl FromRef<AppState> for Arc<Plane> {
    fn from_ref(state: &AppState) -> Self {
        state.plane.clone()
    }
}

/// Lets handlers that need only the node (the internal one) take it alone.
impl FromRef<AppState> for Arc<Node> {
    fn from_ref(state: &AppState) -> Self {
        state.node.clone()
    }
}

/// The whole HTTP surface of one replica: the routes behind the [`edge`].
pub fn app(node: Arc<Node>, plane: Arc<Plane>) -> edge::Edge<Router> {
    let config = node.config();
    let edge = edge::EdgeLayer::new(
        config.max_connections,
        config.max_open_connections,
        Duration::from_millis(config.request_timeout_ms),
    );
    tower::Layer::layer(&edge, router(node, plane))
}

/// The routes, without the edge (admission, time bound, metrics).
pub fn router(node: Arc<Node>, plane: Arc<Plane>) -> Router {
    let state = AppState { node, plane };
    Router::new()
        .route(
            "/view",
            get(view::get_view)
                .put(view::put_view)
                .delete(view::delete_view),
        )
        .route("/kvs", any(missing_key))
        .route("/kvs/", any(missing_key))
        .route(
            "/kvs/{*key}",
            get(kvs::get_key).put(kvs::put_key).delete(kvs::delete_key),
        )
        .route("/members", get(operator::get_members))
        .route("/health", get(operator::health))
        .route("/ready", get(operator::ready))
        .route("/metrics", get(operator::metrics_text))
        .route("/keyring", get(operator::keyring))
        .route("/openapi.json", get(openapi::openapi))
        .route("/internal/{kind}", post(internal))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ERR_NO_ROUTE)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ERR_METHOD_NOT_ALLOWED)
}

async fn missing_key() -> ApiError {
    ApiError::bad_request(ERR_KEY_MISSING)
}
