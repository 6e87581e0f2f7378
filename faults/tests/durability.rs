//! Crash scenarios with a data directory: every replica keeps its data on
//! its own Docker volume (`HEARSAY_DATA_DIR=/data`), and the whole cluster
//! is SIGKILLed at once under write load, twice, then started again.
//!
//! Nothing survives in any replica's memory and no replica can hand its
//! writes to another, so everything acknowledged must come back from disk:
//! unlike the in-memory scenarios, a write lost with a killed replica is
//! not excused. A SIGKILL is a process crash, not a power loss: the kernel
//! keeps what the process had written, so `sync = "interval"` (acknowledged
//! once the OS has it) must lose nothing here either. Only a power loss may
//! take its last `sync_interval_ms`; a scenario cannot cut the power, so it
//! asserts the process-crash promise and reports, for any loss, whether it
//! was acknowledged within that window before the kill.
//!
//! `HEARSAY_FAULT_SEED=N` replays a run (see `docs/FAULTS.md`).

use std::time::Duration;

use hearsay_faults::nemesis::{Fault, Round, Schedule};
use hearsay_faults::scenario::{run_and_assert, seed_from_env, Config};

/// Load, kill everything for 2 s, restart and load for 4 s, kill again,
/// restart and load for 3 s more (reads after the last restart must see
/// what was acknowledged before it).
fn two_cluster_crashes() -> Schedule {
    let load = |secs| Round {
        faults: vec![],
        on: Duration::from_secs(secs),
        off: Duration::ZERO,
    };
    let crash = |off_secs| Round {
        faults: vec![Fault::KillAll],
        on: Duration::from_secs(2),
        off: Duration::from_secs(off_secs),
    };
    Schedule {
        rounds: vec![load(3), crash(4), crash(0), load(3)],
    }
}

fn durable_config(name: &str, sync: &str) -> Config {
    let seed = seed_from_env();
    let mut config = Config::new(name, seed, two_cluster_crashes());
    config.cluster.data_volumes = true;
    config
        .cluster
        .env
        .push(("HEARSAY_SYNC".to_owned(), sync.to_owned()));
    config.kills_excuse_losses = false;
    config
}

/// `sync = "always"`: a write is acknowledged once it is on disk, so no
/// acknowledged write may be lost, and causality holds across the crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_killed_with_sync_always() {
    let config = durable_config("kill-all-sync-always", "always");
    let report = run_and_assert(config).await;
    assert_eq!(report.lost_to_kill, 0, "{}", report.summary());
}

/// `sync = "interval"` (100 ms): acknowledged once the OS has it. After a
/// SIGKILL of every process nothing acknowledged may be lost; the summary
/// also counts losses within the 100 ms window before the kill (what only
/// a power loss may take), which must be zero too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_killed_with_sync_interval() {
    let mut config = durable_config("kill-all-sync-interval", "interval");
    let window = Duration::from_millis(100);
    config.cluster.env.push((
        "HEARSAY_SYNC_INTERVAL_MS".to_owned(),
        window.as_millis().to_string(),
    ));
    config.sync_window = Some(window);
    let report = run_and_assert(config).await;
    assert_eq!(report.lost_in_sync_window, Some(0), "{}", report.summary());
    assert_eq!(report.lost_to_kill, 0, "{}", report.summary());
}
