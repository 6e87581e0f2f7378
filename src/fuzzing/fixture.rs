//! The replicas a fuzz input is run against, built the same way for every
//! input (fixed addresses, incarnations and seeds) so that an input that
//! fails once fails again, and so that seeds recorded from real traffic
//! ([`super::seeds`]) name lives the fixture knows.

use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use tower::ServiceExt;

use crate::config::Config;
use crate::core::{JsonText, VClock};
use crate::node::Node;
use crate::transport::memory::{Faults, SimNetwork};
use crate::transport::{Transport, TransportError};

/// The replica under test.
pub(super) const ADDRESS_A: &str = "127.0.1.1:7000";
/// Its peer (a real replica in [`Pair`], a scripted one in
/// `internal_response`, absent in [`Single`]).
pub(super) const ADDRESS_B: &str = "127.0.1.2:7000";
/// An address nothing answers at (an operator's view change).
pub(super) const ADDRESS_C: &str = "127.0.1.3:7000";

/// Timers a fuzz input never waits for: the background loops stay asleep, so
/// only what the input sets off runs (and in the same order every time).
const QUIET_MS: u64 = 3_600_000;

/// A node's settings in a fixture: production defaults, except that the
/// timers are [`QUIET_MS`] apart and a causal wait ends after 5 ms (a client
/// whose metadata is ahead still gets its 503, without stalling the run).
pub(super) fn config(address: &str, view: &[&str]) -> Config {
    let view: Vec<String> = view.iter().map(|a| a.to_string()).collect();
    Config {
        heartbeat_interval_ms: QUIET_MS,
        gossip_interval_ms: QUIET_MS,
        gc_interval_ms: QUIET_MS,
        probe_interval_ms: QUIET_MS,
        causal_wait_ms: 5,
        ..Config::for_address(address, &view)
    }
}

pub(super) fn node(
    address: &str,
    view: &[&str],
    transport: Arc<dyn Transport>,
    incarnation: u64,
) -> Arc<Node> {
    Node::new(config(address, view), transport, incarnation, incarnation)
}

/// A network that delivers every message at once, none lost.
fn network() -> Arc<SimNetwork> {
    let net = SimNetwork::new(7);
    net.set_faults(Faults {
        drop: 0.0,
        duplicate: 0.0,
        min_delay_ms: 0,
        max_delay_ms: 0,
    });
    net
}

fn register(net: &SimNetwork, node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    net.register(
        node.address(),
        Arc::new(move |request| match weak.upgrade() {
            Some(node) => node.handle(request),
            None => crate::proto::Response::Ack,
        }),
    );
}

/// Writes `<prefix>0`, `<prefix>1` and `<prefix>2`, then deletes
/// `<prefix>2` (a tombstone), ignoring refusals (a fuzzed answer may have
/// removed the node).
pub(super) async fn write_keys(node: &Arc<Node>, prefix: &str) {
    let none = VClock::new();
    for (i, value) in ["1", r#"{"a":[true,null]}"#, r#""text""#]
        .iter()
        .enumerate()
    {
        let value = Some(JsonText::from(*value));
        let _ = node.write(&format!("{prefix}{i}"), value, &none).await;
    }
    let _ = node.write(&format!("{prefix}2"), None, &none).await;
}

pub(super) fn check_invariants(node: &Node) {
    if let Err(broken) = node.inspect(|replica| replica.check_invariants()) {
        panic!("{}: invariant broken: {broken}", node.address());
    }
}

/// Two real replicas that know each other: `a` (incarnation 1) holds `a0`,
/// `a1` and a tombstone `a2`; `b` (incarnation 2) holds all of that and
/// `b0`..`b2` on top, which `a` lacks.
pub(super) struct Pair {
    pub(super) net: Arc<SimNetwork>,
    pub(super) a: Arc<Node>,
    pub(super) b: Arc<Node>,
}

impl Pair {
    pub(super) async fn start() -> Pair {
        Self::start_wrapped(|transport| transport).await
    }

    /// The pair, each node's transport passed through `wrap` (to record
    /// the traffic).
    pub(super) async fn start_wrapped(
        wrap: impl Fn(Arc<dyn Transport>) -> Arc<dyn Transport>,
    ) -> Pair {
        let net = network();
        let view = [ADDRESS_A, ADDRESS_B];
        let a = node(ADDRESS_A, &view, wrap(net.endpoint(ADDRESS_A)), 1);
        let b = node(ADDRESS_B, &view, wrap(net.endpoint(ADDRESS_B)), 2);
        register(&net, &a);
        a.start().await;
        write_keys(&a, "a").await;
        register(&net, &b);
        b.start().await;
        write_keys(&b, "b").await;
        Pair { net, a, b }
    }

    pub(super) fn check_and_halt(&self) {
        check_invariants(&self.a);
        check_invariants(&self.b);
        self.a.halt();
        self.b.halt();
    }
}

/// A network where no peer ever answers, at once (the in-memory network
/// would round even a zero delay up to a timer tick).
struct Nowhere;

impl Transport for Nowhere {
    fn call(
        &self,
        to: &str,
        _request: crate::proto::Request,
        _timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'static, Result<crate::proto::Response, TransportError>> {
        let refused = TransportError::Unreachable(format!("{to}: connection refused"));
        Box::pin(std::future::ready(Err(refused)))
    }
}

/// One ready replica (`A`, incarnation 1) with `a0`, `a1` and a tombstone
/// `a2`, behind the whole HTTP app; its peer `B` never answers.
pub(super) struct Single {
    pub(super) node: Arc<Node>,
}

/// What a refused client request must leave alone.
#[derive(Debug, PartialEq)]
pub(super) struct State {
    clock: VClock,
    lamport: u64,
    live: usize,
    tombstones: usize,
    view: Vec<String>,
}

impl Single {
    pub(super) async fn start() -> Single {
        let node = node(ADDRESS_A, &[ADDRESS_A, ADDRESS_B], Arc::new(Nowhere), 1);
        node.start().await;
        write_keys(&node, "a").await;
        Single { node }
    }

    pub(super) fn state(&self) -> State {
        let view = self.node.view();
        self.node.inspect(|replica| State {
            clock: replica.clock().clone(),
            lamport: replica.lamport(),
            live: replica.store().live_len(),
            tombstones: replica.store().tombstone_len(),
            view,
        })
    }

    /// One request through the whole HTTP app: its status and JSON body.
    pub(super) async fn call(
        &self,
        method: Method,
        uri: Uri,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        // The fixture's configuration has no key: the plane signs nothing.
        let plane = crate::transport::http::Plane::from_config(self.node.config())
            .expect("a configuration without a key makes a plane");
        let app = crate::api::app(self.node.clone(), std::sync::Arc::new(plane));
        let response = app
            .oneshot(super::request(method, uri, body))
            .await
            .unwrap_or_else(|never| match never {});
        super::read_answer(response).await
    }

    pub(super) fn check_and_halt(&self) {
        check_invariants(&self.node);
        self.node.halt();
    }
}
