//! Fault scenarios against a real three-replica cluster in Docker.
//!
//! Each test starts its own cluster from the `hearsay:latest` image, runs
//! client sessions through one fault type (or a seeded mix of all of them),
//! heals, waits for convergence and checks the history. They fail — not
//! skip — when Docker or the image is missing. `.config/nextest.toml` puts
//! them in a group that runs one at a time (they share ports and the
//! machine's two cores).
//!
//! `HEARSAY_FAULT_SEED=N` replays a run; `HEARSAY_FAULT_RANDOM_SECS` sets the
//! length of the random schedule (default 60).

use std::time::Duration;

use hearsay_faults::docker::ClusterSpec;
use hearsay_faults::nemesis::{Fault, FaultType, Round, Schedule};
use hearsay_faults::scenario::{run_and_assert, seed_from_env, Config};

fn names() -> Vec<String> {
    ClusterSpec::default().names
}

async fn scripted(name: &str, kind: FaultType, rounds: usize, on_secs: u64) {
    let seed = seed_from_env();
    let schedule = Schedule::scripted(
        kind,
        rounds,
        Duration::from_secs(on_secs),
        Duration::from_secs(3),
        seed,
        &names(),
    );
    run_and_assert(Config::new(name, seed, schedule)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_cluster() {
    let seed = seed_from_env();
    // One round with no fault: the baseline every other scenario builds on.
    let schedule = Schedule {
        rounds: vec![Round {
            faults: vec![],
            on: Duration::from_secs(8),
            off: Duration::ZERO,
        }],
    };
    // Timeouts are reported, not asserted on: other tests may load the two
    // cores at the same time.
    run_and_assert(Config::new("healthy", seed, schedule)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start() {
    scripted("stop-start", FaultType::Stop, 3, 4).await;
}

/// Every replica in turn leaves gracefully and comes back empty: all data
/// must survive through SIGTERM hand-off and state transfer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    let seed = seed_from_env();
    let schedule = Schedule {
        rounds: names()
            .into_iter()
            .map(|n| Round {
                faults: vec![Fault::Stop(n)],
                on: Duration::from_secs(3),
                off: Duration::from_secs(3),
            })
            .collect(),
    };
    run_and_assert(Config::new("rolling-restart", seed, schedule)).await;
}

/// Two replicas leave at the same moment: each must hand its un-gossiped
/// writes to a replica that stays (here only the third), or nothing
/// acknowledged may be lost all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stop_at_once() {
    let seed = seed_from_env();
    let names = names();
    let rounds = (0..3)
        .map(|i| Round {
            faults: vec![Fault::StopTogether(
                names[i].clone(),
                names[(i + 1) % names.len()].clone(),
            )],
            on: Duration::from_secs(3),
            off: Duration::from_secs(3),
        })
        .collect();
    run_and_assert(Config::new("stop-two", seed, Schedule { rounds })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_start() {
    scripted("kill-start", FaultType::Kill, 3, 4).await;
}

/// Kills in quick succession: a replica may be killed again while it, or
/// the peer it copies from, is still in its start-up state transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_kills() {
    let seed = seed_from_env();
    let schedule = Schedule::scripted(
        FaultType::Kill,
        8,
        Duration::from_millis(1000),
        Duration::from_millis(700),
        seed,
        &names(),
    );
    run_and_assert(Config::new("rapid-kills", seed, schedule)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_unpause() {
    scripted("pause-unpause", FaultType::Pause, 3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_disconnect_and_connect() {
    scripted("disconnect-connect", FaultType::Disconnect, 3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_transitive_partition() {
    scripted("partition", FaultType::Partition, 3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_partition() {
    scripted("one-way", FaultType::OneWay, 3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss() {
    scripted("loss", FaultType::Loss, 3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedule() {
    let seed = seed_from_env();
    let secs = std::env::var("HEARSAY_FAULT_RANDOM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let schedule = Schedule::random(seed, Duration::from_secs(secs), &names());
    let plan: Vec<String> = schedule
        .rounds
        .iter()
        .map(|r| {
            let f: Vec<String> = r.faults.iter().map(ToString::to_string).collect();
            format!(
                "[{}] {:.1}s on {:.1}s off",
                f.join(" "),
                r.on.as_secs_f64(),
                r.off.as_secs_f64()
            )
        })
        .collect();
    println!("random schedule (seed {seed}):\n  {}", plan.join("\n  "));
    run_and_assert(Config::new("random", seed, schedule)).await;
}

/// Replicas give up on a dead member after a grace period and then collect
/// tombstones without it. With that grace cut to 1.5 s, a replica that is
/// paused or cut off for 5 s comes back after its peers collected
/// tombstones it never saw: it must not bring deleted keys back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_collection_while_a_replica_is_away() {
    let seed = seed_from_env();
    let schedule = Schedule::cycle(
        &[
            FaultType::Pause,
            FaultType::Isolate,
            FaultType::Disconnect,
            FaultType::Partition,
        ],
        Duration::from_secs(5),
        Duration::from_secs(3),
        seed,
        &names(),
    );
    let mut config = Config::new("tombstone-gc", seed, schedule);
    config.cluster.env.extend([
        ("HEARSAY_DEAD_MEMBER_GRACE_MS".to_owned(), "1500".to_owned()),
        ("HEARSAY_GC_INTERVAL_MS".to_owned(), "200".to_owned()),
    ]);
    run_and_assert(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_isolated_from_peers() {
    scripted("isolate", FaultType::Isolate, 3, 5).await;
}

/// The suite must be able to fail: clients that drop their causal metadata
/// while a replica is cut off from its peers do read stale data, and the
/// checker has to say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_clients_that_drop_metadata() {
    let seed = seed_from_env();
    let schedule = Schedule::scripted(
        FaultType::Isolate,
        2,
        Duration::from_secs(5),
        Duration::from_secs(2),
        seed,
        &names(),
    );
    let mut config = Config::new("selftest-no-metadata", seed, schedule);
    config.forget_metadata = true;
    let report = hearsay_faults::scenario::run(config).await;
    assert!(
        !report.violations.is_empty(),
        "clients without metadata against an isolated replica produced no violation: \
         the checker or the fault is not working\n{}",
        report.summary()
    );
    // The stale reads are the point here; the cluster key must still stay
    // off the wire.
    if let Err(e) = &report.wire {
        panic!("{e}");
    }
}
