//! Unit tests of [`super`]: round trips, and damage done on purpose (a
//! record with a wrong digest, a damaged state, a torn journal tail,
//! flipped bytes anywhere): what comes back is what was written, or the
//! open fails with an error naming the directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
    let (mut disk, recovered) = Disk::open(dir).unwrap();
    assert!(recovered.state.is_none() && recovered.versions.is_empty());
    let all: Vec<Version> = (1..=count)
        .map(|i| version(&format!("k{i}"), Some(&format!("\"value {i}\"")), i))
        .collect();
    for (n, chunk) in all.chunks(per_batch).enumerate() {
        let written = &all[..(n * per_batch + chunk.len())];
        assert!(disk
            .commit(chunk, &state_for(written), written.len(), None, sync)
            .unwrap());
    }
    all
}

fn sorted(mut versions: Vec<Version>) -> Vec<Version> {
    versions.sort_by(|a, b| a.key.cmp(&b.key));
    versions
}

#[test]
fn what_is_committed_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 50, 7, SyncPolicy::Always);
    let (disk, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    assert_eq!(recovered.state, Some(state_for(&all)));
    assert_eq!(sorted(recovered.versions), sorted(all));
    assert_eq!(disk.key_count(), 50);
}

#[test]
fn a_store_that_dropped_keys_gets_no_state_until_they_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 3, 3, SyncPolicy::Never);
    let (mut disk, _) = Disk::open(dir.path()).unwrap();
    let mut newer = state_for(&all);
    newer.lamport = 99;
    // The store now holds two keys (k2 collected): the state is held back…
    assert!(!disk
        .commit(&[], &newer, 2, None, SyncPolicy::Always)
        .unwrap());
    let held: HashSet<Key> = ["k1".into(), "k3".into()].into_iter().collect();
    // …until the batch removes k2 with it.
    assert!(disk
        .commit(&[], &newer, 2, Some(&held), SyncPolicy::Always)
        .unwrap());
    drop(disk);
    let (_, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.state, Some(newer));
    let keys: Vec<String> = sorted(recovered.versions)
        .iter()
        .map(|v| v.key.to_string())
        .collect();
    assert_eq!(keys, ["k1", "k3"]);
}

#[test]
fn a_record_with_a_wrong_digest_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 5, 5, SyncPolicy::Always);
    {
        let (disk, _) = Disk::open(dir.path()).unwrap();
        let mut record = encode(&all[2]);
        let last = record.len() - 2;
        record[last] ^= 0x01; // one bit of the value's text
        disk.versions.insert("k3", record).unwrap();
        disk.sync().unwrap();
    }
    let (_, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 1);
    let mut expected = all.clone();
    expected.remove(2);
    assert_eq!(sorted(recovered.versions), sorted(expected));
}

#[test]
fn many_records_decoded_in_parallel_come_back_and_damaged_ones_leave_when_a_life_begins() {
    // More records than one decoding chunk holds, so several threads share
    // them; damaged records in different chunks.
    let dir = tempfile::tempdir().unwrap();
    let count = 3 * DECODE_CHUNK as u64 + 17;
    let all = fill(dir.path(), count, 2000, SyncPolicy::Never);
    let damaged = [5usize, DECODE_CHUNK + 1, 3 * DECODE_CHUNK + 3];
    {
        let (disk, _) = Disk::open(dir.path()).unwrap();
        for &i in &damaged {
            let mut record = encode(&all[i]);
            let last = record.len() - 2;
            record[last] ^= 0x01;
            disk.versions.insert(&*all[i].key, record).unwrap();
        }
        // A sound record filed under another key is damaged too.
        disk.versions.insert("k1", encode(&all[1])).unwrap();
        disk.sync().unwrap();
    }
    let (mut disk, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.dropped, damaged.len() + 1);
    let mut expected: Vec<Version> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && !damaged.contains(i))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(sorted(recovered.versions), sorted(expected.clone()));
    assert_eq!(disk.key_count(), count as usize);

    let mut state = state_for(&[]);
    state.incarnation = 8;
    disk.begin_life(&state).unwrap();
    assert_eq!(disk.key_count(), expected.len());
    drop(disk);
    let (disk, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0, "the damaged records left the disk");
    assert_eq!(recovered.state, Some(state));
    assert_eq!(disk.key_count(), expected.len());
    expected = sorted(expected);
    assert_eq!(sorted(recovered.versions), expected);
}

#[test]
fn the_periodic_fsync_finds_the_journal_being_written() {
    // `sync_journal` relies on the engine's layout: it must find the file
    // that a commit handed to the OS just grew, or the interval fsync
    // would sync nothing.
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 10, 5, SyncPolicy::Interval);
    let (mut disk, _) = Disk::open(dir.path()).unwrap();
    let synced = sync_journal(dir.path()).unwrap().expect("a journal");
    let before = std::fs::metadata(&synced).unwrap().len();
    let more = vec![version("k11", Some("\"eleven\""), 11)];
    let mut written = all.clone();
    written.extend(more.clone());
    assert!(disk
        .commit(&more, &state_for(&written), 11, None, SyncPolicy::Interval)
        .unwrap());
    assert_eq!(sync_journal(dir.path()).unwrap().as_ref(), Some(&synced));
    assert!(std::fs::metadata(&synced).unwrap().len() > before);
}

#[test]
fn a_damaged_state_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2, 2, SyncPolicy::Always);
    {
        let (disk, _) = Disk::open(dir.path()).unwrap();
        disk.meta
            .insert(STATE_KEY, b"garbage!garbage".to_vec())
            .unwrap();
        disk.sync().unwrap();
    }
    let error = Disk::open(dir.path()).err().expect("refused").to_string();
    assert!(error.contains("stored state is damaged"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Where the written part of a file ends (fjall preallocates its journal
/// with zeros).
fn used_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)
}

/// The journal file holding the newest writes.
fn newest_journal(dir: &Path) -> PathBuf {
    files(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("journal"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .expect("a journal file")
}

#[test]
fn a_torn_last_batch_is_dropped_whole_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 40, 10, SyncPolicy::Always);
    let journal = newest_journal(dir.path());
    let used = used_len(&std::fs::read(&journal).unwrap()) as u64;
    // Cut into the last batch (10 versions and a state: well over 20 bytes).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(used - 20).unwrap();
    drop(file);
    let (_, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(recovered.dropped, 0);
    // The first three batches, with their state: never a state that covers
    // a version the disk lacks.
    assert_eq!(recovered.state, Some(state_for(&all[..30])));
    assert_eq!(sorted(recovered.versions), sorted(all[..30].to_vec()));
}

#[test]
fn flipped_bytes_never_come_back_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let all = fill(dir.path(), 30, 6, SyncPolicy::Always);
    let written: Vec<Version> = all.clone();
    let pristine = tempfile::tempdir().unwrap();
    for file in files(dir.path()) {
        let target = pristine.path().join(file.strip_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
    let mut refused = 0;
    let mut opened = 0;
    for file in files(pristine.path()) {
        let used = used_len(&std::fs::read(&file).unwrap());
        // Positions spread over the written part of each file.
        for step in 1..=5 {
            let at = used * step / 6;
            if at >= used {
                continue;
            }
            let copy = tempfile::tempdir().unwrap();
            for source in files(pristine.path()) {
                let target = copy
                    .path()
                    .join(source.strip_prefix(pristine.path()).unwrap());
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let mut content = std::fs::read(&source).unwrap();
                if source == file {
                    content[at] ^= 0x5a;
                }
                std::fs::write(&target, content).unwrap();
            }
            match Disk::open(copy.path()) {
                Err(_) => refused += 1,
                Ok((_, recovered)) => {
                    opened += 1;
                    for version in &recovered.versions {
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
        let (mut disk, _) = Disk::open(dir.path()).unwrap();
        assert!(disk
            .commit(&written, &state, 1, None, SyncPolicy::Always)
            .unwrap());
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
    let (_, recovered) = Disk::open(dir.path()).unwrap();
    assert_eq!(
        recovered.state.map(|s| s.incarnation),
        Some(state.incarnation + 1),
        "the new life is on disk before the replica serves"
    );
}

#[tokio::test]
async fn one_commit_releases_every_write_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = Disk::open(dir.path()).unwrap();
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
    storage
        .commit(Batch {
            ticket: storage.issued(),
            versions: written.clone(),
            state: state_for(&written),
            store_keys: written.len(),
            held: None,
        })
        .await
        .unwrap();
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    assert_eq!(storage.persisted(), state_for(&written).clock);
    // Once closed, a write is told its durability is unknown, not held.
    let late = storage.ticket();
    storage.close();
    assert!(storage.wait(late).await.is_err());
}
