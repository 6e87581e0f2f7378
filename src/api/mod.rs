//! The HTTP edge: parses and validates requests, calls the [`Node`], and maps
//! outcomes and errors to the contract's status codes and strings.
//!
//! Nothing here decides anything about replication; every rule lives in the
//! core. Bodies are read as JSON whatever the `Content-Type` says (the
//! original assignment's clients send form encoding from `curl -d`), with a
//! size limit checked while reading. Checks run in the contract's order:
//! malformed request (400/413), then causality (503), then existence (404).
//!
//! Every request first passes the [`edge`] (admission, time bound, metrics).

pub mod edge;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tracing::warn;

use crate::core::{JsonText, ReadOutcome, VClock, ViewChange, WriteOutcome};
use crate::node::{Node, Unavailable};
use crate::proto;
use crate::telemetry::{self, names};
use crate::transport::http::CLUSTER_KEY_HEADER;

/// The longest key, in Unicode scalar values (fixed by the contract).
pub const MAX_KEY_CHARS: usize = 50;

pub const ERR_KEY_TOO_LONG: &str = "Key is too long";
pub const ERR_NO_VALUE: &str = "PUT request does not specify a value";
pub const ERR_CAUSAL: &str = "Causal dependencies not satisfied; try again later";
pub const ERR_NO_KEY: &str = "Key does not exist";
pub const ERR_NO_REPLICA: &str = "View has no such replica";
/// `PUT /view` of a replica that holds another cluster's data.
pub const ERR_OTHER_CLUSTER: &str = "That replica belongs to another cluster and holds its data; clusters are not merged (start it empty to add it)";
/// A write at a replica an operator removed from the view.
pub const ERR_REMOVED: &str =
    "This replica was removed from the view: send writes to a replica in the view, or add it back with PUT /view";
pub const ERR_KEY_MISSING: &str = "Key is missing: use /kvs/<key>";
pub const ERR_BODY_NOT_OBJECT: &str = "Request body must be a JSON object";
/// Followed by `: ` and the parser's description of what is wrong.
pub const ERR_BODY_NOT_JSON: &str = "Request body is not valid JSON";

/// An error answer: a status and a JSON `{"error": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<Unavailable> for ApiError {
    fn from(why: Unavailable) -> Self {
        match why {
            Unavailable::CausalTimeout => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ERR_CAUSAL)
            }
            Unavailable::Draining => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Replica is shutting down")
            }
            Unavailable::Removed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ERR_REMOVED),
            Unavailable::CountersExhausted => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Replica cannot take more writes: its write counters are exhausted",
            ),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
}

/// The whole HTTP surface of one replica: the routes behind the [`edge`].
pub fn app(node: Arc<Node>) -> edge::Edge<Router> {
    let config = node.config();
    let edge = edge::EdgeLayer::new(
        config.max_connections,
        Duration::from_millis(config.request_timeout_ms),
    );
    tower::Layer::layer(&edge, router(node))
}

/// The routes, without the edge (admission, time bound, metrics).
pub fn router(node: Arc<Node>) -> Router {
    let state = AppState { node };
    Router::new()
        .route("/view", get(get_view).put(put_view).delete(delete_view))
        .route("/kvs", axum::routing::any(missing_key))
        .route("/kvs/", axum::routing::any(missing_key))
        .route("/kvs/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/members", get(get_members))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/internal/{kind}", post(internal))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "No such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this endpoint",
    )
}

async fn missing_key() -> ApiError {
    ApiError::bad_request(ERR_KEY_MISSING)
}

// --------------------------------------------------------------------------
// Body parsing
// --------------------------------------------------------------------------

/// Reads the body, refusing more than `limit` bytes (413). Any other failure
/// to read it — a connection closed before `Content-Length` bytes arrived,
/// broken chunked encoding — is the client's malformed request (400).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_over_limit(&error) {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("Request body could not be read: {}", root(&error)))
        }
    })
}

/// Whether reading a body failed because it exceeded the size limit.
fn is_over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The innermost cause of an error: the one that names the actual problem.
fn root<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error
}

#[derive(Deserialize)]
struct KvBody<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "causal-metadata")]
    causal_metadata: Option<&'a RawValue>,
}

/// The fields of a key-value request body. An empty body means `{}`.
fn parse_kv_body(bytes: &[u8]) -> Result<(Option<&RawValue>, VClock), ApiError> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok((None, VClock::new()));
    };
    // Only an object has fields: serde's derive would also read an array as
    // the fields in order (`[42]` as a value of 42).
    if *first != b'{' {
        return Err(describe_non_object(bytes));
    }
    let body: KvBody =
        serde_json::from_slice(bytes).map_err(|error| describe_bad_body(bytes, error))?;
    let metadata = parse_metadata(body.causal_metadata)?;
    Ok((body.value, metadata))
}

fn describe_bad_body(bytes: &[u8], error: serde_json::Error) -> ApiError {
    match serde_json::from_slice::<Value>(bytes) {
        Err(_) => ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")),
        Ok(Value::Object(_)) => {
            ApiError::bad_request(format!("Request body is not valid: {error}"))
        }
        Ok(_) => ApiError::bad_request(ERR_BODY_NOT_OBJECT),
    }
}

/// A body that does not start with `{`: not JSON at all, or JSON that is
/// not an object.
fn describe_non_object(bytes: &[u8]) -> ApiError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Ok(_) => ApiError::bad_request(ERR_BODY_NOT_OBJECT),
        Err(error) => ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")),
    }
}

/// Client metadata: `null`/absent, or the object this store hands out
/// (`{"<address>@<incarnation>": <count>, ...}`), parsed straight into a
/// clock (this runs on every request).
fn parse_metadata(raw: Option<&RawValue>) -> Result<VClock, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Field causal-metadata is not valid: send null or the causal-metadata from your last response",
        )
    };
    let Some(raw) = raw else {
        return Ok(VClock::new());
    };
    serde_json::from_str::<ClientClock>(raw.get())
        .map(|ClientClock(clock)| clock)
        .map_err(|_| invalid())
}

/// Client metadata read straight into a clock: `null` or an object of
/// well-formed origins to counts, refused as soon as it has more than
/// [`crate::core::clock::MAX_CLOCK_ENTRIES`] (the cap on every clock read) entries.
struct ClientClock(VClock);

impl<'de> Deserialize<'de> for ClientClock {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClockVisitor;
        impl<'de> serde::de::Visitor<'de> for ClockVisitor {
            type Value = ClientClock;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null or an object of origins to counts")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ClientClock, E> {
                Ok(ClientClock(VClock::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ClientClock, A::Error> {
                VClock::read_entries(map).map(ClientClock)
            }
        }
        deserializer.deserialize_any(ClockVisitor)
    }
}

/// The key from the raw path: percent-decoded, 1..=50 scalar values.
fn key_from_uri(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/kvs/").unwrap_or_default();
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("Key is not valid UTF-8 after percent-decoding"))?;
    if key.is_empty() {
        return Err(ApiError::bad_request(ERR_KEY_MISSING));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::bad_request(ERR_KEY_TOO_LONG));
    }
    Ok(key.into_owned())
}

/// `{"result":"found","value":V,"causal-metadata":M}` with the stored JSON
/// text spliced in as is: it was validated when it was written, so it is not
/// parsed again on every read.
fn found_body(value: &str, metadata: &VClock) -> String {
    let metadata = to_json(metadata);
    let mut body = String::with_capacity(value.len() + metadata.len() + 48);
    body.push_str(r#"{"result":"found","value":"#);
    body.push_str(value);
    body.push_str(r#","causal-metadata":"#);
    body.push_str(&metadata);
    body.push('}');
    body
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

#[derive(Serialize)]
struct Written<'a> {
    result: &'static str,
    #[serde(rename = "causal-metadata")]
    causal_metadata: &'a VClock,
}

/// `404 {"error":"Key does not exist","causal-metadata":M}`: the contract's
/// error with the metadata the client has now seen (it may include a delete),
/// so that it never sees the deleted value afterwards at another replica.
#[derive(Serialize)]
struct Missing<'a> {
    error: &'static str,
    #[serde(rename = "causal-metadata")]
    causal_metadata: &'a VClock,
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

// --------------------------------------------------------------------------
// Key-value handlers
// --------------------------------------------------------------------------

#[utoipa::path(get, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body(content = schema::KvRead, description = "Optional"),
    responses(
        (status = 200, body = schema::Found),
        (status = 400, body = schema::Error, description = "Key is too long, or a malformed body"),
        (status = 404, body = schema::Missing, description = "Key does not exist"),
        (status = 413, body = schema::Error),
        (status = 503, body = schema::Error, description = "Causal dependencies not satisfied; try again later"),
    ))]
async fn get_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
    let KvRequest { key, metadata, .. } = kv_request(&state, &uri, body).await?;
    match state.node.read(&key, &metadata).await? {
        ReadOutcome::Found { value, metadata } => {
            Ok(json_response(StatusCode::OK, found_body(&value, &metadata)))
        }
        ReadOutcome::NotFound { metadata } => Ok(missing_response(&metadata)),
    }
}

#[utoipa::path(put, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body = schema::KvWrite,
    responses(
        (status = 201, body = schema::Written, description = "created"),
        (status = 200, body = schema::Written, description = "replaced"),
        (status = 400, body = schema::Error, description = "Key is too long; PUT request does not specify a value; malformed body"),
        (status = 413, body = schema::Error),
        (status = 503, body = schema::Error, description = "Causal dependencies not satisfied; try again later"),
    ))]
async fn put_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
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
    write_response(state.node.write(&key, Some(value), &metadata).await?)
}

#[utoipa::path(delete, path = "/kvs/{key}", tag = "kvs",
    params(("key" = String, Path, description = "1 to 50 characters, percent-encoded")),
    request_body = schema::KvRead,
    responses(
        (status = 200, body = schema::Written, description = "deleted"),
        (status = 400, body = schema::Error),
        (status = 404, body = schema::Missing, description = "Key does not exist"),
        (status = 413, body = schema::Error),
        (status = 503, body = schema::Error, description = "Causal dependencies not satisfied; try again later"),
    ))]
async fn delete_key(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult {
    let KvRequest { key, metadata, .. } = kv_request(&state, &uri, body).await?;
    write_response(state.node.write(&key, None, &metadata).await?)
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

// --------------------------------------------------------------------------
// View handlers
// --------------------------------------------------------------------------

#[utoipa::path(get, path = "/view", tag = "view", responses((status = 200, body = schema::View)))]
async fn get_view(State(state): State<AppState>) -> Response {
    Json(json!({ "view": state.node.view() })).into_response()
}

/// The `socket-address` of a view request body.
async fn view_target(state: &AppState, body: Body) -> Result<String, ApiError> {
    let bytes = read_body(body, state.node.config().max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("{ERR_BODY_NOT_JSON}: {error}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(ERR_BODY_NOT_OBJECT));
    };
    let address = map
        .get("socket-address")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request("Request body must contain \"socket-address\": \"IP:PORT\"")
        })?;
    if address.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::bad_request(
            "Field socket-address must be IP:PORT",
        ));
    }
    Ok(address.to_string())
}

/// A view change refused because the decision counter is at its maximum.
fn view_counter_exhausted() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Replica cannot record more view changes: its decision counter is exhausted",
    )
}

#[utoipa::path(put, path = "/view", tag = "view", request_body = schema::ViewChangeRequest,
    responses(
        (status = 201, body = schema::ViewResult, description = "added"),
        (status = 200, body = schema::ViewResult, description = "already present"),
        (status = 400, body = schema::Error),
    ))]
async fn put_view(State(state): State<AppState>, body: Body) -> ApiResult {
    let address = view_target(&state, body).await?;
    Ok(match state.node.view_add(&address).await {
        ViewChange::Added => {
            (StatusCode::CREATED, Json(json!({"result": "added"}))).into_response()
        }
        ViewChange::CounterExhausted => return Err(view_counter_exhausted()),
        ViewChange::OtherCluster => {
            return Err(ApiError::new(StatusCode::CONFLICT, ERR_OTHER_CLUSTER))
        }
        _ => (StatusCode::OK, Json(json!({"result": "already present"}))).into_response(),
    })
}

#[utoipa::path(delete, path = "/view", tag = "view", request_body = schema::ViewChangeRequest,
    responses(
        (status = 200, body = schema::ViewResult, description = "deleted"),
        (status = 404, body = schema::Error, description = "View has no such replica"),
        (status = 400, body = schema::Error),
    ))]
async fn delete_view(State(state): State<AppState>, body: Body) -> ApiResult {
    let address = view_target(&state, body).await?;
    match state.node.view_remove(&address) {
        ViewChange::Deleted => {
            Ok((StatusCode::OK, Json(json!({"result": "deleted"}))).into_response())
        }
        ViewChange::CounterExhausted => Err(view_counter_exhausted()),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, ERR_NO_REPLICA)),
    }
}

#[utoipa::path(get, path = "/members", tag = "operator", responses((status = 200, body = schema::Members)))]
async fn get_members(State(state): State<AppState>) -> Response {
    Json(json!({ "members": state.node.members() })).into_response()
}

// --------------------------------------------------------------------------
// Operator endpoints
// --------------------------------------------------------------------------

#[utoipa::path(get, path = "/health", tag = "operator", responses((status = 200, body = schema::Health)))]
async fn health(State(state): State<AppState>) -> Response {
    Json(json!({
        "status": "ok",
        "address": state.node.address(),
        "incarnation": state.node.incarnation(),
        "draining": state.node.is_draining(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/ready", tag = "operator", responses(
    (status = 200, body = schema::Ready), (status = 503, body = schema::Ready)))]
async fn ready(State(state): State<AppState>) -> Response {
    let node = &state.node;
    let (status, reason) = if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down")
    } else if !node.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "state transfer from peers in progress",
        )
    } else if node.is_removed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "removed from the view by an operator: serving reads, refusing writes",
        )
    } else {
        (StatusCode::OK, "state transfer done; serving")
    };
    (
        status,
        Json(json!({ "ready": status == StatusCode::OK, "reason": reason })),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operator",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format")))]
async fn metrics_text(State(state): State<AppState>) -> Response {
    let node = &state.node;
    let (keys, tombstones, clock_entries) = node.inspect(|r| {
        (
            r.store().live_len(),
            r.store().tombstone_len(),
            r.clock().len(),
        )
    });
    metrics::gauge!(names::KEYS).set(keys as f64);
    metrics::gauge!(names::TOMBSTONES).set(tombstones as f64);
    metrics::gauge!(names::CLOCK_ENTRIES).set(clock_entries as f64);
    metrics::gauge!(names::VIEW_SIZE).set(node.view().len() as f64);
    metrics::gauge!(names::READY).set(if node.is_ready() { 1.0 } else { 0.0 });
    let mut by_state = std::collections::BTreeMap::new();
    for member in node.members() {
        *by_state.entry(member.state).or_insert(0u32) += 1;
    }
    for state in ["alive", "suspect", "dead", "left"] {
        let count = by_state.get(state).copied().unwrap_or(0);
        metrics::gauge!(names::MEMBERS, "state" => state).set(count as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
        .into_response()
}

// --------------------------------------------------------------------------
// Internal endpoint
// --------------------------------------------------------------------------

async fn internal(
    State(state): State<AppState>,
    axum::extract::Path(kind): axum::extract::Path<String>,
    headers: HeaderMap,
    method: Method,
    body: Body,
) -> Response {
    let node = &state.node;
    if let Some(expected) = &node.config().cluster_key {
        let given = headers.get(CLUSTER_KEY_HEADER).map(|v| v.as_bytes());
        if given != Some(expected.as_bytes()) {
            warn!(%kind, %method, "refused internal request without the cluster key");
            metrics::counter!(names::INTERNAL_REFUSED).increment(1);
            return ApiError::new(StatusCode::UNAUTHORIZED, "Cluster key missing or wrong")
                .into_response();
        }
    }
    let bytes = match read_body(body, node.config().max_internal_body_bytes()).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let request: proto::Request = match proto::decode(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::bad_request(format!("Bad internal message: {error}")).into_response()
        }
    };
    if request.kind() != kind {
        return ApiError::bad_request("Internal message does not match its endpoint")
            .into_response();
    }
    let kind = request.kind();
    let response = node.handle(request);
    let encoded = match proto::encode(&response) {
        Ok(encoded) => encoded,
        Err(error) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
                .into_response();
        }
    };
    metrics::counter!(names::INTERNAL_MESSAGES, "kind" => kind).increment(1);
    metrics::counter!(names::INTERNAL_BYTES, "kind" => kind, "direction" => "in")
        .increment(bytes.len() as u64);
    metrics::counter!(names::INTERNAL_BYTES, "kind" => kind, "direction" => "out")
        .increment(encoded.len() as u64);
    ([(header::CONTENT_TYPE, "application/msgpack")], encoded).into_response()
}

// --------------------------------------------------------------------------
// API description
// --------------------------------------------------------------------------

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hearsay",
        description = "A replicated, causally consistent key-value store (CSE138 Assignment 3 wire API plus operator extensions)."
    ),
    paths(
        get_view,
        put_view,
        delete_view,
        get_key,
        put_key,
        delete_key,
        get_members,
        health,
        ready,
        metrics_text
    )
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response()
}

/// Wire shapes for the API description. The handlers parse bodies by hand
/// (to control error messages and check order); these types say what goes
/// over the wire.
mod schema {
    #![allow(dead_code)]
    use utoipa::ToSchema;

    #[derive(ToSchema)]
    pub struct KvWrite {
        /// Any JSON value except null.
        #[schema(value_type = Object)]
        pub value: serde_json::Value,
        /// `null`, or the object from your last answer, e.g.
        /// `{"10.10.0.2:8090@1764000000123": 3}`.
        #[schema(rename = "causal-metadata", value_type = Option<Object>)]
        pub causal_metadata: Option<serde_json::Value>,
    }

    #[derive(ToSchema)]
    pub struct KvRead {
        /// `null`, or the object from your last answer, e.g.
        /// `{"10.10.0.2:8090@1764000000123": 3}`.
        #[schema(rename = "causal-metadata", value_type = Option<Object>)]
        pub causal_metadata: Option<serde_json::Value>,
    }

    #[derive(ToSchema)]
    pub struct Found {
        #[schema(example = "found")]
        pub result: String,
        #[schema(value_type = Object)]
        pub value: serde_json::Value,
        #[schema(rename = "causal-metadata", value_type = Object)]
        pub causal_metadata: serde_json::Value,
    }

    #[derive(ToSchema)]
    pub struct Written {
        /// `created`, `replaced` or `deleted`.
        pub result: String,
        #[schema(rename = "causal-metadata", value_type = Object)]
        pub causal_metadata: serde_json::Value,
    }

    #[derive(ToSchema)]
    pub struct Error {
        pub error: String,
    }

    /// A missing (or deleted) key: the contract's error, plus the metadata
    /// to pass on — yours joined with the delete this replica saw, if any.
    #[derive(ToSchema)]
    pub struct Missing {
        #[schema(example = "Key does not exist")]
        pub error: String,
        #[schema(rename = "causal-metadata", value_type = Object)]
        pub causal_metadata: serde_json::Value,
    }

    #[derive(ToSchema)]
    pub struct View {
        pub view: Vec<String>,
    }

    #[derive(ToSchema)]
    pub struct ViewChangeRequest {
        #[schema(rename = "socket-address", example = "10.10.0.4:8090")]
        pub socket_address: String,
    }

    #[derive(ToSchema)]
    pub struct ViewResult {
        /// `added`, `already present` or `deleted`.
        pub result: String,
    }

    #[derive(ToSchema)]
    pub struct Member {
        pub address: String,
        /// alive, suspect, dead or left
        pub state: String,
        pub admitted: bool,
        pub in_view: bool,
        pub incarnation: Option<u64>,
        pub last_heard_ms_ago: Option<u64>,
        pub is_self: bool,
    }

    #[derive(ToSchema)]
    pub struct Members {
        pub members: Vec<Member>,
    }

    #[derive(ToSchema)]
    pub struct Health {
        pub status: String,
        pub address: String,
        pub incarnation: u64,
        pub draining: bool,
    }

    #[derive(ToSchema)]
    pub struct Ready {
        pub ready: bool,
        pub reason: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Origin;

    #[test]
    fn body_parsing_follows_the_contract() {
        let (value, meta) = parse_kv_body(b"").unwrap();
        assert!(value.is_none() && meta.is_empty());
        let (value, _) = parse_kv_body(br#"{"value": null}"#).unwrap();
        assert!(value.is_none(), "null value counts as absent");
        let (value, _) =
            parse_kv_body(br#"{"value": {"a": [1, 2]}, "causal-metadata": null}"#).unwrap();
        assert_eq!(value.unwrap().get(), r#"{"a": [1, 2]}"#);
        let (_, meta) = parse_kv_body(br#"{"causal-metadata": {"127.0.0.1:1@5": 3}}"#).unwrap();
        assert_eq!(meta.get(&Origin::new("127.0.0.1:1", 5)), 3);
        for bad in [
            &br#"{"value": 1"#[..],
            b"[1,2]",
            b"[42]",
            b"[]",
            b"value=3",
            br#"{"causal-metadata": "abc"}"#,
            br#"{"causal-metadata": {"nope": 1}}"#,
            br#"{"causal-metadata": {"a:1@1": -1}}"#,
            br#"{"causal-metadata": [1]}"#,
        ] {
            let error = parse_kv_body(bad).unwrap_err();
            assert_eq!(
                error.status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn found_body_is_valid_json_with_the_value_spliced_in() {
        let metadata = VClock::from_pairs([(Origin::new("127.0.0.1:1", 2), 3)]);
        let body: Value =
            serde_json::from_str(&found_body(r#"{"a": [1, "x"]}"#, &metadata)).unwrap();
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

    #[test]
    fn keys_are_percent_decoded_and_bounded() {
        let uri: Uri = "/kvs/a%20b".parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap(), "a b");
        let fifty: String = "é".repeat(50);
        let encoded =
            percent_encoding::utf8_percent_encode(&fifty, percent_encoding::NON_ALPHANUMERIC);
        let uri: Uri = format!("/kvs/{encoded}").parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap(), fifty);
        let uri: Uri = format!("/kvs/{}", "x".repeat(51)).parse().unwrap();
        assert_eq!(key_from_uri(&uri).unwrap_err().message, ERR_KEY_TOO_LONG);
        let uri: Uri = "/kvs/%ff".parse().unwrap();
        assert_eq!(
            key_from_uri(&uri).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
