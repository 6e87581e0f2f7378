//! Fuzzing entry points: one per decoder that reads bytes from the network,
//! each driving what it decodes all the way into the code that acts on it.
//!
//! Used by the cargo-fuzz targets in `fuzz/` (coverage-guided, nightly) and
//! by the stable seeded run in `tests/fuzz_corpus.rs`. Not part of the API.
//!
//! | target | bytes are | driven into |
//! | --- | --- | --- |
//! | [`internal_request`] | a peer's request body | `proto::decode` → `Node::handle` on a ready node that holds keys and knows its peer, answer encoded and decoded again, follow-up pulls and heartbeats run |
//! | [`internal_response`] | a peer's answer | a node's join, state transfer, delta pull, heartbeat, push and view change, each given that answer |
//! | [`kv_body`] | selector byte + body | `GET`/`PUT`/`DELETE /kvs/<key>` through the whole HTTP app |
//! | [`view_body`] | selector byte + body | `PUT`/`DELETE /view` through the whole HTTP app |
//! | [`key_path`] | a request target | `PUT` then `GET` of that path through the whole HTTP app |
//!
//! Every entry panics on a broken oracle, not only on a crash: answers have
//! a status the contract lists and a JSON (or MessagePack) body, a refused
//! client request changes nothing, and the replica's invariants hold after.
//!
//! Each input runs on a fresh fixture (nodes are cheap to build and cannot be
//! cloned), so an input's outcome does not depend on earlier inputs; the
//! current-thread runtime is created once and reused. Settings in the fixture
//! keep every wait short (timers far apart, small causal wait, a network
//! without delay), and every input ends with all spawned work finished.

mod fixture;
mod seeds;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, Uri};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::proto::{self, Request, Response};
use crate::transport::{Transport, TransportError};
use fixture::{Pair, Single, ADDRESS_A, ADDRESS_B, ADDRESS_C};

pub use seeds::seed_corpus;

/// A fuzz target: its name (the directory of its corpus) and entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in a fixed order.
pub const TARGETS: &[Target] = &[
    ("internal_request", internal_request),
    ("internal_response", internal_response),
    ("kv_body", kv_body),
    ("view_body", view_body),
    ("key_path", key_path),
];

/// Longest any one input may keep the runtime busy before it counts as a
/// hang (real time: the fixture's own waits are milliseconds).
const INPUT_DEADLINE: Duration = Duration::from_secs(20);

/// Answers a scripted peer gives before it stops answering: enough for a
/// join, a transfer of a few chunks and every later exchange, and few enough
/// that a chunk asking for "more" for ever ends.
const SCRIPTED_ANSWERS: usize = 24;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Runs one input's work to completion, then waits until every task it
/// spawned has finished; either taking longer than [`INPUT_DEADLINE`] is a
/// hang. (Not from inside a runtime: it blocks on its own.)
fn run<F: Future<Output = ()>>(work: F) {
    let runtime = runtime();
    runtime.block_on(async {
        tokio::time::timeout(INPUT_DEADLINE, work)
            .await
            .expect("hang: the input's work did not finish");
        settle_to(0).await;
    });
}

/// Tasks alive on the runtime: the nodes' loops (asleep), and follow-up
/// work an input set off.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until at most `limit` tasks are alive: what was spawned since
/// [`alive`] said `limit` has finished (0: everything, once every node of
/// the input is halted).
async fn settle_to(limit: usize) {
    let deadline = tokio::time::Instant::now() + INPUT_DEADLINE;
    let mut rounds = 0;
    while alive() > limit {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang: {} spawned tasks still running",
            alive()
        );
        // Most tasks end as soon as they run (a halted node's loops, a call
        // that fails at once): let them, before waiting a timer tick.
        rounds += 1;
        if rounds < 64 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

// --------------------------------------------------------------------------
// Replica-to-replica messages
// --------------------------------------------------------------------------

/// A peer's request: decoded as `/internal/<kind>` decodes it, answered by a
/// ready node (`A`, holding keys, peer `B` known and ahead of it), the answer
/// encoded for the wire and decoded back.
pub fn internal_request(data: &[u8]) {
    let Ok(request) = proto::decode::<Request>(data) else {
        return;
    };
    run(async move {
        let pair = Pair::start().await;
        let quiet = alive();
        let response = pair.a.handle(request);
        let encoded = proto::encode(&response).expect("every answer encodes");
        let decoded: Response = proto::decode(&encoded).expect("every answer decodes");
        assert_eq!(decoded, response, "an answer survives the wire");
        // Let what the request set off (a pull from an address ahead of us,
        // heartbeats after an admission) run against the real peer.
        settle_to(quiet).await;
        pair.check_and_halt();
    });
}

/// A peer that answers every request with the same bytes, decoded as the
/// HTTP client decodes them, at most [`SCRIPTED_ANSWERS`] times.
struct Scripted {
    answer: Arc<[u8]>,
    calls: AtomicUsize,
}

impl Transport for Scripted {
    fn call(
        &self,
        _to: &str,
        _request: Request,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let answer = self.answer.clone();
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        async move {
            if call >= SCRIPTED_ANSWERS {
                return Err(TransportError::Unreachable("script ended".into()));
            }
            proto::decode(&answer).map_err(|error| TransportError::Codec(error.to_string()))
        }
        .boxed()
    }
}

/// A peer's answer, given to every exchange a node starts: its join and
/// state transfer, a delta pull, heartbeats, a push and an operator's view
/// change.
pub fn internal_response(data: &[u8]) {
    if proto::decode::<Response>(data).is_err() {
        return;
    }
    let transport = Arc::new(Scripted {
        answer: data.into(),
        calls: AtomicUsize::new(0),
    });
    run(async move {
        let node = fixture::node(ADDRESS_A, &[ADDRESS_A, ADDRESS_B], transport, 1);
        node.start().await;
        fixture::write_keys(&node, "a").await;
        let _ = node.pull_from(ADDRESS_B, false).await;
        let quiet = alive();
        node.heartbeat_tick();
        settle_to(quiet).await;
        let _ = node.push_to(ADDRESS_B).await;
        let _ = node.view_add(ADDRESS_C).await;
        let _ = node.pull_from(ADDRESS_B, true).await;
        fixture::check_invariants(&node);
        node.halt();
    });
}

// --------------------------------------------------------------------------
// The public API
// --------------------------------------------------------------------------

/// Statuses the contract lists for `/kvs/<key>` (`docs/API.md`).
const KVS_STATUSES: &[u16] = &[200, 201, 400, 404, 413, 503];
/// Statuses the contract lists for `PUT`/`DELETE /view`.
const VIEW_STATUSES: &[u16] = &[200, 201, 400, 404, 409, 413, 503];

/// Keys the `kv_body` selector byte chooses from: two the fixture holds, one
/// it deleted, one it never had.
const KEYS: [&str; 4] = ["a0", "a1", "a2", "fresh"];

/// `[selector, body...]`: the selector picks the method (`% 3`: GET, PUT,
/// DELETE) and the key (`/ 3 % 4`, see [`KEYS`]); the rest is the body.
pub fn kv_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = [Method::GET, Method::PUT, Method::DELETE][usize::from(selector % 3)].clone();
    let key = KEYS[usize::from(selector / 3 % 4)];
    let body = body.to_vec();
    run(async move {
        let single = Single::start().await;
        let before = single.state();
        let uri = format!("/kvs/{key}").parse().expect("a fixed path");
        let (status, json) = single.call(method, uri, body).await;
        assert!(KVS_STATUSES.contains(&status.as_u16()), "status {status}");
        if status.is_client_error() && status != StatusCode::NOT_FOUND || status.is_server_error() {
            assert!(json["error"].is_string(), "an error names itself: {json}");
            assert_eq!(single.state(), before, "a refused request changes nothing");
        } else {
            assert!(json["causal-metadata"].is_object(), "metadata: {json}");
        }
        single.check_and_halt();
    });
}

/// `[selector, body...]`: the selector picks `PUT` (even) or `DELETE` (odd)
/// `/view`; the rest is the body.
pub fn view_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = if selector % 2 == 0 {
        Method::PUT
    } else {
        Method::DELETE
    };
    let body = body.to_vec();
    run(async move {
        let single = Single::start().await;
        let view_before = single.node.view();
        let (status, json) = single.call(method, Uri::from_static("/view"), body).await;
        assert!(VIEW_STATUSES.contains(&status.as_u16()), "status {status}");
        if status.is_success() {
            assert!(json["result"].is_string(), "a result: {json}");
        } else {
            assert!(json["error"].is_string(), "an error names itself: {json}");
            assert_eq!(single.node.view(), view_before, "a refusal changes nothing");
        }
        single.check_and_halt();
    });
}

/// A request target as a client sends it (a path under `/kvs/` unless it
/// starts with `/`): `PUT` a value there, then `GET` it. A key the contract
/// accepts (1 to 50 scalar values after percent-decoding, from the path
/// without its query) is stored and read back; any other is a 400 and
/// changes nothing.
pub fn key_path(data: &[u8]) {
    let target = if data.first() == Some(&b'/') {
        data.to_vec()
    } else {
        [&b"/kvs/"[..], data].concat()
    };
    // What the HTTP server itself refuses never reaches the router.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Some(raw_key) = uri.path().strip_prefix("/kvs/") else {
        return;
    };
    let expected = percent_encoding::percent_decode_str(raw_key)
        .decode_utf8()
        .ok()
        .filter(|key| (1..=crate::api::MAX_KEY_CHARS).contains(&key.chars().count()))
        .map(|key| key.into_owned());
    run(async move {
        let single = Single::start().await;
        let before = single.state();
        let put = br#"{"value": "from the fuzzer"}"#.to_vec();
        let (status, json) = single.call(Method::PUT, uri.clone(), put).await;
        match &expected {
            Some(key) => {
                assert!(
                    status == StatusCode::CREATED || status == StatusCode::OK,
                    "key {key:?} is valid, PUT answered {status}: {json}"
                );
                let (status, json) = single.call(Method::GET, uri, Vec::new()).await;
                assert_eq!(status, StatusCode::OK, "GET of {key:?}: {json}");
                assert_eq!(json["value"], "from the fuzzer");
                let stored = single.node.inspect(|r| r.store().get(key).is_some());
                assert!(stored, "{key:?} is stored under its decoded name");
            }
            None => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
                assert_eq!(single.state(), before, "a refused key changes nothing");
            }
        }
        single.check_and_halt();
    });
}

/// Reads a whole answer of the HTTP app.
async fn read_answer(response: axum::response::Response) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("an answer body is readable");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("answer {status} is not JSON ({error}): {bytes:?}"));
    (status, json)
}

fn request(method: Method, uri: Uri, body: Vec<u8>) -> axum::http::Request<Body> {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request from parts that parsed")
}
