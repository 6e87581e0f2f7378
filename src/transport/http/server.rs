//! The server half of the internal protocol: the `/internal/{kind}` handler.
//!
//! It checks the cluster key, reads the body under the internal size limit,
//! decodes the [`proto::Request`], lets the [`Node`] answer it, encodes the
//! answer and counts messages and bytes. Refusals use the public API's error
//! shape (`{"error": ...}`), so operators read them the same way.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::{CLUSTER_KEY_HEADER, MSGPACK};
use crate::api::body::read_body;
use crate::api::ApiError;
use crate::node::Node;
use crate::proto;
use crate::telemetry::names;

pub const ERR_CLUSTER_KEY: &str = "Cluster key missing or wrong";
/// Followed by `: ` and the decoder's description of what is wrong.
pub const ERR_BAD_MESSAGE: &str = "Bad internal message";
pub const ERR_WRONG_ENDPOINT: &str = "Internal message does not match its endpoint";

/// Answers one internal request from a peer: `POST /internal/{kind}`.
pub async fn internal(
    State(node): State<Arc<Node>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    method: Method,
    body: Body,
) -> Response {
    match answer(&node, &kind, &headers, &method, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(
    node: &Arc<Node>,
    kind: &str,
    headers: &HeaderMap,
    method: &Method,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(expected) = &node.config().cluster_key {
        let given = headers.get(CLUSTER_KEY_HEADER).map(|v| v.as_bytes());
        if given != Some(expected.as_bytes()) {
            warn!(%kind, %method, "refused internal request without the cluster key");
            metrics::counter!(names::INTERNAL_REFUSED).increment(1);
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, ERR_CLUSTER_KEY));
        }
    }
    let bytes = read_body(body, node.config().max_internal_body_bytes()).await?;
    let request: proto::Request = proto::decode(&bytes)
        .map_err(|error| ApiError::bad_request(format!("{ERR_BAD_MESSAGE}: {error}")))?;
    if request.kind() != kind {
        return Err(ApiError::bad_request(ERR_WRONG_ENDPOINT));
    }
    let kind = request.kind();
    let response = node.handle(request);
    let encoded = proto::encode(&response)
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    metrics::counter!(names::INTERNAL_MESSAGES, "kind" => kind).increment(1);
    metrics::counter!(names::INTERNAL_BYTES, "kind" => kind, "direction" => "in")
        .increment(bytes.len() as u64);
    metrics::counter!(names::INTERNAL_BYTES, "kind" => kind, "direction" => "out")
        .increment(encoded.len() as u64);
    Ok(([(header::CONTENT_TYPE, MSGPACK)], encoded).into_response())
}
