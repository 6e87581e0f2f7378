//! A/B of the two embedded engines considered for `data_dir` (redb, fjall):
//! throughput of durable batched writes (one fsync per batch, as group
//! commit does), time to reopen and read everything back, and bytes on disk
//! per key. Run: `cargo run --release -p hearsay-bench --bin engine_ab`.

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
    let reopen = start.elapsed();
    assert_eq!(n, KEYS / 2);
    Outcome {
        writes_per_s,
        reopen,
        bytes_per_key: dir_bytes(dir) as f64 / n as f64,
    }
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
    let reopen = start.elapsed();
    assert_eq!(n, KEYS / 2);
    Outcome {
        writes_per_s,
        reopen,
        bytes_per_key: dir_bytes(dir) as f64 / n as f64,
    }
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
