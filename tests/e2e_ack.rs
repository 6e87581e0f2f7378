//! End-to-end tests, with real `hearsay` processes, of writes acknowledged by
//! more than one replica (`ack_replicas`) and of dependencies that died with
//! the replica life that made them.
//!
//! Gossip is slowed to once a minute where it matters, so a write can only
//! have reached a peer by the push made for its acknowledgement.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_until, Cluster};

/// Deadline for membership and replication between running replicas.
const SETTLE: Duration = Duration::from_secs(15);

/// Long enough that no gossip round runs during a test.
const NO_GOSSIP_MS: u64 = 60_000;

const ERR_NOT_ACKNOWLEDGED: &str = "Write not acknowledged by enough replicas; it is applied at this replica and will still spread by gossip";
const ERR_LOST: &str = "Causal dependencies lost: the replica lives that made them ended before passing them on; send null causal-metadata to continue";

/// Waits until replica `at` has heard from every other replica (knows a
/// life of each), so that a push to them can be computed.
async fn knows_every_peer(cluster: &Cluster, at: usize) {
    let others: Vec<String> = (0..cluster.len())
        .filter(|&i| i != at)
        .map(|i| cluster.addr(i).to_string())
        .collect();
    wait_until(SETTLE, format!("replica {at} knows its peers"), || {
        let others = others.clone();
        async move {
            let members = cluster.http.members(cluster.addr(at)).await;
            others.iter().all(|peer| {
                members
                    .iter()
                    .any(|m| m["address"] == peer.as_str() && m["state"] == "alive")
            })
        }
    })
    .await;
}

#[tokio::test]
async fn a_write_acknowledged_by_two_survives_its_replica_killed_at_once() {
    let mut cluster = Cluster::builder(3)
        .set("ack_replicas", 2)
        .set("gossip_interval_ms", NO_GOSSIP_MS)
        .start()
        .await;
    knows_every_peer(&cluster, 0).await;
    let mut client = cluster.session();
    client
        .put(cluster.addr(0), "kept", json!("safe"))
        .await
        .expect_result(201, "created");
    cluster.kill(0);

    // Some peer holds it: read with the write's metadata, so that a
    // replica without it can only pull it from the one other holder.
    let mut found = 0;
    for at in [1, 2] {
        let mut reader = cluster.session();
        reader.metadata = client.metadata.clone();
        let reply = reader.get(cluster.addr(at), "kept").await;
        if reply.status == 200 {
            assert_eq!(reply.value(), &json!("safe"));
            found += 1;
        } else {
            reply.expect(
                503,
                Some("Causal dependencies not satisfied; try again later"),
            );
        }
    }
    assert!(
        found >= 1,
        "the write was lost with the replica that took it"
    );
}

#[tokio::test]
async fn with_every_peer_stopped_a_write_is_answered_not_acknowledged() {
    let cluster = Cluster::builder(3)
        .set("ack_replicas", "majority")
        .set("rpc_timeout_ms", 300)
        .set("request_timeout_ms", 10_000)
        .start()
        .await;
    knows_every_peer(&cluster, 0).await;
    cluster.pause(1);
    cluster.pause(2);
    let mut client = cluster.session();
    // Answered by the acknowledgement wait, not by the request's time bound.
    let reply = client.put(cluster.addr(0), "alone", json!(1)).await;
    reply.expect(503, Some(ERR_NOT_ACKNOWLEDGED));
    assert_eq!(reply.json["holding"], 1, "{reply:?}");
    assert_eq!(reply.json["needed"], 2, "{reply:?}");
    assert!(
        reply.metadata().is_object(),
        "the write's metadata is handed back: {reply:?}"
    );
    // Applied here all the same.
    let here = client.get(cluster.addr(0), "alone").await;
    assert_eq!(here.status, 200, "{here:?}");
    // Once the stopped peers are out of the view, a write still needs two
    // of the three admitted replicas: the requirement does not shrink with
    // failures.
    wait_until(
        SETTLE,
        "the stopped peers leave replica 0's view",
        || async { cluster.view(0).await == vec![cluster.addr(0).to_string()] },
    )
    .await;
    let reply = client.put(cluster.addr(0), "still-alone", json!(2)).await;
    reply.expect(503, Some(ERR_NOT_ACKNOWLEDGED));
    assert_eq!(reply.json["needed"], 2, "{reply:?}");

    // Back, the peers get it by gossip.
    cluster.resume(1);
    cluster.resume(2);
    let there = client.get_patiently(cluster.addr(1), "alone", SETTLE).await;
    assert_eq!(there.status, 200, "{there:?}");
    assert_eq!(there.value(), &json!(1));
}

/// Runs the `hearsay` binary with `args` (and no inherited HEARSAY_* vars).
async fn hearsay(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HEARSAY_") {
            command.env_remove(key);
        }
    }
    command.args(args);
    tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the command finished in time")
        .expect("the binary runs")
}

#[tokio::test]
async fn a_client_holding_a_dead_lifes_metadata_is_told_and_can_reset() {
    let mut cluster = Cluster::builder(2)
        .set("gossip_interval_ms", NO_GOSSIP_MS)
        .set("causal_wait_ms", 500)
        .start()
        .await;
    let target = cluster.addr(1).to_string();
    let first_life = cluster.http.own_incarnation(&target).await;
    let mut client = cluster.session();
    client
        .put(&target, "doomed", json!("gone"))
        .await
        .expect_result(201, "created");
    // No data directory: the write dies with the process, before any
    // gossip round could pass it on.
    cluster.kill(1);
    cluster.start_replica(1).await;
    let second_life = cluster.http.own_incarnation(&target).await;
    assert!(second_life > first_life, "{second_life} after {first_life}");

    let lost_life = format!("{target}@{first_life}");
    for at in [cluster.addr(1).to_string(), cluster.addr(0).to_string()] {
        // The other replica learns of the new life by heartbeats.
        wait_until(
            SETTLE,
            format!("{at} answers that the write is lost"),
            || {
                let (http, at, metadata) = (&cluster.http, &at, client.metadata.clone());
                async move {
                    let mut reader = support::Session::new(http.clone());
                    reader.metadata = metadata;
                    let reply = reader.get(at, "doomed").await;
                    assert_eq!(reply.status, 503, "{reply:?}");
                    reply.error() == ERR_LOST
                }
            },
        )
        .await;
        let mut reader = cluster.session();
        reader.metadata = client.metadata.clone();
        let reply = reader.get(&at, "doomed").await;
        assert_eq!(
            reply.json["lost-dependencies"],
            json!([lost_life]),
            "{reply:?}"
        );
    }

    // The CLI: told what to do, and the reset works.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.json");
    std::fs::write(&file, serde_json::to_vec(&client.metadata).unwrap()).unwrap();
    let file = file.to_str().unwrap();
    let stuck = hearsay(&["get", "doomed", "--addr", &target, "--metadata-file", file]).await;
    assert_eq!(stuck.status.code(), Some(4), "{stuck:?}");
    let stderr = String::from_utf8_lossy(&stuck.stderr);
    assert!(stderr.contains("--reset-metadata"), "{stderr}");
    let reset = hearsay(&[
        "put",
        "fresh",
        "1",
        "--addr",
        &target,
        "--metadata-file",
        file,
        "--reset-metadata",
    ])
    .await;
    assert_eq!(reset.status.code(), Some(0), "{reset:?}");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let kept = kept.as_object().expect("the new write's metadata");
    assert!(!kept.contains_key(&lost_life), "{kept:?}");
}

/// Each acknowledged write is pushed at once, but a push carries only what
/// the peer's life does not hold yet: writes that an earlier push already
/// delivered are not sent again. (Computed only from the clock a peer last
/// reported, every push resent everything since the peer's last heartbeat:
/// n sequential writes cost n·(n+1)/2 versions per peer, and `ack_replicas
/// = 2` ran at a tenth of the default's throughput.)
#[tokio::test]
async fn acknowledgement_pushes_do_not_resend_what_a_peer_holds() {
    const WRITES: u64 = 40;
    let cluster = Cluster::builder(3)
        .set("ack_replicas", "all")
        .set("gossip_interval_ms", NO_GOSSIP_MS)
        // Heartbeats report clocks; slow them so that only the pushes can
        // tell the writer what its peers hold.
        .set("heartbeat_interval_ms", 20_000)
        .set("suspect_after_ms", 50_000)
        .set("dead_after_ms", 60_000)
        .start()
        .await;
    knows_every_peer(&cluster, 0).await;
    let sent_before = cluster
        .http
        .metric(cluster.addr(0), "hearsay_delta_versions_sent_total")
        .await
        .unwrap_or(0.0);
    let mut client = cluster.session();
    for i in 0..WRITES {
        client
            .put(cluster.addr(0), &format!("k{i}"), json!(i))
            .await
            .expect_result(201, "created");
    }
    let sent = cluster
        .http
        .metric(cluster.addr(0), "hearsay_delta_versions_sent_total")
        .await
        .unwrap_or(0.0)
        - sent_before;
    println!("{WRITES} acknowledged writes to 2 peers: {sent} versions pushed");
    assert_eq!(
        sent,
        (2 * WRITES) as f64,
        "each write should reach each peer exactly once"
    );
}
