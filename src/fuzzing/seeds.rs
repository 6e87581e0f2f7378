//! Seed inputs for every target, made from real traffic: the fixture's
//! replicas exchange heartbeats, pulls, pushes, refusals and a leave, and
//! every message is recorded as it crosses the wire; client bodies carry
//! causal metadata a real answer handed out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Uri};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::fixture::{self, Pair, Single, ADDRESS_A, ADDRESS_B};
use crate::core::{Life, PushRequest, VClock};
use crate::proto::{self, Request, Response};
use crate::transport::{Transport, TransportError};

/// `(target, name, bytes)` of every seed.
pub type Seed = (&'static str, String, Vec<u8>);

/// One message as it crossed the wire.
struct Crossing {
    to: String,
    request: Vec<u8>,
    kind: &'static str,
    response: Option<Vec<u8>>,
}

/// Passes calls on, recording each request and answer, encoded.
struct Recording {
    inner: Arc<dyn Transport>,
    log: Arc<Mutex<Vec<Crossing>>>,
}

impl Transport for Recording {
    fn call(
        &self,
        to: &str,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let crossing = Crossing {
            to: to.to_string(),
            kind: request.kind(),
            request: proto::encode(&request).expect("a real request encodes"),
            response: None,
        };
        let log = self.log.clone();
        let call = self.inner.call(to, request, timeout);
        async move {
            let answer = call.await;
            let mut crossing = crossing;
            if let Ok(response) = &answer {
                crossing.response = Some(proto::encode(response).expect("a real answer encodes"));
            }
            log.lock().unwrap_or_else(|p| p.into_inner()).push(crossing);
            answer
        }
        .boxed()
    }
}

fn response_kind(bytes: &[u8]) -> &'static str {
    match proto::decode::<Response>(bytes) {
        Ok(Response::Hello(_)) => "hello",
        Ok(Response::Chunk(_)) => "chunk",
        Ok(Response::Ack) => "ack",
        Ok(Response::Refused(_)) => "refused",
        Ok(Response::Invalid { .. }) => "invalid",
        Err(_) => "undecodable",
    }
}

/// Every target's seeds: recorded replica traffic, and client requests in
/// the shapes the contract describes.
pub fn seed_corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    super::run(async {
        let (requests, responses) = recorded_traffic().await;
        seeds.extend(requests);
        seeds.extend(responses);
        seeds.extend(client_seeds().await);
    });
    seeds
}

/// Requests that reached `A` and answers `A` got, from a scenario run on
/// the same fixture the targets use.
async fn recorded_traffic() -> (Vec<Seed>, Vec<Seed>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let wrap = |inner| -> Arc<dyn Transport> {
        Arc::new(Recording {
            inner,
            log: log.clone(),
        })
    };
    let pair = Pair::start_wrapped(wrap).await;
    let quiet = super::alive();
    pair.a.heartbeat_tick();
    pair.b.heartbeat_tick();
    super::settle_to(quiet).await;
    let _ = pair.a.pull_from(ADDRESS_B, false).await;
    fixture::write_keys(&pair.b, "c").await;
    fixture::write_keys(&pair.a, "d").await;
    let _ = pair.a.push_to(ADDRESS_B).await;
    let _ = pair.b.pull_from(ADDRESS_A, false).await;
    let _ = pair.b.pull_from(ADDRESS_A, true).await;
    fixture::write_keys(&pair.b, "e").await;
    let _ = pair.b.push_to(ADDRESS_A).await;
    // An earlier life of B's address: A refuses it.
    let stale = fixture::node(
        ADDRESS_B,
        &[ADDRESS_A, ADDRESS_B],
        wrap(pair.net.endpoint(ADDRESS_B)),
        1,
    );
    let quiet = super::alive();
    stale.heartbeat_tick();
    super::settle_to(quiet).await;
    // A push meant for another life of A.
    let misdirected = Request::Push(PushRequest {
        from: Life {
            address: ADDRESS_B.into(),
            incarnation: 2,
        },
        to: 99,
        clock: pair.b.inspect(|replica| replica.clock().clone()),
        entries: Vec::new(),
        completion: None,
    });
    let _ = wrap(pair.net.endpoint(ADDRESS_B))
        .call(ADDRESS_A, misdirected, Duration::from_secs(1))
        .await;
    pair.b.leave().await;
    pair.a.halt();
    stale.halt();
    super::settle_to(0).await;

    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    let mut requests: Vec<Seed> = Vec::new();
    let mut responses: Vec<Seed> = Vec::new();
    for crossing in log {
        if crossing.to == ADDRESS_A && !requests.iter().any(|(_, _, b)| *b == crossing.request) {
            let name = format!("{}-{}", crossing.kind, requests.len());
            requests.push(("internal_request", name, crossing.request));
        }
        if let Some(response) = crossing.response {
            if !responses.iter().any(|(_, _, b)| *b == response) {
                let name = format!("{}-{}", response_kind(&response), responses.len());
                responses.push(("internal_response", name, response));
            }
        }
    }
    (requests, responses)
}

/// Client bodies and paths, with causal metadata from a real answer.
async fn client_seeds() -> Vec<Seed> {
    let single = Single::start().await;
    let (_, answer) = single
        .call(
            Method::PUT,
            Uri::from_static("/kvs/a0"),
            br#"{"value": 2}"#.to_vec(),
        )
        .await;
    single.check_and_halt();
    let metadata = answer["causal-metadata"].to_string();
    let ahead = serde_json::to_string(&VClock::from_pairs([(
        crate::core::Origin::new("127.0.1.9:7000", 5),
        3,
    )]))
    .expect("a clock serialises");
    let kv = [
        (0u8, format!(r#"{{"causal-metadata": {metadata}}}"#)),
        (
            1,
            format!(r#"{{"value": {{"x": [1, 2.5, "s", null]}}, "causal-metadata": {metadata}}}"#),
        ),
        (2, format!(r#"{{"causal-metadata": {metadata}}}"#)),
        (
            10,
            r#"{"value": "new", "causal-metadata": null}"#.to_string(),
        ),
        (4, r#"{"value": 1, "causal-metadata": {}}"#.to_string()),
        (3, format!(r#"{{"causal-metadata": {ahead}}}"#)),
        (7, String::new()),
    ];
    let views = [
        (0u8, r#"{"socket-address": "127.0.1.3:7000"}"#),
        (1, r#"{"socket-address": "127.0.1.2:7000"}"#),
        (0, r#"{"socket-address": "replica-3:8090"}"#),
    ];
    let fifty = "%C3%A9".repeat(50);
    let paths = [
        "a0".to_string(),
        "a%20b".to_string(),
        fifty.clone(),
        format!("{fifty}x"),
        "%ff".to_string(),
        "/kvs/k?x=1".to_string(),
        "/kvs/".to_string(),
        "/view".to_string(),
    ];
    let mut seeds: Vec<Seed> = Vec::new();
    for (i, (selector, body)) in kv.into_iter().enumerate() {
        let bytes = [&[selector][..], body.as_bytes()].concat();
        seeds.push(("kv_body", format!("body-{i}"), bytes));
    }
    for (i, (selector, body)) in views.into_iter().enumerate() {
        let bytes = [&[selector][..], body.as_bytes()].concat();
        seeds.push(("view_body", format!("body-{i}"), bytes));
    }
    for (i, path) in paths.into_iter().enumerate() {
        seeds.push(("key_path", format!("path-{i}"), path.into_bytes()));
    }
    seeds
}
