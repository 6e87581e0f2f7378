//! Forged replica-to-replica messages, end to end: someone who can reach
//! `/internal/*` (no cluster key is set by default) sends messages no real
//! replica would send. Each test replays one finding; the replicas must keep
//! their views, their data and a small member table.

mod support;

use std::time::Duration;

use hearsay::core::{Covers, Life, PushCompletion, PushRequest, VClock};
use hearsay::proto::{self, Hello, Request, Response};
use serde_json::json;
use support::{holds_throughout, wait_until, Body, Cluster};

const SOON: Duration = Duration::from_secs(5);

/// Sends one internal message to `addr` and decodes the answer (`None` when
/// the replica answered with an HTTP error instead of a message).
async fn send(addr: &str, request: &Request) -> Option<Response> {
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/internal/{}", request.kind()))
        .body(proto::encode(request).expect("encoding"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("an answer");
    if !answer.status().is_success() {
        return None;
    }
    proto::decode(&answer.bytes().await.expect("a body")).ok()
}

fn hello(address: &str, incarnation: u64) -> Hello {
    Hello {
        address: address.to_string(),
        incarnation,
        process: 42,
        clock: VClock::new(),
        cluster: 0,
        admissions: Vec::new(),
    }
}

/// `observer` keeps listing every replica of `cluster` for a while.
async fn view_stays_whole(cluster: &Cluster, observer: usize) {
    let all = cluster.sorted(&(0..cluster.len()).collect::<Vec<_>>());
    cluster
        .views_stay(
            &[observer],
            &all,
            Duration::from_millis(1500),
            Duration::from_millis(50),
        )
        .await
        .unwrap_or_else(|e| panic!("a forged message changed a view: {e}"));
}

#[tokio::test]
async fn a_forged_leave_from_a_life_not_known_evicts_no_one() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let known = cluster.http.own_incarnation(b).await;
    for incarnation in [u64::MAX, known + 1, known - 1] {
        let leave = Request::Leave {
            address: b.to_string(),
            incarnation,
            process: None,
        };
        send(a, &leave).await;
    }
    view_stays_whole(&cluster, 0).await;
}

#[tokio::test]
async fn a_heartbeat_from_a_life_far_in_the_future_is_refused() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let future = hearsay::node::wall_ms() + 10 * 24 * 3600 * 1000;
    for incarnation in [u64::MAX, future] {
        let answer = send(a, &Request::Heartbeat(hello(b, incarnation))).await;
        assert!(
            !matches!(answer, Some(Response::Hello(_))),
            "a heartbeat from incarnation {incarnation} was taken: {answer:?}"
        );
    }
    view_stays_whole(&cluster, 0).await;
}

#[tokio::test]
async fn a_forged_guarantee_about_the_receivers_own_life_hides_none_of_its_writes() {
    let cluster = Cluster::builder(2).set("causal_wait_ms", 100).start().await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let a_life = cluster.http.own_incarnation(a).await;
    let b_life = cluster.http.own_incarnation(b).await;
    // "b" tells a that a has already made a thousand writes.
    let claim = VClock::from_pairs([(hearsay::core::Origin::new(a, a_life), 1000)]);
    let push = Request::Push(PushRequest {
        from: Life {
            address: b.to_string(),
            incarnation: b_life,
        },
        to: a_life,
        clock: claim.clone(),
        entries: Vec::new(),
        completion: Some(PushCompletion {
            covers: Covers {
                clock: claim,
                lamport: 1,
                horizon: VClock::new(),
            },
            basis: VClock::new(),
        }),
    });
    send(a, &push).await;
    // a must never claim those writes, nor pass the claim on to b: a client
    // that says it has seen them is held (503), not served.
    let claimed = json!({ format!("{a}@{a_life}"): 1000 });
    holds_throughout(
        Duration::from_millis(1500),
        Duration::from_millis(100),
        || {
            let (http, claimed) = (&cluster.http, claimed.clone());
            async move {
                for addr in [a, b] {
                    let body = Body::Json(json!({ "causal-metadata": claimed }));
                    let reply = http.kv("GET", addr, "k", body).await;
                    if reply.status != 503 {
                        return Err(format!("{addr} claims a's forged writes: {reply:?}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // And a's next write reaches b.
    let mut session = cluster.session();
    session
        .put(a, "k", json!("real"))
        .await
        .expect_result(201, "created");
    let took = wait_until(SOON, "b serves a's write", || {
        let http = &cluster.http;
        async move { http.read(b, "k").await.status == 200 }
    })
    .await;
    println!("a's write reached b after {took:?}");
}

#[tokio::test]
async fn junk_pulls_heartbeats_and_joins_leave_the_member_table_small() {
    let cluster = Cluster::start(1).await;
    let a = cluster.addr(0);
    for i in 0..100u16 {
        let junk = format!("127.0.0.1:{}", 2000 + i);
        let pull = Request::Pull(hearsay::core::PullRequest {
            from: Life {
                address: junk.clone(),
                incarnation: 1,
            },
            to: None,
            clock: VClock::new(),
            snapshot: false,
            cursor: None,
        });
        send(a, &pull).await;
        let junk = format!("127.0.0.1:{}", 3000 + i);
        let mut beat = hello(&junk, 1);
        beat.admissions = vec![hearsay::core::Admission {
            address: junk.clone(),
            admitted: true,
            version: 0,
        }];
        send(a, &Request::Heartbeat(beat)).await;
        // A join is an announcement, but naming an address proves nothing:
        // nothing answers there, so nothing is admitted.
        let junk = format!("127.0.0.1:{}", 4000 + i);
        send(a, &Request::Join(hello(&junk, 1))).await;
    }
    let members = cluster.http.members(a).await;
    assert!(
        members.len() <= 4,
        "junk senders became members: {} entries",
        members.len()
    );
}

#[tokio::test]
async fn a_view_change_names_a_usable_address_and_knows_its_own_aliases() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    for junk in [
        "0.0.0.0:0",
        "0.0.0.0:8090",
        "127.0.0.1:0",
        "[::]:8090",
        "224.0.0.1:80",
    ] {
        let reply = cluster.http.change_view("PUT", a, junk).await;
        assert_eq!(reply.status, 400, "PUT /view {junk}: {reply:?}");
    }
    // This replica under another spelling is this replica.
    let port = a.rsplit_once(':').unwrap().1;
    let alias = format!("[::ffff:127.0.0.1]:{port}");
    cluster
        .http
        .change_view("PUT", a, &alias)
        .await
        .expect_result(200, "already present");
    // Another spelling of a peer is that peer.
    let port_b = b.rsplit_once(':').unwrap().1;
    cluster
        .http
        .change_view("PUT", a, &format!("[::ffff:127.0.0.1]:{port_b}"))
        .await
        .expect_result(200, "already present");
    let members = cluster.http.members(a).await;
    assert_eq!(members.len(), 2, "{members:?}");
    view_stays_whole(&cluster, 0).await;
}

#[tokio::test]
async fn an_operator_removes_a_dead_admitted_member_and_nobody_probes_it() {
    let mut cluster = Cluster::start(3).await;
    let dead = cluster.addr(2).to_string();
    cluster.kill(2);
    wait_until(SOON, "the killed replica is dead at both", || {
        let (cluster, dead) = (&cluster, &dead);
        async move {
            for i in 0..2 {
                let state = cluster.http.member(cluster.addr(i), dead).await;
                if state.is_none_or(|m| m["state"] != "dead") {
                    return false;
                }
            }
            true
        }
    })
    .await;
    cluster
        .http
        .change_view("DELETE", cluster.addr(0), &dead)
        .await
        .expect_result(200, "deleted");
    wait_until(SOON, "both replicas know it is removed", || {
        let (cluster, dead) = (&cluster, &dead);
        async move {
            for i in 0..2 {
                let state = cluster.http.member(cluster.addr(i), dead).await;
                if state.is_some_and(|m| m["admitted"] == true) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    // Not probed any more: nothing on either replica asks for it.
    let probes = |i: usize| {
        let http = &cluster.http;
        let addr = cluster.addr(i).to_string();
        let dead = dead.clone();
        async move {
            http.send("GET", &addr, "/members", Body::None).await.json["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["address"] == dead.as_str())
                .all(|m| m["admitted"] == false && m["in_view"] == false)
        }
    };
    holds_throughout(
        Duration::from_millis(1000),
        Duration::from_millis(100),
        || async {
            if probes(0).await && probes(1).await {
                Ok(())
            } else {
                Err("the removed member is admitted or in a view again".to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_operator_token_guards_view_changes_only() {
    let token = "a-very-long-operator-token";
    let cluster = Cluster::builder(1).set("admin_token", token).start().await;
    let a = cluster.addr(0);
    let target = json!({"socket-address": "127.0.0.1:9"}).to_string();
    let client = reqwest::Client::new();
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        for auth in [None, Some("Bearer wrong-token-wrong-token"), Some(token)] {
            let mut request = client
                .request(method.clone(), format!("http://{a}/view"))
                .header("content-type", "application/json")
                .body(target.clone());
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 401, "{method} /view with {auth:?}");
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"], "Missing or wrong operator token");
        }
        let answer = client
            .request(method.clone(), format!("http://{a}/view"))
            .header("authorization", format!("Bearer {token}"))
            .body(target.clone())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{method} with the token");
    }
    assert_eq!(
        cluster
            .http
            .send("GET", a, "/view", Body::None)
            .await
            .status,
        200
    );

    // The command-line client sends the token from HEARSAY_ADMIN_TOKEN.
    let cli = |token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HEARSAY_") {
                command.env_remove(key);
            }
        }
        if let Some(token) = token {
            command.env("HEARSAY_ADMIN_TOKEN", token);
        }
        command.args(["view", "add", "127.0.0.1:9", "--addr", a, "--no-metadata"]);
        async move {
            tokio::time::timeout(Duration::from_secs(20), command.output())
                .await
                .expect("the client finished in time")
                .expect("the client runs")
                .status
                .code()
        }
    };
    assert_eq!(cli(None).await, Some(6), "refused without the token");
    assert_eq!(cli(Some(token)).await, Some(0), "taken with the token");
}
