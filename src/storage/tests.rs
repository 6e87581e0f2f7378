//! Unit tests of [`super`]: round trips, compaction, crashes at any byte
//! (a property test), and damage done on purpose (a record with a wrong
//! digest, a damaged state, a torn tail, flipped bytes anywhere): what
//! comes back is what was written, or the open fails with an error naming
//! the directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::core::{Dot, Origin, VClock};

const ORIGIN: &str = "127.0.0.1:9000";

fn version(key: &str, value: Option<&str>, seq: u64) -> Version {
    let origin = Origin::new(ORIGIN, 7);
    let mut deps = VClock::new();
    deps.raise(&origin, seq);
    Version {
        key: key.into(),
        value: value.map(Into::into),
        dot: Dot { origin, seq },
        lamport: seq,
        deps,
    }
}

fn state_for(versions: &[Version]) -> DurableState {
    let mut clock = VClock::new();
    for v in versions {
        clock.raise(&v.dot.origin, v.dot.seq);
    }
    DurableState {
        incarnation: 7,
        lamport: versions.iter().map(|v| v.lamport).max().unwrap_or(0),
        clock,
        horizon: VClock::new(),
        cluster: 42,
    }
}

/// Writes `count` versions (keys `k0`…), `per_batch` per commit, with
/// `sync`; returns every version written.
fn fill(dir: &Path, count: u64, per_batch: usize, sync: SyncPolicy) -> Vec<Version> {
    let (mut disk, recovered) = Disk::open_collected(dir).unwrap();
    assert!(recovered.state.is_none() && recovered.versions.is_empty());
    let all: Vec<Version> = (1..=count)
        .map(|i| version(&format!("k{i}"), Some(&format!("\"value {i}\"")), i))
        .collect();
    for (n, chunk) in all.chunks(per_batch).enumerate() {
        let written = &all[..(n * per_batch + chunk.len())];
        disk.commit(chunk, &[], &state_for(written), sync).unwrap();
    }
    all
}

fn sorted(versions: impl IntoIterator<Item = Version>) -> Vec<Version> {
    let mut versions: Vec<Version> = versions.into_iter().collect();
    versions.sort_by(|a, b| a.key.cmp(&b.key));
    versions
}

#[test]
fn what_is_committed_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 50, 7, SyncPolicy::Always);
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    assert_eq!(recovered.state, Some(state_for(&all)));
    assert_eq!(sorted(recovered.versions.into_values()), sorted(all));
}

#[test]
fn keys_the_store_dropped_leave_the_disk_with_the_state_that_claims_the_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 3, 3, SyncPolicy::Never);
    let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
    let mut newer = state_for(&all);
    newer.lamport = 99;
    // The store collected k2 and took a new k4 since the last batch.
    let k4 = version("k4", Some("\"four\""), 4);
    disk.commit(
        std::slice::from_ref(&k4),
        &["k2".into()],
        &newer,
        SyncPolicy::Always,
    )
    .unwrap();
    drop(disk);
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.state, Some(newer));
    let keys: Vec<String> = sorted(recovered.versions.into_values())
        .iter()
        .map(|v| v.key.to_string())
        .collect();
    assert_eq!(keys, ["k1", "k3", "k4"]);
}

/// The log files of `dir`, oldest first.
fn logs(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect()
}

/// The frames of `file`: where each record lies.
fn frames_of(file: &Path) -> Vec<format::Frame> {
    format::frames(&std::fs::read(file).unwrap()).0
}

/// Flips one byte inside the body of record `index` of `file`.
fn damage_record(file: &Path, index: usize) {
    let frame = frames_of(file)[index];
    let mut bytes = std::fs::read(file).unwrap();
    bytes[frame.end - 1] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_record_with_a_wrong_digest_is_dropped_and_counted_and_the_directory_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    // One batch: five versions, then the state.
    let all = fill(dir.path(), 5, 5, SyncPolicy::Always);
    damage_record(&logs(dir.path())[0], 2);
    let (mut disk, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 1);
    let mut expected = all.clone();
    expected.remove(2);
    assert_eq!(
        sorted(recovered.versions.into_values()),
        sorted(expected.clone())
    );

    // The new life claims no clock; the directory is rewritten without the
    // damaged record, so the next start finds none.
    let mut fresh = state_for(&[]);
    fresh.incarnation = 8;
    disk.begin_life(&fresh).unwrap();
    drop(disk);
    let (_, again) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(again.dropped, 0);
    assert_eq!(again.state, Some(fresh));
    assert_eq!(sorted(again.versions.into_values()), sorted(expected));
}

#[test]
fn many_records_decoded_in_parallel_come_back_and_damaged_ones_are_dropped() {
    // More records than one thread decodes alone, in one file.
    let dir = tempfile::tempdir().unwrap();
    let count = 3 * super::replay::PARALLEL_FROM as u64 + 17;
    let all = fill(dir.path(), count, 2000, SyncPolicy::Never);
    let log = &logs(dir.path())[0];
    // Records 0..2000 are the first batch's versions, 2000 its state.
    let damaged = [5usize, 2001 + 7, 2 * 2001 + 1500];
    for &index in &damaged {
        damage_record(log, index);
    }
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, damaged.len());
    let lost = [5usize, 2000 + 7, 2 * 2000 + 1500];
    let expected: Vec<Version> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(i))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(sorted(recovered.versions.into_values()), sorted(expected));
}

#[test]
fn the_fsync_beside_the_commits_reaches_the_active_log() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 10, 5, SyncPolicy::Interval);
    let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
    let handle = disk.sync_handle().unwrap();
    let before = handle.metadata().unwrap().len();
    let more = vec![version("k11", Some("\"eleven\""), 11)];
    let mut written = all.clone();
    written.extend(more.clone());
    disk.commit(&more, &[], &state_for(&written), SyncPolicy::Interval)
        .unwrap();
    assert!(
        handle.metadata().unwrap().len() > before,
        "the same file grew"
    );
    handle.sync_data().unwrap();
}

#[test]
fn a_damaged_state_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // Two batches: a damaged state followed by a sound batch is damage, not
    // a torn tail.
    fill(dir.path(), 4, 2, SyncPolicy::Always);
    damage_record(&logs(dir.path())[0], 2);
    let error = Disk::open_collected(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("stored state is damaged"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = Disk::open_collected(dir.path()).unwrap();
    let error = Disk::open_collected(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("in use by another process"), "{error}");
    drop(first);
    assert!(Disk::open_collected(dir.path()).is_ok());
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn a_torn_last_batch_is_dropped_whole_and_cut_off_before_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 40, 10, SyncPolicy::Always);
    let log = logs(dir.path())[0].clone();
    let len = std::fs::metadata(&log).unwrap().len();
    // Cut into the last batch (10 versions and a state: well over 20 bytes).
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 20).unwrap();
    drop(file);
    let (mut disk, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    // The first three batches, with their state: never a state that covers
    // a version the disk lacks.
    assert_eq!(recovered.state, Some(state_for(&all[..30])));
    assert_eq!(
        sorted(recovered.versions.into_values()),
        sorted(all[..30].to_vec())
    );
    // What is appended next follows the last whole batch, not the cut one.
    let again = &all[30..35];
    disk.commit(again, &[], &state_for(&all[..35]), SyncPolicy::Always)
        .unwrap();
    drop(disk);
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    assert_eq!(recovered.state, Some(state_for(&all[..35])));
    assert_eq!(
        sorted(recovered.versions.into_values()),
        sorted(all[..35].to_vec())
    );
}

#[test]
fn compaction_keeps_each_key_once_and_the_directory_small() {
    let dir = tempfile::tempdir().unwrap();
    let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
    disk.set_seal_at(4096);
    let mut model: HashMap<String, Version> = HashMap::new();
    let mut seq = 0;
    let mut written = Vec::new();
    for round in 0..300u64 {
        let mut batch = Vec::new();
        for k in 0..4 {
            seq += 1;
            let v = version(&format!("k{}", (round * 4 + k) % 37), Some("\"v\""), seq);
            model.insert(v.key.to_string(), v.clone());
            batch.push(v);
        }
        written.extend(batch.clone());
        let removed: Vec<Key> = if round % 10 == 9 {
            let key = format!("k{}", round % 37);
            model.remove(&key);
            written.retain(|v| *v.key != *key);
            vec![key.into()]
        } else {
            vec![]
        };
        disk.commit(&batch, &removed, &state_for(&written), SyncPolicy::Never)
            .unwrap();
        if round % 50 == 0 {
            disk.settle();
        }
    }
    disk.settle();
    let state = state_for(&written);
    drop(disk);
    let on_disk: u64 = files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        on_disk < 4 * 4096 + 37 * 200,
        "{on_disk} bytes: older generations were not removed"
    );
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    assert_eq!(recovered.state, Some(state));
    let mut expected: Vec<Version> = model.into_values().collect();
    expected = sorted(expected);
    assert_eq!(sorted(recovered.versions.into_values()), expected);
}

#[test]
fn an_interrupted_compaction_and_the_files_a_snapshot_replaced_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 6, 3, SyncPolicy::Always);
    // A compaction that never finished, and an old log a finished one had
    // not removed yet.
    std::fs::write(format::partial_path(dir.path(), 9), b"half a snapshot").unwrap();
    let stale = format::path_of(dir.path(), format::FileKind::Log, 0);
    std::fs::write(&stale, b"replaced").unwrap();
    let snapshot = format::path_of(dir.path(), format::FileKind::Snapshot, 1);
    std::fs::copy(&logs(dir.path())[1], &snapshot).unwrap();
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    assert_eq!(recovered.state, Some(state_for(&all)));
    assert!(!format::partial_path(dir.path(), 9).exists());
    assert!(!stale.exists());
}

/// One step of a random history: a batch of writes to a few keys, maybe a
/// removal.
#[derive(Clone, Debug)]
struct Step {
    keys: Vec<u8>,
    remove: Option<u8>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::collection::vec(0u8..12, 0..5),
        proptest::option::weighted(0.2, 0u8..12),
    )
        .prop_map(|(keys, remove)| Step { keys, remove })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A crash can leave the last file cut at any byte (a power loss, a
    /// write the process did not finish): what comes back is exactly the
    /// batches that were whole, with the state of the last of them —
    /// whatever compactions ran before.
    #[test]
    fn a_crash_at_any_byte_recovers_exactly_the_whole_batches(
        steps in proptest::collection::vec(step(), 1..40),
        seal_at in 300u64..3000,
        cut in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
        disk.set_seal_at(seal_at);
        let mut model: HashMap<String, Version> = HashMap::new();
        // After each batch: the log it went to, where it ends, the model.
        let mut history: Vec<(PathBuf, u64, HashMap<String, Version>, DurableState)> = Vec::new();
        let mut seq = 0;
        for (n, step) in steps.iter().enumerate() {
            let mut batch: Vec<Version> = Vec::new();
            for k in &step.keys {
                seq += 1;
                let v = version(&format!("k{k}"), Some("\"v\""), seq);
                batch.retain(|b| b.key != v.key);
                batch.push(v);
            }
            let removed: Vec<Key> = step
                .remove
                .map(|k| format!("k{k}"))
                .filter(|k| !batch.iter().any(|v| *v.key == **k))
                .map(Key::from)
                .into_iter()
                .collect();
            for v in &batch {
                model.insert(v.key.to_string(), v.clone());
            }
            for k in &removed {
                model.remove(&**k);
            }
            let mut state = state_for(&batch);
            state.lamport = n as u64;
            disk.commit(&batch, &removed, &state, SyncPolicy::Never).unwrap();
            let active = logs(dir.path()).pop().unwrap();
            let len = std::fs::metadata(&active).unwrap().len();
            history.push((active, len, model.clone(), state));
        }
        disk.settle();
        drop(disk);
        // Cut the newest log somewhere.
        let newest = logs(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&newest).unwrap().len();
        let at = (len as f64 * cut) as u64;
        std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(at).unwrap();
        // The last batch wholly before the cut (or in an older file).
        let survivor = history
            .iter()
            .rev()
            .find(|(file, end, _, _)| *file != newest || *end <= at);
        let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
        prop_assert_eq!(recovered.dropped, 0);
        match survivor {
            None => {
                prop_assert_eq!(recovered.state, None);
                prop_assert!(recovered.versions.is_empty());
            }
            Some((_, _, expected, state)) => {
                prop_assert_eq!(recovered.state.as_ref(), Some(state));
                let mut expected: Vec<Version> = expected.values().cloned().collect();
                expected = sorted(expected);
                prop_assert_eq!(sorted(recovered.versions.into_values()), expected);
            }
        }
    }
}

#[test]
fn flipped_bytes_never_come_back_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 30, 6, SyncPolicy::Always);
    let written: Vec<Version> = all.clone();
    let pristine = tempfile::tempdir().unwrap();
    for file in files(dir.path()) {
        let target = pristine.path().join(file.strip_prefix(dir.path()).unwrap());
        std::fs::copy(&file, &target).unwrap();
    }
    let mut refused = 0;
    let mut opened = 0;
    for file in files(pristine.path()) {
        let used = std::fs::metadata(&file).unwrap().len() as usize;
        // Positions spread over each file.
        for step in 1..=11 {
            let at = used * step / 12;
            if at >= used {
                continue;
            }
            let copy = tempfile::tempdir().unwrap();
            for source in files(pristine.path()) {
                let target = copy
                    .path()
                    .join(source.strip_prefix(pristine.path()).unwrap());
                let mut content = std::fs::read(&source).unwrap();
                if source == file {
                    content[at] ^= 0x5a;
                }
                std::fs::write(&target, content).unwrap();
            }
            match Disk::open_collected(copy.path()) {
                Err(_) => refused += 1,
                Ok((_, recovered)) => {
                    opened += 1;
                    for version in recovered.versions.values() {
                        assert!(
                            written.contains(version),
                            "{} at {at}: came back as {version:?}",
                            file.display()
                        );
                    }
                }
            }
        }
    }
    assert!(refused + opened > 0);
}

#[test]
fn a_recovered_replica_starts_a_new_life_above_the_stored_one_and_writes_it_at_once() {
    use crate::config::Config;
    use crate::node::Node;
    use crate::transport::memory::SimNetwork;

    let dir = tempfile::tempdir().unwrap();
    let written = vec![version("k1", Some("\"one\""), 1)];
    // A stored life an hour ahead of the wall clock: the clock stepped back
    // across the restart. The new life must still be above it.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut state = state_for(&written);
    state.incarnation = wall + 3_600_000;
    {
        let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
        disk.commit(&written, &[], &state, SyncPolicy::Always)
            .unwrap();
    }
    let mut config = Config::for_address(ORIGIN, &[ORIGIN.to_string()]);
    config.data_dir = Some(dir.path().to_path_buf());
    let network = SimNetwork::new(1);
    let node = Node::open(config, network.endpoint(ORIGIN), 1).unwrap();
    assert_eq!(node.incarnation(), state.incarnation + 1);
    node.inspect(|replica| {
        assert_eq!(replica.clock(), &state.clock);
        assert_eq!(replica.cluster(), state.cluster);
        assert_eq!(
            replica.store().get("k1").map(|v| v.to_version()),
            Some(written[0].clone())
        );
        replica.check_invariants().unwrap();
    });
    drop(node);
    let (_, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(
        recovered.state.map(|s| s.incarnation),
        Some(state.incarnation + 1),
        "the new life is on disk before the replica serves"
    );
}

#[tokio::test]
async fn one_commit_releases_every_write_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = Disk::open_collected(dir.path()).unwrap();
    let storage = std::sync::Arc::new(Persister::new(
        disk,
        SyncPolicy::Always,
        state_for(&[]),
        false,
    ));
    let written: Vec<Version> = (1..=8)
        .map(|i| version(&format!("k{i}"), Some("1"), i))
        .collect();
    let tickets: Vec<u64> = written.iter().map(|_| storage.ticket()).collect();
    let waiters: Vec<_> = tickets
        .iter()
        .map(|&ticket| {
            let storage = storage.clone();
            tokio::spawn(async move { storage.wait(ticket).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert!(waiters.iter().all(|w| !w.is_finished()), "released early");
    // One batch, one fsync, carrying all eight writes.
    let batch_ticket = storage.issued();
    // A write made after the batch was taken is not in it.
    let after = storage.ticket();
    let later = {
        let storage = storage.clone();
        tokio::spawn(async move { storage.wait(after).await })
    };
    storage
        .commit(Batch {
            ticket: batch_ticket,
            versions: written.clone(),
            removed: vec![],
            state: state_for(&written),
        })
        .await
        .unwrap();
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    assert_eq!(storage.persisted(), state_for(&written).clock);
    tokio::task::yield_now().await;
    assert!(!later.is_finished(), "released by a batch it was not in");
    // Once closed, a write is told its durability is unknown, not held.
    storage.close();
    assert!(later.await.unwrap().is_err());
    let late = storage.ticket();
    assert!(storage.wait(late).await.is_err());
}

#[test]
fn a_node_recovers_the_snapshot_and_the_changes_after_it_as_the_disk_holds_them() {
    use crate::config::Config;
    use crate::node::Node;
    use crate::transport::memory::SimNetwork;

    let dir = tempfile::tempdir().unwrap();
    let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
    disk.set_seal_at(512);
    let mut written: Vec<Version> = Vec::new();
    let mut commit = |disk: &mut Disk, versions: Vec<Version>, removed: Vec<Key>| {
        written.retain(|w| !versions.iter().any(|v| v.key == w.key) && !removed.contains(&w.key));
        written.extend(versions.iter().cloned());
        disk.commit(&versions, &removed, &state_for(&written), SyncPolicy::Never)
            .unwrap();
    };
    for i in 1..=40 {
        commit(
            &mut disk,
            vec![version(&format!("k{}", i % 13), Some("\"v\""), i)],
            vec![],
        );
    }
    disk.settle();
    assert!(
        files(dir.path())
            .iter()
            .any(|f| f.to_string_lossy().contains("snap-")),
        "a snapshot to recover from"
    );
    // After it: a removal, and a key removed then written again with a
    // version that does not beat the snapshot's (the removal decides).
    commit(&mut disk, vec![], vec!["k1".into()]);
    commit(&mut disk, vec![], vec!["k2".into()]);
    commit(&mut disk, vec![version("k2", Some("\"again\""), 2)], vec![]);
    drop(disk);
    let (_, expected) = Disk::open_collected(dir.path()).unwrap();
    assert!(!expected.versions.contains_key("k1"));
    assert_eq!(expected.versions["k2"].value.as_deref(), Some("\"again\""));

    let mut config = Config::for_address(ORIGIN, &[ORIGIN.to_string()]);
    config.data_dir = Some(dir.path().to_path_buf());
    let network = SimNetwork::new(1);
    let node = Node::open(config, network.endpoint(ORIGIN), 1).unwrap();
    node.inspect(|replica| {
        let held: Vec<Version> = replica.store().versions().map(|v| v.to_version()).collect();
        assert_eq!(sorted(held), sorted(expected.versions.values().cloned()));
        replica.check_invariants().unwrap();
    });
}

#[test]
fn a_snapshot_cut_short_is_damage_and_never_cuts_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut disk, _) = Disk::open_collected(dir.path()).unwrap();
    disk.set_seal_at(256);
    let all: Vec<Version> = (1..=20)
        .map(|i| version(&format!("k{i}"), Some("\"v\""), i))
        .collect();
    for (n, v) in all.iter().enumerate() {
        disk.commit(
            std::slice::from_ref(v),
            &[],
            &state_for(&all[..=n]),
            SyncPolicy::Never,
        )
        .unwrap();
    }
    disk.settle();
    drop(disk);
    for log in logs(dir.path()) {
        std::fs::remove_file(log).unwrap();
    }
    let snapshot = files(dir.path())
        .into_iter()
        .find(|f| f.to_string_lossy().contains("snap-"))
        .expect("a snapshot");
    let len = std::fs::metadata(&snapshot).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&snapshot)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (mut disk, recovered) = Disk::open_collected(dir.path()).unwrap();
    assert!(recovered.dropped > 0, "a snapshot is complete or damaged");
    assert_eq!(recovered.state, None, "no state vouches for what was kept");
    for version in recovered.versions.values() {
        assert!(all.contains(version));
    }
    let fresh = state_for(&[]);
    disk.begin_life(&fresh).unwrap();
    drop(disk);
    let (_, again) = Disk::open_collected(dir.path()).unwrap();
    assert_eq!(again.dropped, 0, "rewritten without the damage");
    assert_eq!(again.state, Some(fresh));
    assert_eq!(again.versions.len(), recovered.versions.len());
}
