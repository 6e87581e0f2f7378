//! `/view`: reading and changing the view, and the answers serialised.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::body::{parse_view_target, read_body, ViewChangeRequest};
use super::{
    ApiError, ApiResult, AppState, ErrorBody, ERR_MEMBER_TABLE_FULL, ERR_NO_REPLICA,
    ERR_OPERATOR_TOKEN, ERR_OTHER_CLUSTER, ERR_VIEW_COUNTER_EXHAUSTED,
};
use crate::core::ViewChange;

/// `{"view": [...]}`: the replicas in this replica's view.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = View)]
pub(super) struct ViewList {
    /// `IP:PORT` of each replica in the view.
    pub(super) view: Vec<String>,
}

/// `{"result": R}`: what a view change did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ViewResult {
    /// `added`, `already present` or `deleted`.
    pub(super) result: &'static str,
}

fn view_result(status: StatusCode, result: &'static str) -> Response {
    (status, Json(ViewResult { result })).into_response()
}

#[utoipa::path(get, path = "/view", tag = "view", responses((status = 200, body = ViewList)))]
pub(super) async fn get_view(State(state): State<AppState>) -> Response {
    Json(ViewList {
        view: state.node.view(),
    })
    .into_response()
}

/// When `admin_token` is set, a view change must carry
/// `Authorization: Bearer <token>`. Compared in constant time, so the time
/// an answer takes says nothing about how much of a guess was right.
fn check_operator(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    let Some(token) = state.node.config().admin_token.as_deref() else {
        return Ok(());
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(offered.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, ERR_OPERATOR_TOKEN))
    }
}

/// The `socket-address` of a view request body.
async fn view_target(state: &AppState, body: Body) -> Result<String, ApiError> {
    let bytes = read_body(body, state.node.config().max_body_bytes).await?;
    parse_view_target(&bytes)
}

/// A view change refused because the decision counter is at its maximum.
fn view_counter_exhausted() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ERR_VIEW_COUNTER_EXHAUSTED)
}

#[utoipa::path(put, path = "/view", tag = "view", request_body = ViewChangeRequest,
    responses(
        (status = 201, body = ViewResult, description = "added"),
        (status = 200, body = ViewResult, description = "already present"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "Missing or wrong operator token (when admin_token is set)"),
        (status = 409, body = ErrorBody, description = "That replica belongs to another cluster and holds its data"),
        (status = 503, body = ErrorBody, description = "Decision counter exhausted, or member table full"),
    ))]
pub(super) async fn put_view(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    check_operator(&state, &headers)?;
    let address = view_target(&state, body).await?;
    match state.node.view_add(&address).await {
        ViewChange::Added => Ok(view_result(StatusCode::CREATED, "added")),
        ViewChange::CounterExhausted => Err(view_counter_exhausted()),
        ViewChange::TableFull => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ERR_MEMBER_TABLE_FULL,
        )),
        ViewChange::OtherCluster => Err(ApiError::new(StatusCode::CONFLICT, ERR_OTHER_CLUSTER)),
        _ => Ok(view_result(StatusCode::OK, "already present")),
    }
}

#[utoipa::path(delete, path = "/view", tag = "view", request_body = ViewChangeRequest,
    responses(
        (status = 200, body = ViewResult, description = "deleted"),
        (status = 404, body = ErrorBody, description = "View has no such replica"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "Missing or wrong operator token (when admin_token is set)"),
        (status = 503, body = ErrorBody, description = "Replica cannot record more view changes: its decision counter is exhausted"),
    ))]
pub(super) async fn delete_view(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    check_operator(&state, &headers)?;
    let address = view_target(&state, body).await?;
    match state.node.view_remove(&address) {
        ViewChange::Deleted => Ok(view_result(StatusCode::OK, "deleted")),
        ViewChange::CounterExhausted => Err(view_counter_exhausted()),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, ERR_NO_REPLICA)),
    }
}
