//! The server half of the internal protocol: the `/internal/{kind}` handler.
//!
//! It checks the protocol version, verifies the signature (with a key set),
//! reads the body under the internal size limit, decodes the
//! [`proto::Request`], lets the [`Node`] answer it, encodes the answer, signs
//! it, and counts messages and bytes. `/internal/probe` is answered here,
//! with a signed empty body, without reaching the node. Refusals use the
//! public API's error shape (`{"error": ...}`), so operators read them the
//! same way.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::plane::{self, Plane};
use super::signing::{self, AnswerParts, Failure, RequestParts, Signature};
use super::{MSGPACK, PROBE_KIND, PROTOCOLS_HEADER, PROTOCOL_HEADER};
use crate::api::body::read_body;
use crate::api::ApiError;
use crate::node::Node;
use crate::proto;
use crate::telemetry::{monotonic_ms, names, LogThrottle};

/// Followed by `: ` and the decoder's description of what is wrong.
pub const ERR_BAD_MESSAGE: &str = "Bad internal message";
pub const ERR_WRONG_ENDPOINT: &str = "Internal message does not match its endpoint";
/// Followed by `: this replica speaks ` and the versions it speaks.
pub const ERR_PROTOCOL: &str = "Internal protocol version not spoken";
pub const ERR_PROBE_BODY: &str = "A probe has an empty body";

/// Largest error answer read back to be signed (error texts are short).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Answers one internal request from a peer: `POST /internal/{kind}`.
pub async fn internal(
    State(node): State<Arc<Node>>,
    State(plane): State<Arc<Plane>>,
    Path(kind): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    method: Method,
    body: Body,
) -> Response {
    let speaks = plane.speaks();
    let mut response = match answer(&node, &plane, &kind, &uri, &headers, &method, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // Every answer names its version (refusals before the version was
    // accepted: the highest this replica speaks) and the versions spoken.
    let out = response.headers_mut();
    if !out.contains_key(PROTOCOL_HEADER) {
        let asked = plane::version_of(&headers).unwrap_or(0);
        let named = if speaks.contains(&asked) {
            asked
        } else {
            *speaks.last().expect("a replica speaks some version")
        };
        out.insert(PROTOCOL_HEADER, named.into());
    }
    let versions = speaks
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if let Ok(value) = HeaderValue::from_str(&versions) {
        out.insert(PROTOCOLS_HEADER, value);
    }
    response
}

/// Refusals logged: at most one line a second (anyone can send them).
static REFUSALS_LOGGED: LogThrottle = LogThrottle::new(1000);

/// A refusal of a message whose signature did not pass.
fn refuse(plane: &Plane, kind: &str, key_id: Option<&str>, failure: Failure) -> ApiError {
    if let Some(left_out) = REFUSALS_LOGGED.admit(monotonic_ms()) {
        warn!(%kind, reason = failure.label(), key_id, left_out,
            "refused internal request (left_out: refusals since the last such line, not logged)");
    }
    plane.count_failure("request", key_id, failure);
    metrics::counter!(names::INTERNAL_REFUSED).increment(1);
    ApiError::new(StatusCode::UNAUTHORIZED, failure.message())
}

async fn answer(
    node: &Arc<Node>,
    plane: &Plane,
    kind: &str,
    uri: &Uri,
    headers: &HeaderMap,
    method: &Method,
    body: Body,
) -> Result<Response, ApiError> {
    // A replica without a key ignores signature headers.
    let keyring = plane.keyring();
    let signature = match &keyring {
        None => None,
        Some(_) => match Signature::from_headers(headers, true) {
            Ok(Some(signature)) => Some(signature),
            Ok(None) if !plane.required() => {
                metrics::counter!(names::INTERNAL_UNSIGNED, "direction" => "request").increment(1);
                None
            }
            Ok(None) => return Err(refuse(plane, kind, None, Failure::Unsigned)),
            Err(failure) => {
                let key_id = headers
                    .get(signing::KEY_ID_HEADER)
                    .and_then(|v| v.to_str().ok());
                return Err(refuse(plane, kind, key_id, failure));
            }
        },
    };
    // After the signature's presence (an unsigned request to a replica that
    // requires signatures is refused as unsigned, whatever its version).
    let speaks = plane.speaks();
    let version = plane::version_of(headers).unwrap_or(0);
    if !speaks.contains(&version) {
        metrics::counter!(names::INTERNAL_REFUSED).increment(1);
        return Err(ApiError::bad_request(format!(
            "{ERR_PROTOCOL}: this replica speaks {}",
            plane::list(&speaks)
        )));
    }
    let bytes = read_body(body, node.config().max_internal_body_bytes()).await?;
    if let (Some(keyring), Some(signature)) = (&keyring, &signature) {
        let checked = plane.check(keyring, signature, true, |key| {
            let parts = RequestParts {
                method: method.as_str(),
                path: uri.path(),
                protocol: version,
                timestamp: signature.timestamp,
                nonce: signature.nonce.unwrap_or(0),
                keys: &signature.keys,
                body: &bytes,
            };
            signing::verify_request(key, &parts, &signature.mac)
        });
        if let Err(failure) = checked {
            return Err(refuse(plane, kind, Some(&signature.key_id), failure));
        }
    }
    // From here the request is authentic: every answer to it, refusals
    // included, is signed, so its sender can tell it from a forgery.
    let (status, content_type, encoded) = match handle(node, kind, &bytes) {
        Ok(encoded) => (StatusCode::OK, MSGPACK, encoded),
        Err(error) => {
            let response = error.into_response();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), MAX_ERROR_BYTES)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (status, "application/json", body)
        }
    };
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(PROTOCOL_HEADER, version.into());
    if let (Some(keyring), Some(signature)) = (&keyring, &signature) {
        // Signed with the key that verified the request: its sender holds it.
        if let Some(key) = keyring.get(&signature.key_id) {
            let keys = keyring.ids().join(",");
            let parts = AnswerParts {
                nonce: signature.nonce.unwrap_or(0),
                status: status.as_u16(),
                protocol: version,
                timestamp: crate::node::wall_ms(),
                keys: &keys,
                body: &encoded,
            };
            let mac = signing::sign_answer(key, &parts);
            signing::put_headers(&mut out, key.id(), parts.timestamp, None, &keys, &mac);
        }
    }
    let response = (status, out, encoded).into_response();
    Ok(response)
}

/// The encoded answer to an authentic request (a probe's is empty).
fn handle(node: &Arc<Node>, kind: &str, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    if kind == PROBE_KIND {
        if !bytes.is_empty() {
            return Err(ApiError::bad_request(ERR_PROBE_BODY));
        }
        metrics::counter!(names::INTERNAL_MESSAGES, "kind" => PROBE_KIND).increment(1);
        return Ok(Vec::new());
    }
    let request: proto::Request = proto::decode(bytes)
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
    Ok(encoded)
}
