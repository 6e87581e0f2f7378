//! `/kvs/{key}`: the key-value handlers and the answers they serialise.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::body::{key_from_uri, parse_kv_body, read_body};
use super::{
    ApiError, ApiResult, AppState, ErrorBody, ERR_LOST_DEPENDENCIES, ERR_NOT_ACKNOWLEDGED,
    ERR_NO_KEY, ERR_NO_VALUE,
};
use crate::core::{JsonText, ReadOutcome, VClock, WriteOutcome};
use crate::node::Unavailable;

/// A value found: `result` is `found`.
// (Doc comments on these types are the OpenAPI document's descriptions.)
// Written by hand (`to_body`) with the stored JSON text spliced in as is: it
// was validated when it was written, so it is not parsed again on every read.
#[derive(utoipa::ToSchema)]
pub(super) struct Found<'a> {
    #[schema(example = "found")]
    result: &'static str,
    /// The stored value, exactly as it was written.
    #[schema(value_type = serde_json::Value)]
    value: &'a str,
    #[schema(rename = "causal-metadata")]
    causal_metadata: &'a VClock,
}

impl Found<'_> {
    fn to_body(&self) -> String {
        let metadata = to_json(self.causal_metadata);
        let mut body = String::with_capacity(self.value.len() + metadata.len() + 48);
        body.push_str(r#"{"result":""#);
        body.push_str(self.result);
        body.push_str(r#"","value":"#);
        body.push_str(self.value);
        body.push_str(r#","causal-metadata":"#);
        body.push_str(&metadata);
        body.push('}');
        body
    }
}

/// A write was applied: pass `causal-metadata` on with your next request.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Written<'a> {
    /// `created`, `replaced` or `deleted`.
    pub(super) result: &'static str,
    #[serde(rename = "causal-metadata")]
    pub(super) causal_metadata: &'a VClock,
}

/// A missing (or deleted) key: the contract's error, plus the metadata to
/// pass on — yours joined with the delete this replica saw, if any.
// The metadata keeps a client that saw the delete from reading the deleted
// value afterwards at another replica.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Missing<'a> {
    #[schema(example = "Key does not exist")]
    pub(super) error: &'static str,
    #[serde(rename = "causal-metadata")]
    pub(super) causal_metadata: &'a VClock,
}

/// A write applied at this replica that fewer than `ack_replicas` replicas
/// acknowledged in time: it still spreads by gossip.
#[derive(Serialize)]
pub(super) struct NotAcknowledged<'a> {
    pub(super) error: &'static str,
    /// Replicas known to hold the write, this one included.
    pub(super) holding: usize,
    /// Replicas `ack_replicas` asks for in the current view.
    pub(super) needed: usize,
    /// What the client has seen, this write included.
    #[serde(rename = "causal-metadata")]
    pub(super) causal_metadata: &'a VClock,
}

/// Missing dependencies that no live replica holds any more: waiting will
/// not help; send `null` causal-metadata to go on.
#[derive(Serialize)]
pub(super) struct LostDependencies {
    pub(super) error: &'static str,
    /// The ended replica lives (`address@incarnation`) whose writes are lost.
    #[serde(rename = "lost-dependencies")]
    pub(super) lost_dependencies: Vec<String>,
}

/// The answer to a request that could not be served: a causal timeout whose
/// missing writes are all lost is told apart from one worth retrying.
fn unavailable(state: &AppState, metadata: &VClock, why: Unavailable) -> ApiError {
    if why == Unavailable::CausalTimeout {
        let lost = state.node.lost_dependencies(metadata);
        if !lost.is_empty() {
            let body = LostDependencies {
                error: ERR_LOST_DEPENDENCIES,
                lost_dependencies: lost.iter().map(|o| o.as_str().to_string()).collect(),
            };
            return ApiError::with_body(StatusCode::SERVICE_UNAVAILABLE, to_json(&body));
        }
    }
    why.into()
}

fn missing_response(metadata: &VClock) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        to_json(&Missing {
            error: ERR_NO_KEY,
            causal_metadata: metadata,
        }),
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("response types always serialise")
}

/// A key-value request after every 400/413 check common to all methods.
struct KvRequest {
    key: String,
    /// The `value` field's JSON text; `None` when absent or `null`.
    value: Option<JsonText>,
    metadata: VClock,
}

async fn kv_request(state: &AppState, uri: &Uri, body: Body) -> Result<KvRequest, ApiError> {
    let key = key_from_uri(uri);
    // The body is read (and so drained) even when the key is already known
    // to be bad, so the connection stays usable.
    let bytes = read_body(body, state.node.config().max_body_bytes).await?;
    let key = key?;
    let (value, metadata) = parse_kv_body(&bytes)?;
    let value = value
        .filter(|v| v.get() != "null")
        .map(|v| JsonText::from(v.get()));
    Ok(KvRequest {
        key,
        value,
        metadata,
    })
}

#[utoipa::path(get, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body(content = Option<super::body::KvBody>, description = "Optional; only causal-metadata is read"),
    responses(
        (status = 200, body = Found),
        (status = 400, body = ErrorBody, description = "Key is too long, or a malformed body"),
        (status = 404, body = Missing, description = "Key does not exist"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Causal dependencies not satisfied; try again later. Or lost with the replica lives that made them: then the body also has lost-dependencies, and the client should send null causal-metadata"),
    ))]
pub(super) async fn get_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
    let KvRequest { key, metadata, .. } = kv_request(&state, &uri, body).await?;
    let outcome = state.node.read(&key, &metadata).await;
    match outcome.map_err(|why| unavailable(&state, &metadata, why))? {
        ReadOutcome::Found { value, metadata } => {
            let found = Found {
                result: "found",
                value: &value,
                causal_metadata: &metadata,
            };
            Ok(json_response(StatusCode::OK, found.to_body()))
        }
        ReadOutcome::NotFound { metadata } => Ok(missing_response(&metadata)),
    }
}

#[utoipa::path(put, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body = super::body::KvBody,
    responses(
        (status = 201, body = Written, description = "created"),
        (status = 200, body = Written, description = "replaced"),
        (status = 400, body = ErrorBody, description = "Key is too long; PUT request does not specify a value; malformed body"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Causal dependencies not satisfied or lost (as for GET); or, with ack_replicas above 1, applied here but not acknowledged by enough replicas in time (the body also has holding, needed and causal-metadata)"),
    ))]
pub(super) async fn put_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
    let KvRequest {
        key,
        value,
        metadata,
    } = kv_request(&state, &uri, body).await?;
    let value = value.ok_or_else(|| ApiError::bad_request(ERR_NO_VALUE))?;
    let limit = state.node.config().max_value_bytes;
    if value.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Value is larger than the limit of {limit} bytes"),
        ));
    }
    write(&state, &key, Some(value), &metadata).await
}

#[utoipa::path(delete, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body(content = Option<super::body::KvBody>, description = "Optional; only causal-metadata is read"),
    responses(
        (status = 200, body = Written, description = "deleted"),
        (status = 400, body = ErrorBody),
        (status = 404, body = Missing, description = "Key does not exist"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "As for PUT"),
    ))]
pub(super) async fn delete_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
    let KvRequest { key, metadata, .. } = kv_request(&state, &uri, body).await?;
    write(&state, &key, None, &metadata).await
}

/// Applies a write, then waits for `ack_replicas` replicas to hold it.
async fn write(
    state: &AppState,
    key: &str,
    value: Option<JsonText>,
    metadata: &VClock,
) -> ApiResult {
    let outcome = state.node.write(key, value, metadata).await;
    let outcome = outcome.map_err(|why| unavailable(state, metadata, why))?;
    if let Err(short) = state.node.acknowledge(&outcome).await {
        let metadata = match &outcome {
            WriteOutcome::Created { metadata }
            | WriteOutcome::Replaced { metadata }
            | WriteOutcome::Deleted { metadata }
            | WriteOutcome::NotFound { metadata } => metadata,
        };
        let body = NotAcknowledged {
            error: ERR_NOT_ACKNOWLEDGED,
            holding: short.holding,
            needed: short.needed,
            causal_metadata: metadata,
        };
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            to_json(&body),
        ));
    }
    write_response(outcome)
}

fn write_response(outcome: WriteOutcome) -> ApiResult {
    let (status, result, metadata) = match &outcome {
        WriteOutcome::Created { metadata } => (StatusCode::CREATED, "created", metadata),
        WriteOutcome::Replaced { metadata } => (StatusCode::OK, "replaced", metadata),
        WriteOutcome::Deleted { metadata } => (StatusCode::OK, "deleted", metadata),
        WriteOutcome::NotFound { metadata } => return Ok(missing_response(metadata)),
    };
    Ok(json_response(
        status,
        to_json(&Written {
            result,
            causal_metadata: metadata,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::core::Origin;

    #[test]
    fn found_body_is_valid_json_with_the_value_spliced_in() {
        let metadata = VClock::from_pairs([(Origin::new("127.0.0.1:1", 2), 3)]);
        let found = Found {
            result: "found",
            value: r#"{"a": [1, "x"]}"#,
            causal_metadata: &metadata,
        };
        let body: Value = serde_json::from_str(&found.to_body()).unwrap();
        assert_eq!(
            body,
            json!({"result": "found", "value": {"a": [1, "x"]}, "causal-metadata": {"127.0.0.1:1@2": 3}})
        );
    }

    #[tokio::test]
    async fn a_404_keeps_the_contracts_error_and_adds_the_metadata() {
        let metadata = VClock::from_pairs([(Origin::new("127.0.0.1:1", 2), 3)]);
        let response = missing_response(&metadata);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": ERR_NO_KEY, "causal-metadata": {"127.0.0.1:1@2": 3}})
        );
    }
}
