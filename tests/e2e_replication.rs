//! End-to-end tests of replication (docs/API.md §4–§5) with three real `hearsay`
//! processes: the spec's three-client causal example, read-your-writes across
//! replicas, a stalled replica that must not answer with older state, eventual
//! convergence of writes and deletes, state transfer to a replica started
//! after the writes, and a deterministic winner for concurrent writes.
//!
//! Causal safety is asserted the way a client sees it: a session that passes
//! its metadata may get `503` (the replica is behind and says so) but never a
//! `404` or an older value for something it has seen.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{wait_for, wait_until, Cluster};

/// How long a replica may keep answering 503 to a session before that is a
/// failure. Writes spread in about a gossip round (100 ms) and a behind
/// replica pulls at once; this is generous for a contended machine.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Deadline for every replica to hold the same state.
const CONVERGE: Duration = Duration::from_secs(15);

/// Whether every replica answers every key as `expected` says (`None`: 404).
async fn all_hold(
    cluster: &Cluster,
    replicas: &[usize],
    expected: &BTreeMap<String, Option<Value>>,
) -> bool {
    for &i in replicas {
        for (key, want) in expected {
            if &cluster.http.state_of(cluster.addr(i), key).await != want {
                return false;
            }
        }
    }
    true
}

/// Whether every replica answers `key` alike; returns that answer.
async fn agreed(cluster: &Cluster, key: &str) -> Option<Option<Value>> {
    let first = cluster.http.state_of(cluster.addr(0), key).await;
    for i in 1..cluster.len() {
        if cluster.http.state_of(cluster.addr(i), key).await != first {
            return None;
        }
    }
    Some(first)
}

#[tokio::test]
async fn the_three_client_example_from_the_spec() {
    let cluster = Cluster::start(3).await;
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));

    // Repeated with fresh keys and the replicas in every role, so that the
    // race (C asked before gossip reached it) is hit in some rounds.
    let mut unavailable = 0;
    for round in 0..12 {
        let (a, b, c) = match round % 3 {
            0 => (a, b, c),
            1 => (b, c, a),
            _ => (c, a, b),
        };
        let (x, y) = (format!("x{round}"), format!("y{round}"));

        let mut client1 = cluster.session();
        client1
            .put(a, &x, json!(1))
            .await
            .expect_result(201, "created");

        // Client 2 reads x=1 at A, then writes y=2 at B: y depends on x.
        let mut client2 = cluster.session();
        let read = client2.get(a, &x).await;
        read.expect_result(200, "found");
        assert_eq!(read.value(), &json!(1));
        let wrote = client2.put_patiently(b, &y, json!(2), CATCH_UP).await;
        wrote.expect_result(201, "created");

        // Client 3 sees y=2 at B; then x at C must be 1 (or 503 until C has it).
        let mut client3 = cluster.session();
        let seen_y = client3.get(b, &y).await;
        seen_y.expect_result(200, "found");
        assert_eq!(seen_y.value(), &json!(2));
        let (seen_x, waits) = client3.patiently("GET", c, &x, None, CATCH_UP).await;
        unavailable += waits;
        assert_eq!(
            seen_x.status, 200,
            "round {round}: client 3 saw y=2 but x is missing at C: {seen_x:?}"
        );
        assert_eq!(seen_x.value(), &json!(1), "round {round}");
    }
    println!("three-client example: {unavailable} answers of 503 before x arrived at C");
}

#[tokio::test]
async fn a_session_reads_its_own_writes_at_every_replica() {
    let cluster = Cluster::start(3).await;
    let addrs = cluster.addrs();
    let mut client = cluster.session();

    for round in 0..15 {
        let key = format!("k{}", round % 4); // keys are overwritten, too
        let value = json!({ "round": round });
        let writer = &addrs[round % 3];
        client
            .put_patiently(writer, &key, value.clone(), CATCH_UP)
            .await
            .expect(if round < 4 { 201 } else { 200 }, None);

        // At once, at the other two: this value or a 503, never an older one.
        for reader in addrs.iter().filter(|a| *a != writer) {
            let reply = client.get_patiently(reader, &key, CATCH_UP).await;
            reply.expect_result(200, "found");
            assert_eq!(reply.value(), &value, "round {round} read at {reader}");
        }
    }

    // Deletes too: once deleted, the session never sees the key again.
    client
        .patiently("DELETE", &addrs[0], "k0", None, CATCH_UP)
        .await
        .0
        .expect_result(200, "deleted");
    for reader in &addrs {
        let reply = client.get_patiently(reader, "k0", CATCH_UP).await;
        reply.expect(404, Some("Key does not exist"));
    }
}

#[tokio::test]
async fn a_stalled_replica_never_answers_with_older_state() {
    let cluster = Cluster::builder(3).set("causal_wait_ms", 200).start().await;
    let (a, c) = (cluster.addr(0), cluster.addr(2));
    let mut client = cluster.session();
    client
        .put(a, "x", json!("old"))
        .await
        .expect_result(201, "created");
    let mut other = cluster.session();
    wait_until(CATCH_UP, "C has the old value", || {
        let http = &cluster.http;
        async move { http.state_of(c, "x").await == Some(json!("old")) }
    })
    .await;

    // C is frozen while the session overwrites x at A and writes a new key.
    cluster.pause(2);
    client
        .put(a, "x", json!("new"))
        .await
        .expect_result(200, "replaced");
    client
        .put(a, "fresh", json!(1))
        .await
        .expect_result(201, "created");
    tokio::time::sleep(Duration::from_millis(300)).await; // C stays stalled a while
    cluster.resume(2);

    // Right after it resumes, C answers the session with the new state or
    // 503, never "old" or 404.
    let started = Instant::now();
    let (x, waits_x) = client.patiently("GET", c, "x", None, CATCH_UP).await;
    x.expect_result(200, "found");
    assert_eq!(x.value(), &json!("new"));
    let (fresh, waits_fresh) = client.patiently("GET", c, "fresh", None, CATCH_UP).await;
    fresh.expect_result(200, "found");
    println!(
        "stalled replica served the session {:?} after SIGCONT ({} answers of 503 first)",
        started.elapsed(),
        waits_x + waits_fresh
    );

    // A client without metadata sees the new state at C once gossip ran.
    wait_until(CATCH_UP, "C converges on the new value", || {
        let http = &cluster.http;
        async move { http.state_of(c, "x").await == Some(json!("new")) }
    })
    .await;
    other.get(c, "x").await.expect_result(200, "found");
}

/// Nothing spreads by itself within a test's lifetime: no gossip rounds and
/// no heartbeats (so no heartbeat-triggered pulls), while every member stays
/// in the view. A replica learns a write only when a client's metadata makes
/// it pull, so which replica has seen what is decided by the test, not by
/// timing.
fn no_background_spreading(builder: support::ClusterBuilder) -> support::ClusterBuilder {
    // The longest durations the configuration allows (one hour).
    const HOUR_MS: u64 = 3_600_000;
    builder
        .set("gossip_interval_ms", HOUR_MS)
        .set("heartbeat_interval_ms", HOUR_MS - 2)
        .set("suspect_after_ms", HOUR_MS - 1)
        .set("dead_after_ms", HOUR_MS)
}

#[tokio::test]
async fn a_client_that_saw_a_delete_never_reads_the_deleted_value_elsewhere() {
    let cluster = no_background_spreading(Cluster::builder(3)).start().await;
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));
    let mut writer = cluster.session();
    writer
        .put(a, "k", json!("old"))
        .await
        .expect_result(201, "created");
    // The writer's metadata makes B and C pull the value from A.
    for addr in [b, c] {
        let reply = writer.get_patiently(addr, "k", CATCH_UP).await;
        reply.expect_result(200, "found");
        assert_eq!(reply.value(), &json!("old"), "at {addr}");
    }
    writer.delete(a, "k").await.expect_result(200, "deleted");
    // Only A knows of the delete, and nothing will tell B or C by itself.
    for addr in [b, c] {
        assert_eq!(cluster.http.state_of(addr, "k").await, Some(json!("old")));
    }

    // Two clients that never saw the value learn of the delete at A: one
    // from a GET, one from a DELETE, both answered 404.
    let mut reader = cluster.session();
    reader
        .get(a, "k")
        .await
        .expect(404, Some("Key does not exist"));
    let mut deleter = cluster.session();
    deleter
        .delete(a, "k")
        .await
        .expect(404, Some("Key does not exist"));

    // Passing on what those 404s said, neither may see the deleted value at
    // a replica that has not had the delete: it is held (and pulls), then
    // answers 404, or 503.
    for (who, session, addr) in [("reader", &mut reader, c), ("deleter", &mut deleter, b)] {
        let reply = session.get(addr, "k").await;
        match reply.status {
            404 => reply.expect(404, Some("Key does not exist")),
            503 => reply.expect(
                503,
                Some("Causal dependencies not satisfied; try again later"),
            ),
            _ => panic!("the {who} saw k deleted at A, then read {reply:?} at {addr}"),
        };
    }
}

#[tokio::test]
async fn writes_and_deletes_converge_on_every_replica() {
    let cluster = Cluster::start(3).await;
    let addrs = cluster.addrs();
    let mut expected: BTreeMap<String, Option<Value>> = BTreeMap::new();

    // Each replica has its own client and keys: created, overwritten, some
    // deleted, some deleted and written again.
    for (i, addr) in addrs.iter().enumerate() {
        let mut client = cluster.session();
        for n in 0..15 {
            let key = format!("r{i}-k{n}");
            client
                .put(addr, &key, json!([i, n, "first"]))
                .await
                .expect_result(201, "created");
            let mut last = Some(json!([i, n, "first"]));
            if n % 2 == 0 {
                client
                    .put(addr, &key, json!({"i": i, "n": n}))
                    .await
                    .expect_result(200, "replaced");
                last = Some(json!({"i": i, "n": n}));
            }
            if n % 3 == 0 {
                client
                    .delete(addr, &key)
                    .await
                    .expect_result(200, "deleted");
                last = None;
            }
            if n % 5 == 0 {
                let (status, result) = match last {
                    None => (201, "created"),
                    Some(_) => (200, "replaced"),
                };
                client
                    .put(addr, &key, json!("again"))
                    .await
                    .expect_result(status, result);
                last = Some(json!("again"));
            }
            expected.insert(key, last);
        }
    }
    // A client that moves between replicas: it reads each key where it was
    // written, then deletes it at the next replica. Having read it, the
    // delete depends on the write, so the next replica must apply it there
    // (catching up first if gossip has not brought the key yet) rather than
    // answer 404.
    let mut roamer = cluster.session();
    for (n, key) in ["r0-k1", "r1-k1", "r2-k1"].into_iter().enumerate() {
        roamer.get(&addrs[n], key).await.expect_result(200, "found");
        let addr = &addrs[(n + 1) % 3];
        let reply = roamer
            .patiently("DELETE", addr, key, None, CATCH_UP)
            .await
            .0;
        reply.expect_result(200, "deleted");
        expected.insert(key.to_string(), None);
    }

    // The roamer's metadata after all that: one entry per replica, however
    // many operations it has seen.
    let entries = roamer.metadata.as_object().map_or(0, |m| m.len());
    assert!(
        (1..=3).contains(&entries),
        "metadata grew to {entries} entries: {}",
        roamer.metadata
    );

    let started = Instant::now();
    let took = wait_until(CONVERGE, "every replica holds the same state", || {
        let (cluster, expected) = (&cluster, &expected);
        async move { all_hold(cluster, &[0, 1, 2], expected).await }
    })
    .await;
    println!(
        "{} keys converged on 3 replicas {took:?} after the last write (checked in {:?})",
        expected.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn a_replica_started_later_gets_everything_before_it_is_ready() {
    let mut cluster = Cluster::builder(3).defer(2).start().await;
    let (a, b) = (cluster.addr(0).to_string(), cluster.addr(1).to_string());
    let mut client = cluster.session();
    let mut expected = BTreeMap::new();
    for n in 0..40 {
        let key = format!("early{n}");
        let addr = if n % 2 == 0 { &a } else { &b };
        let value = json!({"n": n, "text": "x".repeat(n * 10)});
        client
            .put_patiently(addr, &key, value.clone(), CATCH_UP)
            .await
            .expect_result(201, "created");
        expected.insert(key, Some(value));
    }
    for n in (0..40).step_by(4) {
        let key = format!("early{n}");
        client
            .patiently("DELETE", &a, &key, None, CATCH_UP)
            .await
            .0
            .expect_result(200, "deleted");
        expected.insert(key, None);
    }

    let ready_after = cluster.start_replica(2).await;
    println!("late replica ready {ready_after:?} after start");

    // Once ready, C serves all of it without any metadata and without
    // waiting for gossip: the state transfer happened before /ready.
    for (key, want) in &expected {
        let got = cluster.http.state_of(cluster.addr(2), key).await;
        assert_eq!(&got, want, "late replica, key {key}");
    }
    // The session's metadata is covered too: no 503.
    let reply = client.get(cluster.addr(2), "early1").await;
    reply.expect_result(200, "found");

    // And the others have added it to their views.
    let all = cluster.sorted(&[0, 1, 2]);
    wait_until(CATCH_UP, "every view lists the late replica", || {
        let (cluster, all) = (&cluster, &all);
        async move { cluster.views_equal(&[0, 1, 2], all).await }
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_to_one_key_end_with_one_winner_everywhere() {
    let cluster = Cluster::start(3).await;
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));

    for round in 0..5 {
        let key = format!("contested{round}");
        let mut left = cluster.session();
        let mut right = cluster.session();
        let (l, r) = tokio::join!(
            left.put(a, &key, json!(format!("from A, round {round}"))),
            right.put(b, &key, json!(format!("from B, round {round}"))),
        );
        // Which write reaches the other replica first is a race: a PUT that
        // already sees the other write answers 200 "replaced". The contract
        // only promises that the two cannot both see each other.
        for reply in [&l, &r] {
            assert!(
                matches!(reply.status, 200 | 201),
                "a concurrent PUT creates or replaces: {reply:?}"
            );
        }
        assert!(
            l.status == 201 || r.status == 201,
            "one of two concurrent PUTs of a new key is first: {l:?} {r:?}"
        );

        let (winner, _) = wait_for(
            CONVERGE,
            format!("{key} to have one value everywhere"),
            || {
                let (cluster, key) = (&cluster, &key);
                async move { agreed(cluster, key).await }
            },
        )
        .await;
        let winner = winner.expect("the key exists");
        assert!(
            winner == json!(format!("from A, round {round}"))
                || winner == json!(format!("from B, round {round}")),
            "winner {winner} is one of the two writes"
        );
        // Both writers now read the winner, wherever they ask.
        for session in [&mut left, &mut right] {
            let reply = session.get_patiently(c, &key, CATCH_UP).await;
            assert_eq!(reply.value(), &winner, "{reply:?}");
        }

        // A write that saw the winner is causally later: it wins everywhere.
        let mut later = cluster.session();
        let seen = later.get_patiently(c, &key, CATCH_UP).await;
        assert_eq!(seen.value(), &winner);
        later
            .put(c, &key, json!("causally later"))
            .await
            .expect_result(200, "replaced");
        wait_until(
            CONVERGE,
            format!("{key} is the later write everywhere"),
            || {
                let (cluster, key) = (&cluster, &key);
                async move { agreed(cluster, key).await == Some(Some(json!("causally later"))) }
            },
        )
        .await;
    }
}

/// Settings under which a replica that is away for ~2 s is past the grace
/// period, so the others collect tombstones without it (the default grace is
/// five minutes, too long for a test).
fn short_tombstone_grace(builder: support::ClusterBuilder) -> support::ClusterBuilder {
    builder
        .set("dead_member_grace_ms", 300)
        .set("gc_interval_ms", 100)
}

/// Writes `doomed` (and a survivor key) everywhere, stalls replica `away`,
/// deletes `doomed` at replica `at`, and waits until every other replica has
/// dropped `away` from its view and collected the tombstone.
async fn delete_while_away(cluster: &Cluster, away: usize, at: usize, doomed: &str) {
    let others: Vec<usize> = (0..cluster.len()).filter(|&i| i != away).collect();
    let mut client = cluster.session();
    client
        .put(cluster.addr(at), doomed, json!("doomed"))
        .await
        .expect_result(201, "created");
    client
        .put(cluster.addr(at), "kept", json!("kept"))
        .await
        .expect_result(201, "created");
    wait_until(
        CATCH_UP,
        "every replica holds the doomed key",
        || async move { agreed(cluster, doomed).await == Some(Some(json!("doomed"))) },
    )
    .await;

    cluster.pause(away);
    client
        .delete(cluster.addr(at), doomed)
        .await
        .expect_result(200, "deleted");
    let away_addr = cluster.addr(away).to_string();
    let others = &others;
    wait_until(CATCH_UP, "the others collected the tombstone", || {
        let away_addr = &away_addr;
        async move {
            for &i in others {
                let addr = cluster.addr(i);
                let view = cluster.http.view(addr).await;
                let tombstones = cluster.http.metric(addr, "hearsay_tombstones").await;
                if view.contains(away_addr) || tombstones != Some(0.0) {
                    return false;
                }
                if cluster.http.state_of(addr, doomed).await.is_some() {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// Asserts that `key` is missing at every running replica listed, and stays
/// missing for a while (a resurrection would come back through gossip).
async fn stays_deleted(cluster: &Cluster, replicas: &[usize], key: &str) {
    let started = Instant::now();
    loop {
        let mut holders = Vec::new();
        for &i in replicas {
            if let Some(value) = cluster.http.state_of(cluster.addr(i), key).await {
                holders.push(format!("replica {i}: {value}"));
            }
        }
        if holders.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "{key} still present after {CATCH_UP:?} at {holders:?}"
        );
        tokio::time::sleep(support::POLL).await;
    }
    let first = started.elapsed();
    support::holds_throughout(
        Duration::from_secs(1),
        Duration::from_millis(50),
        || async move {
            for &i in replicas {
                if let Some(value) = cluster.http.state_of(cluster.addr(i), key).await {
                    return Err(format!("{key} is back at replica {i}: {value}"));
                }
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("deleted key resurrected: {e}"));
    println!("{key} gone everywhere {first:?} after the replica returned");
}

#[tokio::test]
async fn deletes_stay_deleted_when_a_replica_returns_after_tombstones_were_collected() {
    let cluster = short_tombstone_grace(Cluster::builder(3)).start().await;
    delete_while_away(&cluster, 2, 0, "doomed").await;

    // C comes back holding the old value of a key whose tombstone nobody
    // keeps any more: it must not bring the key back to anyone.
    cluster.resume(2);
    let all = cluster.sorted(&[0, 1, 2]);
    wait_until(
        CATCH_UP,
        "the returning replica is back in every view",
        || {
            let (cluster, all) = (&cluster, &all);
            async move { cluster.views_equal(&[0, 1, 2], all).await }
        },
    )
    .await;
    stays_deleted(&cluster, &[0, 1, 2], "doomed").await;
    assert_eq!(
        cluster.http.state_of(cluster.addr(2), "kept").await,
        Some(json!("kept"))
    );
}

#[tokio::test]
async fn deletes_stay_deleted_when_the_returning_replica_meets_one_restarted_since() {
    let mut cluster = short_tombstone_grace(Cluster::builder(3)).start().await;
    delete_while_away(&cluster, 2, 0, "doomed").await;

    // A restarts: it rebuilds its store from B by a snapshot, which holds no
    // trace of "doomed". Then B goes away, so A is the only peer C can meet.
    cluster.kill(0);
    cluster.start_replica(0).await;
    let (status, _) = cluster.terminate(1, Duration::from_secs(5)).await;
    assert!(status.success());
    if let Some(value) = cluster.http.state_of(cluster.addr(0), "doomed").await {
        panic!("the restarted replica has the deleted key: {value}");
    }

    cluster.resume(2);
    let pair = cluster.sorted(&[0, 2]);
    wait_until(CATCH_UP, "A and C list each other again", || {
        let (cluster, pair) = (&cluster, &pair);
        async move { cluster.views_equal(&[0, 2], pair).await }
    })
    .await;
    stays_deleted(&cluster, &[0, 2], "doomed").await;
}

/// Writes `count` keys of ~330 bytes spread over replicas 0 and 1 and
/// deletes every seventh; waits until both hold it all. Returns the expected
/// state and the writing session.
async fn fill_two_replicas(
    cluster: &Cluster,
    count: usize,
) -> (BTreeMap<String, Option<Value>>, support::Session) {
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let mut expected = BTreeMap::new();
    let mut client = cluster.session();
    for n in 0..count {
        let key = format!("chunk{n}");
        let value = json!({"n": n, "pad": "c".repeat(300)});
        let addr = if n % 3 == 0 { b } else { a };
        client
            .put_patiently(addr, &key, value.clone(), CATCH_UP)
            .await
            .expect_result(201, "created");
        expected.insert(key, Some(value));
    }
    for n in (0..count).step_by(7) {
        let key = format!("chunk{n}");
        client
            .patiently("DELETE", a, &key, None, CATCH_UP)
            .await
            .0
            .expect_result(200, "deleted");
        expected.insert(key, None);
    }
    wait_until(CONVERGE, "A and B hold the same state", || {
        let expected = &expected;
        async move { all_hold(cluster, &[0, 1], expected).await }
    })
    .await;
    (expected, client)
}

#[tokio::test]
async fn transfers_split_into_many_small_messages_lose_nothing() {
    // The smallest message size the settings allow: every delta and the
    // state transfer to the late replica take many chunks.
    let mut cluster = Cluster::builder(3)
        .set("max_message_bytes", 1024)
        .defer(2)
        .start()
        .await;
    let (expected, mut client) = fill_two_replicas(&cluster, 60).await;

    cluster.start_replica(2).await;
    let late = cluster.addr(2).to_string();
    let reply = client.get_patiently(&late, "chunk59", CATCH_UP).await;
    reply.expect_result(200, "found");
    wait_until(CONVERGE, "the late replica holds everything", || {
        let (cluster, expected) = (&cluster, &expected);
        async move { all_hold(cluster, &[2], expected).await }
    })
    .await;
}

#[tokio::test]
async fn a_starting_replica_is_ready_only_after_its_state_transfer() {
    // Many small chunks make the transfer take a while, so that a replica
    // that declares itself ready too early is caught reading. The race is
    // between two tasks, so the replica is started several times.
    let mut cluster = Cluster::builder(3)
        .set("max_message_bytes", 1024)
        .defer(2)
        .start()
        .await;
    let (expected, _) = fill_two_replicas(&cluster, 150).await;
    let late = cluster.addr(2).to_string();
    let mut early = Vec::new();
    for life in 0..8 {
        cluster.start_replica(2).await;
        let mut missing = 0;
        for (key, want) in &expected {
            if &cluster.http.state_of(&late, key).await != want {
                missing += 1;
            }
        }
        if missing > 0 {
            early.push(format!(
                "life {life}: {missing} of {} keys wrong",
                expected.len()
            ));
        }
        cluster.kill(2);
    }
    assert!(
        early.is_empty(),
        "ready before the state transfer finished: {early:?}"
    );
}

#[tokio::test]
async fn values_near_the_size_limit_replicate() {
    let cluster = Cluster::start(3).await;
    let mut client = cluster.session();
    // Default limit: 1 MiB of JSON text per value; each fills a default
    // 1 MiB message on its own, so the deltas are split into one value per
    // chunk (a chunk always carries at least one version).
    let mut expected = BTreeMap::new();
    for n in 0..5 {
        let key = format!("big{n}");
        let text = format!("{n}").repeat(1024 * 1024 - 2);
        client
            .put_patiently(cluster.addr(n % 3), &key, json!(text), CATCH_UP)
            .await
            .expect_result(201, "created");
        expected.insert(key, Some(json!(text)));
    }
    let took = wait_until(CONVERGE, "every replica holds the big values", || {
        let (cluster, expected) = (&cluster, &expected);
        async move { all_hold(cluster, &[0, 1, 2], expected).await }
    })
    .await;
    println!("5 values of 1 MiB on 3 replicas after {took:?}");
}

#[tokio::test]
async fn a_delete_racing_a_write_ends_the_same_everywhere() {
    let cluster = Cluster::start(3).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    for round in 0..5 {
        let key = format!("raced{round}");
        let mut setup = cluster.session();
        setup
            .put(a, &key, json!("initial"))
            .await
            .expect_result(201, "created");
        wait_until(CONVERGE, format!("{key} is everywhere"), || {
            let (cluster, key) = (&cluster, &key);
            async move { agreed(cluster, key).await == Some(Some(json!("initial"))) }
        })
        .await;

        // Two clients that both saw "initial": one deletes, one overwrites.
        let mut deleter = cluster.session();
        let mut writer = cluster.session();
        deleter.metadata = setup.metadata.clone();
        writer.metadata = setup.metadata.clone();
        let (deleted, written) = tokio::join!(
            deleter.delete(a, &key),
            writer.put(b, &key, json!("overwrite")),
        );
        // The key exists wherever the delete runs, but the overwrite may
        // reach B after the delete did (then it re-creates the key: 201).
        deleted.expect_result(200, "deleted");
        let recreated = written.status == 201;
        if recreated {
            written.expect_result(201, "created");
        } else {
            written.expect_result(200, "replaced");
        }
        let (outcome, _) = wait_for(CONVERGE, format!("{key} to agree"), || {
            let (cluster, key) = (&cluster, &key);
            async move { agreed(cluster, key).await }
        })
        .await;
        assert!(
            outcome.is_none() || outcome == Some(json!("overwrite")),
            "{key}: {outcome:?}"
        );
        if recreated {
            // The overwrite saw the delete, so it is causally later and wins.
            assert_eq!(outcome, Some(json!("overwrite")), "{key}");
        }
    }
}

#[tokio::test]
async fn tombstones_are_collected_once_every_replica_has_them() {
    let cluster = Cluster::builder(3).set("gc_interval_ms", 200).start().await;
    let mut client = cluster.session();
    for n in 0..20 {
        let key = format!("gc{n}");
        let addr = cluster.addr(n % 3);
        client
            .put_patiently(addr, &key, json!(n), CATCH_UP)
            .await
            .expect_result(201, "created");
        client
            .patiently("DELETE", addr, &key, None, CATCH_UP)
            .await
            .0
            .expect_result(200, "deleted");
    }
    client
        .put(cluster.addr(0), "live", json!(1))
        .await
        .expect_result(201, "created");
    // Deleted state does not only grow: every replica drops its tombstones.
    let took = wait_until(CONVERGE, "no replica keeps a tombstone", || {
        let cluster = &cluster;
        async move {
            for i in 0..3 {
                let addr = cluster.addr(i);
                let tombstones = cluster.http.metric(addr, "hearsay_tombstones").await;
                let keys = cluster.http.metric(addr, "hearsay_keys").await;
                if tombstones != Some(0.0) || keys != Some(1.0) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    println!("20 tombstones collected on 3 replicas after {took:?}");
    for n in 0..20 {
        for i in 0..3 {
            let reply = client.get(cluster.addr(i), &format!("gc{n}")).await;
            reply.expect(404, Some("Key does not exist"));
        }
    }
}
