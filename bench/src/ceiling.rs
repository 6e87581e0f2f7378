//! The ceiling: the least a server speaking hearsay's JSON API can do.
//!
//! One process, one in-memory map, no replication, no causality. Whatever it
//! reaches under a given load on this machine bounds what hearsay could reach
//! under the same load, so every hearsay figure is reported as a ratio to it.
//! It still parses request bodies and answers the same JSON shapes, so the
//! comparison counts the work any server of this API must do.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

type Store = Arc<RwLock<HashMap<String, Value>>>;

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    value: Option<Value>,
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The body as JSON (an empty body is an empty object); `None` if malformed.
fn parse(bytes: &Bytes) -> Option<Body> {
    if bytes.is_empty() {
        return Some(Body::default());
    }
    serde_json::from_slice(bytes).ok()
}

fn bad_body() -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "body is not a JSON object"}),
    )
}

async fn get_key(State(store): State<Store>, Path(key): Path<String>, body: Bytes) -> Response {
    if parse(&body).is_none() {
        return bad_body();
    }
    let found = store.read().expect("lock poisoned").get(&key).cloned();
    match found {
        Some(value) => reply(
            StatusCode::OK,
            json!({"result": "found", "value": value, "causal-metadata": null}),
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "Key does not exist"}),
        ),
    }
}

async fn put_key(State(store): State<Store>, Path(key): Path<String>, body: Bytes) -> Response {
    let value = match parse(&body) {
        Some(Body { value: Some(v) }) if !v.is_null() => v,
        Some(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "PUT request does not specify a value"}),
            )
        }
        None => return bad_body(),
    };
    let old = store.write().expect("lock poisoned").insert(key, value);
    let (status, result) = match old {
        Some(_) => (StatusCode::OK, "replaced"),
        None => (StatusCode::CREATED, "created"),
    };
    reply(status, json!({"result": result, "causal-metadata": null}))
}

async fn delete_key(State(store): State<Store>, Path(key): Path<String>) -> Response {
    match store.write().expect("lock poisoned").remove(&key) {
        Some(_) => reply(
            StatusCode::OK,
            json!({"result": "deleted", "causal-metadata": null}),
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "Key does not exist"}),
        ),
    }
}

/// The ceiling's routes. `/view` and `/health` exist only so the bench's
/// readiness probe treats it like a replica.
pub fn router() -> Router {
    let store: Store = Arc::default();
    Router::new()
        .route("/kvs/{key}", get(get_key).put(put_key).delete(delete_key))
        .route(
            "/health",
            get(|| async { reply(StatusCode::OK, json!({"status": "ok"})) }),
        )
        .with_state(store)
}

/// Serve the ceiling on `listener` until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}
