//! Heap bytes per key of the store, by structure, counted by a global
//! allocator that tracks every live allocation: the workload of
//! `hearsay-bench memory` (13-character keys, 22-byte JSON values, null
//! client metadata, one writing life) built directly, without a server.
//!
//! It measures the store and, for the record in `bench/RESULTS.md`, the
//! layout it replaced (a map of owned versions plus two ordered indexes),
//! rebuilt here from the same `Version`s. Run with `--nocapture` to see the
//! table. The assertion guards the per-key budget against regressions.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearsay::core::{Dot, JsonText, Key, Origin, Stamp, Store, VClock, Version};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: u64 = 200_000;

/// Live heap bytes and allocations now.
fn live() -> (usize, usize) {
    (LIVE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed))
}

/// What a replica stores for the `i`-th PUT of the bench: its own dot as the
/// only dependency (null metadata).
fn write(origin: &Origin, i: u64) -> Version {
    let dot = Dot {
        origin: origin.clone(),
        seq: i + 1,
    };
    Version {
        key: Key::from(format!("k{i:012}")),
        value: Some(JsonText::from(format!("\"value-{i:014}\""))),
        deps: VClock::from_pairs([(origin.clone(), i + 1)]),
        lamport: i + 1,
        dot,
    }
}

fn per_key(bytes: usize) -> f64 {
    bytes as f64 / KEYS as f64
}

#[test]
fn bytes_per_key_by_structure() {
    let origin = Origin::new("10.10.0.2:8090", 1_764_000_000_123);

    // The layout before: owned versions in a map, by_stamp, by_origin.
    let versions: Vec<Version> = (0..KEYS).map(|i| write(&origin, i)).collect();
    let start = live().0;
    let texts: Vec<(Key, JsonText)> = versions
        .iter()
        .map(|v| (Key::from(&*v.key), v.value.clone().unwrap()))
        .collect();
    // The values are shared with `versions`: count their text as the keys'.
    let key_arcs = live().0 - start - texts.capacity() * std::mem::size_of::<(Key, JsonText)>();
    let arcs = key_arcs + KEYS as usize * (16 + 22);
    drop(texts);
    let mut map: HashMap<Key, Version> = HashMap::new();
    let mut by_stamp: BTreeMap<Stamp, Key> = BTreeMap::new();
    let mut by_origin: BTreeMap<Origin, BTreeMap<u64, u64>> = BTreeMap::new();
    let before_map = live().0;
    for v in &versions {
        // A clone, as a replica stores it: the deps vector at its length.
        map.insert(v.key.clone(), v.clone());
    }
    let deps_bytes = KEYS as usize * std::mem::size_of::<(Origin, u64)>();
    let map_bytes = live().0 - before_map - deps_bytes;
    let before_stamp = live().0;
    for v in &versions {
        by_stamp.insert(v.stamp(), v.key.clone());
    }
    let stamp_bytes = live().0 - before_stamp;
    let before_origin = live().0;
    for v in &versions {
        by_origin
            .entry(v.dot.origin.clone())
            .or_default()
            .insert(v.dot.seq, v.lamport);
    }
    let origin_bytes = live().0 - before_origin;
    let old_total = arcs + deps_bytes + map_bytes + stamp_bytes + origin_bytes;
    println!("layout before (bytes per key, requested from the allocator):");
    println!(
        "  key + value Arc<str> (16 B header each)  {:6.1}",
        per_key(arcs)
    );
    println!(
        "  deps vector (one (Origin, u64) entry)    {:6.1}",
        per_key(deps_bytes)
    );
    println!(
        "  HashMap<Key, Version> (104 B + 1 ctrl)   {:6.1}",
        per_key(map_bytes)
    );
    println!(
        "  by_stamp BTreeMap<Stamp, Key>            {:6.1}",
        per_key(stamp_bytes)
    );
    println!(
        "  by_origin BTreeMap<u64, u64>             {:6.1}",
        per_key(origin_bytes)
    );
    println!(
        "  total                                    {:6.1}",
        per_key(old_total)
    );
    drop((map, by_stamp, by_origin));
    let before_versions = live().0;
    let versions: Vec<Version> = versions.to_vec();
    let cloned = live().0 - before_versions;

    // The store as it is.
    let before_store = live();
    let mut store = Store::new();
    for v in versions {
        store.apply(v);
    }
    // `versions` is consumed: every Arc and deps vector it held is freed.
    let after = live();
    let store_bytes = after.0 + cloned - before_store.0;
    let allocations = after.1 + KEYS as usize + 1 - before_store.1;
    let f = store.footprint();
    println!("store (bytes per key, requested from the allocator):");
    println!(
        "  table (slot id + control byte per bucket) {:6.1}",
        per_key(f.table)
    );
    println!(
        "  entries (40 B each, at capacity)          {:6.1}",
        per_key(f.entries)
    );
    println!(
        "  key + value text                          {:6.1}",
        per_key(f.text)
    );
    println!(
        "  deps beyond the own dot                   {:6.1}",
        per_key(f.deps)
    );
    println!(
        "  origin logs (seq, slot)                   {:6.1}",
        per_key(f.logs)
    );
    println!(
        "  total (footprint)                         {:6.1}",
        per_key(f.total())
    );
    println!(
        "  total (counted)                           {:6.1}",
        per_key(store_bytes)
    );
    println!(
        "  allocations per key                       {:6.2}",
        allocations as f64 / KEYS as f64
    );
    assert!(
        per_key(store_bytes) < 140.0,
        "{} bytes per key",
        per_key(store_bytes)
    );
    let counted = store_bytes as f64;
    assert!(
        (f.total() as f64 - counted).abs() / counted < 0.05,
        "footprint {} vs counted {counted}",
        f.total()
    );
}
