//! A/B of the storage engines considered for `data_dir` — two embedded
//! engines (redb, fjall) and hearsay's own append-only log
//! (`hearsay::storage::Disk`, which replaced fjall): throughput of durable
//! batched writes (one fsync per batch, as group commit does), time to
//! reopen and read everything back, and bytes on disk per key. The log's
//! records carry a whole version (its dot and dependencies too), the
//! engines' only the key and value. Run:
//! `cargo run --release -p hearsay-bench --bin engine_ab`.

use std::path::Path;
use std::time::{Duration, Instant};

const KEYS: usize = 20_000;
const BATCH: usize = 16;
const VALUE_BYTES: usize = 120;

fn key(i: usize) -> Vec<u8> {
    format!("key-{:08}", i % (KEYS / 2)).into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i:016}").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

struct Outcome {
    writes_per_s: f64,
    reopen: Duration,
    bytes_per_key: f64,
}

impl Outcome {
    /// After `n` keys were read back from `dir`, reopened at `start`.
    fn read_back(writes_per_s: f64, start: Instant, n: usize, dir: &Path) -> Outcome {
        let reopen = start.elapsed();
        assert_eq!(n, KEYS / 2);
        Outcome {
            writes_per_s,
            reopen,
            bytes_per_key: dir_bytes(dir) as f64 / n as f64,
        }
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("versions");

fn redb_run(dir: &Path) -> Outcome {
    let file = dir.join("db.redb");
    let db = redb::Database::create(&file).unwrap();
    let start = Instant::now();
    for batch in 0..KEYS / BATCH {
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for i in batch * BATCH..(batch + 1) * BATCH {
                table.insert(&key(i)[..], &value(i)[..]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let writes_per_s = KEYS as f64 / start.elapsed().as_secs_f64();
    drop(db);
    let start = Instant::now();
    let db = redb::Database::create(&file).unwrap();
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(TABLE).unwrap();
    let n = redb::ReadableTable::iter(&table).unwrap().count();
    Outcome::read_back(writes_per_s, start, n, dir)
}

fn fjall_run(dir: &Path) -> Outcome {
    let open = || {
        let keyspace = fjall::Config::new(dir)
            .manual_journal_persist(true)
            .open()
            .unwrap();
        let part = keyspace
            .open_partition("versions", Default::default())
            .unwrap();
        (keyspace, part)
    };
    let (keyspace, part) = open();
    let start = Instant::now();
    for batch in 0..KEYS / BATCH {
        let mut b = keyspace.batch();
        for i in batch * BATCH..(batch + 1) * BATCH {
            b.insert(&part, key(i), value(i));
        }
        b.commit().unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let writes_per_s = KEYS as f64 / start.elapsed().as_secs_f64();
    drop(part);
    drop(keyspace);
    let start = Instant::now();
    let (_keyspace, part) = open();
    let n = part.iter().count();
    Outcome::read_back(writes_per_s, start, n, dir)
}

fn log_run(dir: &Path) -> Outcome {
    use hearsay::config::SyncPolicy;
    use hearsay::core::{Dot, DurableState, Origin, VClock, Version};
    use hearsay::storage::{Disk, SnapshotSink};

    struct Count(usize);
    impl SnapshotSink for Count {
        fn expect(&mut self, _: usize) {}
        fn version(&mut self, _: Version) {
            self.0 += 1;
        }
    }
    let origin = Origin::new("127.0.0.1:8090", 1);
    let version = |i: usize| {
        let seq = i as u64 + 1;
        Version {
            key: String::from_utf8(key(i)).unwrap().into(),
            value: Some(format!("\"{}\"", String::from_utf8(value(i)).unwrap()).into()),
            dot: Dot {
                origin: origin.clone(),
                seq,
            },
            lamport: seq,
            deps: VClock::from_pairs([(origin.clone(), seq)]),
        }
    };
    let state = |seq: u64| DurableState {
        incarnation: 1,
        lamport: seq,
        clock: VClock::from_pairs([(origin.clone(), seq)]),
        horizon: VClock::new(),
        cluster: 1,
    };
    let (mut disk, _) = Disk::open(dir, &mut Count(0)).unwrap();
    let start = Instant::now();
    for batch in 0..KEYS / BATCH {
        let versions: Vec<Version> = (batch * BATCH..(batch + 1) * BATCH).map(version).collect();
        let last = ((batch + 1) * BATCH) as u64;
        disk.commit(&versions, &[], &state(last), SyncPolicy::Always)
            .unwrap();
    }
    let writes_per_s = KEYS as f64 / start.elapsed().as_secs_f64();
    drop(disk);
    let start = Instant::now();
    let mut count = Count(0);
    let (_disk, recovered) = Disk::open(dir, &mut count).unwrap();
    let n = count.0 + recovered.changes.values().flatten().count();
    Outcome::read_back(writes_per_s, start, n, dir)
}

fn main() {
    println!(
        "{KEYS} writes of {VALUE_BYTES}-byte values over {} keys, {BATCH} per durable commit",
        KEYS / 2
    );
    println!("| engine | durable writes/s | reopen + full scan | bytes on disk per key |");
    println!("|---|---:|---:|---:|");
    for (name, run) in [
        ("redb 2.6", redb_run as fn(&Path) -> Outcome),
        ("fjall 2.11", fjall_run),
        ("hearsay log", log_run),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = run(dir.path());
        println!(
            "| {name} | {:.0} | {:.1} ms | {:.0} |",
            o.writes_per_s,
            o.reopen.as_secs_f64() * 1e3,
            o.bytes_per_key
        );
    }
}
