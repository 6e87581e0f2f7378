//! End-to-end tests of the data directory (`data_dir`) with real `hearsay`
//! processes: a replica SIGKILLed under write load and restarted on the same
//! directory serves every write it acknowledged at once — while its peers
//! are frozen, so the data can only have come from its disk — in a new life,
//! and then catches up by delta; one away past `dead_member_grace_ms` takes
//! a snapshot instead and does not bring back what was deleted meanwhile.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{kvs_path, wait_until, Body, Cluster, Http};

/// Deadline for replication between running replicas.
const CATCH_UP: Duration = Duration::from_secs(15);

/// Writers running against the replica that will be killed.
const WRITERS: usize = 4;

/// A three-replica cluster whose replica 2 keeps its data in `dir` with
/// `sync`, the others in memory.
async fn cluster_with_disk(dir: &std::path::Path, sync: &str, extra: &[(&str, u64)]) -> Cluster {
    let mut builder = Cluster::builder(3).defer(2);
    for (key, value) in extra {
        builder = builder.set(key, value);
    }
    let mut cluster = builder.start().await;
    cluster.set_for(2, "data_dir", dir.display());
    cluster.set_for(2, "sync", sync);
    cluster.start_replica(2).await;
    cluster
}

/// Writes distinct keys to `addr` from [`WRITERS`] tasks until `stop`;
/// every acknowledged (key, value) goes into `acked`.
fn spawn_writers(
    http: &Http,
    addr: &str,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<Vec<(String, u64)>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|writer| {
            let (http, addr) = (http.clone(), addr.to_string());
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                // Bounded: the test kills the replica long before.
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let key = format!("w{writer}-{i}");
                    let body = Body::Json(json!({ "value": i }));
                    match http.try_send("PUT", &addr, &kvs_path(&key), body).await {
                        Ok(reply) if reply.status == 201 => acked.lock().unwrap().push((key, i)),
                        Ok(_) => {}
                        // The replica is gone: stop writing.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

async fn killed_under_load_then_restarted(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    // No stability horizon in this test: a write replica 2 applied and
    // shipped but had not yet stored when it was killed may otherwise reach
    // the peers' horizon, and a restarted replica whose recovered clock is
    // below a peer's horizon must take a snapshot (tombstones may have been
    // collected there). That is correct, but it is not the delta catch-up
    // this test is about, and whether it happens depends on when the kill
    // lands.
    let no_collection = [("gc_interval_ms", 3_600_000)];
    let mut cluster = cluster_with_disk(dir.path(), sync, &no_collection).await;
    let target = cluster.addr(2).to_string();
    let first_life = cluster.http.own_incarnation(&target).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = spawn_writers(&cluster.http, &target, &stop, &acked);
    wait_until(CATCH_UP, "200 writes acknowledged", || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() >= 200 }
    })
    .await;
    cluster.kill(2);
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Frozen peers answer nothing: whatever replica 2 serves now comes
    // from its own directory.
    cluster.pause(0);
    cluster.pause(1);
    cluster.start_replica(2).await;
    for (key, value) in &acked {
        assert_eq!(
            cluster.http.state_of(&target, key).await,
            Some(json!(value)),
            "{key}: an acknowledged write is missing after the restart ({sync})"
        );
    }
    let second_life = cluster.http.own_incarnation(&target).await;
    assert!(second_life > first_life, "{second_life} after {first_life}");

    // Back with its peers: it takes a write made elsewhere by delta, and
    // its recovered writes reach them.
    cluster.resume(0);
    cluster.resume(1);
    let mut client = cluster.session();
    client
        .put(cluster.addr(0), "after", json!("restart"))
        .await
        .expect_result(201, "created");
    wait_until(CATCH_UP, "the restarted replica has the new write", || {
        let (http, target) = (&cluster.http, &target);
        async move { http.state_of(target, "after").await == Some(json!("restart")) }
    })
    .await;
    let (last_key, last_value) = acked.last().unwrap().clone();
    wait_until(
        CATCH_UP,
        "the peers hold its last acknowledged write",
        || {
            let (http, addr, key) = (&cluster.http, cluster.addr(0), &last_key);
            async move { http.state_of(addr, key).await == Some(json!(last_value)) }
        },
    )
    .await;
    let transfers = cluster
        .http
        .metric(&target, "hearsay_state_transfers_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(transfers, 0.0, "caught up by snapshot, not by delta");
}

#[tokio::test]
async fn a_killed_replica_serves_its_acknowledged_writes_from_disk_sync_always() {
    killed_under_load_then_restarted("always").await;
}

#[tokio::test]
async fn a_killed_replica_serves_its_acknowledged_writes_from_disk_sync_interval() {
    killed_under_load_then_restarted("interval").await;
}

#[tokio::test]
async fn a_replica_away_past_the_grace_period_takes_a_snapshot_and_keeps_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let grace = [("dead_member_grace_ms", 300), ("gc_interval_ms", 100)];
    let mut cluster = cluster_with_disk(dir.path(), "always", &grace).await;
    let target = cluster.addr(2).to_string();
    let mut client = cluster.session();
    client
        .put(&target, "doomed", json!("doomed"))
        .await
        .expect_result(201, "created");
    wait_until(CATCH_UP, "replica 0 holds the doomed key", || {
        let (http, addr) = (&cluster.http, cluster.addr(0));
        async move { http.state_of(addr, "doomed").await.is_some() }
    })
    .await;
    cluster.kill(2);

    client
        .delete(cluster.addr(0), "doomed")
        .await
        .expect_result(200, "deleted");
    wait_until(
        CATCH_UP,
        "the others dropped replica 2 and the tombstone",
        || {
            let (cluster, target) = (&cluster, &target);
            async move {
                for i in [0, 1] {
                    let addr = cluster.addr(i);
                    let view = cluster.http.view(addr).await;
                    let tombstones = cluster.http.metric(addr, "hearsay_tombstones").await;
                    if view.contains(target) || tombstones != Some(0.0) {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;

    cluster.start_replica(2).await;
    wait_until(CATCH_UP, "the returning replica took a snapshot", || {
        let (http, target) = (&cluster.http, &target);
        async move {
            http.metric(target, "hearsay_state_transfers_total")
                .await
                .unwrap_or(0.0)
                >= 1.0
        }
    })
    .await;
    assert_eq!(
        cluster.http.state_of(&target, "doomed").await,
        None,
        "a key deleted while the replica was away came back"
    );
}

/// The data files of `dir` whose names start with `prefix` (`log-`,
/// `snap-`), oldest first.
fn data_files(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    files.sort();
    files
}

/// Flips the byte at `at` of `file` (of a stopped replica), bypassing the
/// replica: damage done on purpose.
fn flip_byte(file: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test]
async fn a_damaged_record_is_dropped_and_copied_again_and_a_damaged_state_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster_with_disk(dir.path(), "always", &[]).await;
    let target = cluster.addr(2).to_string();
    let mut client = cluster.session();
    for i in 1..=5 {
        client
            .put(&target, &format!("k{i}"), json!(i))
            .await
            .expect_result(201, "created");
    }
    wait_until(CATCH_UP, "replica 0 holds every write", || {
        let (http, addr) = (&cluster.http, cluster.addr(0));
        async move { http.state_of(addr, "k5").await == Some(json!(5)) }
    })
    .await;
    let (status, _) = cluster.terminate(2, CATCH_UP).await;
    assert!(status.success());

    // A record whose digest does not match: dropped, logged, and the key
    // comes back from the peers — never the damaged bytes. (The byte after
    // the key's MessagePack text, inside its version record.)
    let (log, at) = data_files(dir.path(), "log-")
        .into_iter()
        .find_map(|file| {
            let bytes = std::fs::read(&file).unwrap();
            let at = bytes.windows(3).position(|w| w == b"\xa2k1")?;
            Some((file, at + 3))
        })
        .expect("the version record of k1");
    flip_byte(&log, at);
    cluster.start_replica(2).await;
    assert!(
        cluster.log_tail(2, 200).contains("damaged records dropped"),
        "{}",
        cluster.log_tail(2, 40)
    );
    assert_eq!(
        cluster
            .http
            .metric(&target, "hearsay_storage_records_dropped_total")
            .await,
        Some(1.0)
    );
    wait_until(CATCH_UP, "the dropped key is copied again", || {
        let (http, target) = (&cluster.http, &target);
        async move {
            match http.state_of(target, "k1").await {
                None => false,
                Some(value) => {
                    assert_eq!(value, json!(1), "a damaged record was served");
                    true
                }
            }
        }
    })
    .await;
    assert_eq!(cluster.http.state_of(&target, "k5").await, Some(json!(5)));
    let (status, _) = cluster.terminate(2, CATCH_UP).await;
    assert!(status.success());

    // A damaged state: the replica cannot know its lives; it refuses to
    // start and says which directory to move away. The damage above made
    // the replica rewrite its directory as a snapshot ending with the new
    // life's state, which later batches follow.
    let snapshot = data_files(dir.path(), "snap-")
        .pop()
        .expect("the directory rewritten without the damaged record");
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    flip_byte(&snapshot, len - 1);
    cluster.spawn(2);
    wait_until(CATCH_UP, "the replica refuses to start", || {
        let exited = cluster.exited(2).is_some();
        async move { exited }
    })
    .await;
    let log = cluster.log_tail(2, 40);
    assert!(log.contains("stored state is damaged"), "{log}");
    assert!(log.contains(&dir.path().display().to_string()), "{log}");
}
