//! Operator endpoints: `/members`, `/health`, `/ready`, `/metrics`,
//! `/keyring`, and the answers they serialise.
//!
//! The answer structs list their fields in alphabetical order: that is the
//! order the earlier `json!` answers had, so the bytes on the wire did not
//! change when these types replaced them.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::core::membership::NEVER_HEARD;
use crate::node::MemberInfo;
use crate::telemetry::{self, names};
use crate::transport::http::plane::PeerKeys;

/// One member as an operator sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Member {
    address: String,
    /// Admitted to the cluster (not removed by an operator).
    admitted: bool,
    in_view: bool,
    /// `null` until this member has been heard from.
    incarnation: Option<u64>,
    is_self: bool,
    last_heard_ms_ago: Option<u64>,
    /// `alive`, `suspect`, `dead`, `left`, or `never-heard` (no life of it has answered yet).
    state: &'static str,
}

impl From<MemberInfo> for Member {
    fn from(info: MemberInfo) -> Self {
        let MemberInfo {
            address,
            state,
            admitted,
            in_view,
            incarnation,
            last_heard_ms_ago,
            is_self,
        } = info;
        Member {
            address,
            admitted,
            in_view,
            incarnation,
            is_self,
            last_heard_ms_ago,
            state,
        }
    }
}

/// `{"members": [...]}`: every member this replica knows, itself first.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Members {
    members: Vec<Member>,
}

/// The liveness probe's answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health<'a> {
    pub(super) address: &'a str,
    /// Shutting down: leaving the cluster, refusing writes.
    pub(super) draining: bool,
    pub(super) incarnation: u64,
    #[schema(example = "ok")]
    pub(super) status: &'static str,
}

/// The readiness probe's answer (also the body of its 503).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    pub(super) ready: bool,
    pub(super) reason: &'static str,
}

/// One key this replica holds, by id (never the key).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct KeyId {
    id: String,
    /// The key that signs (the first); every key verifies.
    primary: bool,
}

/// `GET /keyring`: this replica's key ids and, per member, the ids that
/// member announced in its last verified message, so that an operator can
/// see whether a rotation step has reached every member.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct KeyringAnswer {
    /// `required`, `transitional`, or `off` (no key).
    internal_auth: &'static str,
    keys: Vec<KeyId>,
    /// Every other member this replica knows.
    members: Vec<PeerKeys>,
    /// The highest internal protocol version this replica speaks.
    protocol_version: u32,
}

#[utoipa::path(get, path = "/keyring", tag = "operator", responses((status = 200, body = KeyringAnswer)))]
pub(super) async fn keyring(State(state): State<AppState>) -> Response {
    let plane = &state.plane;
    let keys = plane
        .keyring()
        .map(|ring| {
            ring.ids()
                .into_iter()
                .enumerate()
                .map(|(i, id)| KeyId {
                    id,
                    primary: i == 0,
                })
                .collect()
        })
        .unwrap_or_default();
    let others = state
        .node
        .members()
        .into_iter()
        .filter(|m| !m.is_self)
        .map(|m| m.address);
    Json(KeyringAnswer {
        internal_auth: plane.mode_name(),
        keys,
        members: plane.peer_keys(others),
        protocol_version: plane.protocol(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/members", tag = "operator", responses((status = 200, body = Members)))]
pub(super) async fn get_members(State(state): State<AppState>) -> Response {
    let members = state.node.members().into_iter().map(Member::from).collect();
    Json(Members { members }).into_response()
}

#[utoipa::path(get, path = "/health", tag = "operator", responses((status = 200, body = Health)))]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    let node = &state.node;
    Json(Health {
        address: node.address(),
        draining: node.is_draining(),
        incarnation: node.incarnation(),
        status: "ok",
    })
    .into_response()
}

#[utoipa::path(get, path = "/ready", tag = "operator", responses(
    (status = 200, body = Ready), (status = 503, body = Ready)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
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
    let ready = Ready {
        ready: status == StatusCode::OK,
        reason,
    };
    (status, Json(ready)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operator",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format")))]
pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
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
    for state in ["alive", "suspect", "dead", "left", NEVER_HEARD] {
        let count = by_state.get(state).copied().unwrap_or(0);
        metrics::gauge!(names::MEMBERS, "state" => state).set(count as f64);
    }
    super::edge::fold_request_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The answer types replaced `json!` objects; the bytes must not change.
    #[test]
    fn members_serialise_exactly_as_the_node_reports_them() {
        let infos = vec![
            MemberInfo {
                address: "127.0.0.1:1".into(),
                state: "alive",
                admitted: true,
                in_view: true,
                incarnation: Some(7),
                last_heard_ms_ago: Some(0),
                is_self: true,
            },
            MemberInfo {
                address: "127.0.0.1:2".into(),
                state: "suspect",
                admitted: false,
                in_view: false,
                incarnation: None,
                last_heard_ms_ago: None,
                is_self: false,
            },
        ];
        let before = serde_json::to_string(&json!({ "members": infos })).unwrap();
        let members = infos.into_iter().map(Member::from).collect();
        let after = serde_json::to_string(&Members { members }).unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn probes_serialise_as_they_did_before() {
        let health = Health {
            address: "127.0.0.1:1",
            draining: false,
            incarnation: 9,
            status: "ok",
        };
        let before =
            json!({"status": "ok", "address": "127.0.0.1:1", "incarnation": 9, "draining": false});
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
        let ready = Ready {
            ready: false,
            reason: "draining: shutting down",
        };
        let before = json!({"ready": false, "reason": "draining: shutting down"});
        assert_eq!(
            serde_json::to_string(&ready).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }
}
