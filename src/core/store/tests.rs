//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

use std::collections::HashMap;

use super::*;
use crate::core::clock::MAX_CLOCK_ENTRIES;

pub(crate) fn version(
    key: &str,
    value: Option<&str>,
    origin: &str,
    seq: u64,
    lamport: u64,
) -> Version {
    let origin = Origin::new(origin, 1);
    let dot = Dot {
        origin: origin.clone(),
        seq,
    };
    Version {
        key: Key::from(key),
        value: value.map(JsonText::from),
        dot,
        lamport,
        deps: VClock::from_pairs([(origin, seq)]),
    }
}

#[test]
fn greater_stamp_wins_regardless_of_arrival_order() {
    let a = version("k", Some("1"), "a", 1, 5);
    let b = version("k", Some("2"), "b", 1, 5);
    let mut s1 = Store::new();
    s1.apply(a.clone());
    s1.apply(b.clone());
    let mut s2 = Store::new();
    s2.apply(b.clone());
    assert_eq!(s2.apply(a), Applied::Ignored);
    let held = |s: &Store| s.get("k").map(|v| v.to_version());
    assert_eq!(held(&s1), held(&s2));
    assert_eq!(s1.get("k").unwrap().value(), Some("2"));
}

#[test]
fn counts_follow_tombstones() {
    let mut s = Store::new();
    s.apply(version("k", Some("1"), "a", 1, 1));
    assert_eq!((s.live_len(), s.tombstone_len()), (1, 0));
    assert_eq!(
        s.apply(version("k", None, "a", 2, 2)),
        Applied::Replaced {
            previous_was_live: true
        }
    );
    assert_eq!((s.live_len(), s.tombstone_len()), (0, 1));
    let collected = s.collect_tombstones(&VClock::from_pairs([(Origin::new("a", 1), 2)]));
    assert_eq!(collected.len(), 1);
    assert_eq!((s.live_len(), s.tombstone_len()), (0, 0));
    assert!(s.get("k").is_none());
}

#[test]
fn delta_skips_what_the_peer_has_and_chunks_resume() {
    let mut s = Store::new();
    for i in 1..=10u64 {
        s.apply(version(&format!("k{i}"), Some("x"), "a", i, i));
    }
    let their = VClock::from_pairs([(Origin::new("a", 1), 4)]);
    let (all, more) = s.delta(&their, None, usize::MAX);
    assert!(more.is_none());
    assert_eq!(
        all.iter().map(|v| v.dot.seq).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9, 10]
    );

    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let (chunk, next) = s.delta(&their, cursor.as_ref(), 1);
        assert_eq!(chunk.len(), 1, "tiny budget still sends one version");
        got.extend(chunk);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, all);
    let (none, _) = s.delta(&VClock::from_pairs([(Origin::new("a", 1), 10)]), None, 100);
    assert!(none.is_empty());
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Batch(#[serde(with = "packed")] Vec<Version>);

#[test]
fn packed_batches_round_trip_and_name_each_origin_once() {
    let mut with_deps = version("k2", None, "b", 4, 9);
    with_deps
        .deps
        .merge(&VClock::from_pairs([(Origin::new("a", 1), 2)]));
    let batch = Batch(vec![
        version("k1", Some("{\"x\":1}"), "a", 2, 3),
        with_deps,
        version("k3", Some("3"), "a", 5, 10),
    ]);
    let bytes = rmp_serde::to_vec_named(&batch).unwrap();
    assert_eq!(rmp_serde::from_slice::<Batch>(&bytes).unwrap(), batch);
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(
        text.matches("a@1").count(),
        1,
        "origin table holds each once"
    );
    let json = serde_json::to_value(&batch).unwrap();
    assert_eq!(json["origins"], serde_json::json!(["a@1", "b@1"]));
    assert_eq!(
        json["versions"][1],
        serde_json::json!(["k2", null, 1, 4, 9, [[0, 2], [1, 4]]])
    );
}

#[test]
fn packed_batches_with_a_bad_origin_index_are_refused() {
    let bad = serde_json::json!({
        "origins": ["a@1"],
        "versions": [["k", "1", 0, 1, 1, [[3, 1]]]],
    });
    let error = serde_json::from_value::<Batch>(bad)
        .unwrap_err()
        .to_string();
    assert!(error.contains("origin #3"), "{error}");
}

#[test]
fn packed_batches_with_a_bad_origin_or_too_many_deps_are_refused() {
    let bad_origin = serde_json::json!({
        "origins": ["a@1", "no-incarnation"],
        "versions": [["k", "1", 0, 1, 1, [[0, 1]]]],
    });
    let error = serde_json::from_value::<Batch>(bad_origin)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not an origin"), "{error}");
    let deps: Vec<(u32, u64)> = (0..=MAX_CLOCK_ENTRIES as u64).map(|n| (0, n + 1)).collect();
    let wide = serde_json::json!({
        "origins": ["a@1"],
        "versions": [["k", "1", 0, 1, 1, deps]],
    });
    let error = serde_json::from_value::<Batch>(wide)
        .unwrap_err()
        .to_string();
    assert!(error.contains("dependencies"), "{error}");
}

#[test]
fn snapshot_rule_drops_only_covered_absent_versions() {
    let mut s = Store::new();
    s.apply(version("gone", Some("1"), "a", 1, 1));
    s.apply(version("kept", Some("1"), "a", 2, 2));
    s.apply(version("new", Some("1"), "b", 1, 3));
    let covers = VClock::from_pairs([(Origin::new("a", 1), 2)]);
    let snapshot: HashSet<Key> = [Key::from("kept")].into_iter().collect();
    assert_eq!(s.drop_versions_deleted_elsewhere(&covers, &snapshot), 1);
    assert!(s.get("gone").is_none());
    assert!(s.get("kept").is_some());
    assert!(
        s.get("new").is_some(),
        "not covered by the peer: ours to keep"
    );
}

#[test]
fn views_round_trip_versions_with_and_without_their_own_dot_in_deps() {
    let a = Origin::new("a", 1);
    let b = Origin::new("b", 2);
    let mut s = Store::new();
    let mut plain = version("k1", Some("\"v\""), "a", 3, 7);
    plain.deps.merge(&VClock::from_pairs([(b.clone(), 9)]));
    let odd = Version {
        key: Key::from("k2"),
        value: None,
        dot: Dot {
            origin: b.clone(),
            seq: 4,
        },
        lamport: 8,
        // No entry for its own dot, and one naming a later write of `a`.
        deps: VClock::from_pairs([(a.clone(), 5)]),
    };
    for v in [plain.clone(), odd.clone()] {
        s.apply(v);
    }
    for v in [plain, odd] {
        let view = s.get(&v.key).unwrap();
        assert_eq!(view.to_version(), v);
        assert_eq!(view, v);
    }
}

#[test]
fn origins_nothing_refers_to_are_forgotten_and_their_ids_reused() {
    let mut s = Store::new();
    for i in 1..=5u64 {
        s.apply(version(&format!("k{i}"), None, &format!("o{i}"), 1, i));
    }
    let stable = VClock::from_pairs((1..=5).map(|i| (Origin::new(&format!("o{i}"), 1), 1)));
    assert_eq!(s.collect_tombstones(&stable).len(), 5);
    assert!(s.origin_ids.is_empty());
    s.apply(version("k", Some("1"), "p", 1, 9));
    assert_eq!(s.origins.len(), 5, "a freed id is reused");
    assert_eq!(s.get("k").unwrap().origin(), &Origin::new("p", 1));
}

mod model {
    //! The store against a plain map of owned versions under random apply,
    //! collect and snapshot-drop steps: every read, count, iteration and
    //! delta (whole or chunked) must give exactly what the map gives.

    use super::*;
    use proptest::prelude::*;

    const ORIGINS: u64 = 3;

    fn origin(i: u64) -> Origin {
        Origin::new(&format!("o{i}"), 1)
    }

    /// The one write a dot names (as in a real cluster: a dot is one write).
    /// Lamport times rise with seq per origin and tie across origins 0 and 2.
    fn write(o: u64, seq: u64) -> Version {
        let key = format!("k{}", (seq * 7 + o * 3) % 8);
        let value = (!seq.is_multiple_of(4)).then(|| JsonText::from(format!("\"{o}-{seq}\"")));
        let mut deps = vec![((o + 1) % ORIGINS, seq / 2), ((o + 2) % ORIGINS, seq % 3)];
        // Mostly its own dot, as every well-formed version; sometimes a
        // different entry for its own origin, to check the exact round trip.
        deps.push((o, if seq.is_multiple_of(5) { seq + 1 } else { seq }));
        Version {
            key: Key::from(key),
            value,
            dot: Dot {
                origin: origin(o),
                seq,
            },
            lamport: seq * 2 + o % 2,
            deps: VClock::from_pairs(deps.into_iter().map(|(o, n)| (origin(o), n))),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Apply(u64, u64),
        Collect(Vec<u64>),
        Drop(Vec<u64>, Vec<u8>),
    }

    fn clock(seqs: &[u64]) -> VClock {
        VClock::from_pairs(seqs.iter().enumerate().map(|(i, &n)| (origin(i as u64), n)))
    }

    fn step() -> impl Strategy<Value = Step> {
        let seqs = proptest::collection::vec(0u64..24, ORIGINS as usize);
        prop_oneof![
            8 => (0..ORIGINS, 1u64..24).prop_map(|(o, s)| Step::Apply(o, s)),
            1 => seqs.clone().prop_map(Step::Collect),
            1 => (seqs, proptest::collection::vec(0u8..8, 0..8)).prop_map(|(c, k)| Step::Drop(c, k)),
        ]
    }

    fn model_apply(model: &mut HashMap<Key, Version>, v: Version) -> Applied {
        let previous_was_live = match model.get(&v.key) {
            Some(current) if current.stamp() >= v.stamp() => return Applied::Ignored,
            Some(current) => !current.is_tombstone(),
            None => false,
        };
        model.insert(v.key.clone(), v);
        Applied::Replaced { previous_was_live }
    }

    fn in_stamp_order(model: &HashMap<Key, Version>, their: &VClock) -> Vec<Version> {
        let mut all: Vec<Version> = model
            .values()
            .filter(|v| !their.covers_dot(&v.dot))
            .cloned()
            .collect();
        all.sort_by_key(Version::stamp);
        all
    }

    fn check(store: &Store, model: &HashMap<Key, Version>, their: &VClock, budget: usize) {
        for k in 0..8 {
            let key = format!("k{k}");
            assert_eq!(
                store.get(&key).map(|v| v.to_version()),
                model.get(key.as_str()).cloned()
            );
        }
        let live = model.values().filter(|v| !v.is_tombstone()).count();
        assert_eq!(
            (store.live_len(), store.tombstone_len()),
            (live, model.len() - live)
        );
        let everything: Vec<Version> = store.versions().map(|v| v.to_version()).collect();
        assert_eq!(everything, in_stamp_order(model, &VClock::new()));
        let expected = in_stamp_order(model, their);
        assert_eq!(
            store.delta(their, None, usize::MAX),
            (expected.clone(), None)
        );
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let (chunk, next) = store.delta(their, cursor.as_ref(), budget);
            got.extend(chunk);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_store_behaves_as_a_map_of_versions(
            steps in proptest::collection::vec(step(), 1..60),
            their in proptest::collection::vec(0u64..24, ORIGINS as usize),
            budget in 1usize..400,
        ) {
            let mut store = Store::new();
            store.track_removed_keys();
            let mut model: HashMap<Key, Version> = HashMap::new();
            let their = clock(&their);
            for step in steps {
                let keys_before: HashSet<Key> = model.keys().cloned().collect();
                match step {
                    Step::Apply(o, seq) => {
                        let v = write(o, seq);
                        prop_assert_eq!(store.apply(v.clone()), model_apply(&mut model, v));
                    }
                    Step::Collect(stable) => {
                        let stable = clock(&stable);
                        let mut collected = store.collect_tombstones(&stable);
                        let mut expected: Vec<Dot> = model
                            .values()
                            .filter(|v| v.is_tombstone() && stable.covers_dot(&v.dot))
                            .map(|v| v.dot.clone())
                            .collect();
                        model.retain(|_, v| !(v.is_tombstone() && stable.covers_dot(&v.dot)));
                        collected.sort();
                        expected.sort();
                        prop_assert_eq!(collected, expected);
                    }
                    Step::Drop(covers, keys) => {
                        let covers = clock(&covers);
                        let keys: HashSet<Key> =
                            keys.iter().map(|k| Key::from(format!("k{k}"))).collect();
                        let before = model.len();
                        model.retain(|k, v| !covers.covers_dot(&v.dot) || keys.contains(k));
                        prop_assert_eq!(
                            store.drop_versions_deleted_elsewhere(&covers, &keys),
                            before - model.len()
                        );
                    }
                }
                // Every key that left the map is reported once, and no other.
                let left: HashSet<Key> = keys_before
                    .into_iter()
                    .filter(|k| !model.contains_key(k))
                    .collect();
                let reported = store.take_removed_keys();
                prop_assert_eq!(reported.len(), left.len());
                prop_assert_eq!(reported.into_iter().collect::<HashSet<Key>>(), left);
                check(&store, &model, &their, budget);
            }
            // The origin table holds exactly the origins something still names.
            let named: HashSet<Origin> = model
                .values()
                .flat_map(|v| v.deps.iter().map(|(o, _)| o.clone()).chain([v.dot.origin.clone()]))
                .collect();
            let held: HashSet<Origin> = store.origin_ids.keys().cloned().collect();
            prop_assert_eq!(held, named);
        }

        /// A recovery loads one version per key in any order (key order,
        /// on disk) and sorts once at the end: the store is then the one
        /// that applying the versions in order builds, and goes on behaving
        /// as a map of versions.
        #[test]
        fn a_store_loaded_in_any_order_is_the_store_applied_in_order(
            writes in proptest::collection::vec((0..ORIGINS, 1u64..24), 1..40),
            order in proptest::collection::vec(any::<u64>(), 40),
            later in proptest::collection::vec((0..ORIGINS, 1u64..24), 0..10),
            their in proptest::collection::vec(0u64..24, ORIGINS as usize),
            budget in 1usize..400,
        ) {
            let mut model: HashMap<Key, Version> = HashMap::new();
            for &(o, seq) in &writes {
                model_apply(&mut model, write(o, seq));
            }
            // What a disk holds: each key's winner, in a shuffled order.
            let mut on_disk: Vec<Version> = model.values().cloned().collect();
            on_disk.sort_by_key(|v| v.key.clone());
            let mut shuffled: Vec<(u64, Version)> =
                on_disk.into_iter().zip(order.iter().copied()).map(|(v, r)| (r, v)).collect();
            shuffled.sort_by_key(|(r, _)| *r);
            let mut store = Store::new();
            for (_, v) in shuffled {
                store.load(v);
            }
            store.finish_loading();
            let their = clock(&their);
            check(&store, &model, &their, budget);
            for (o, seq) in later {
                let v = write(o, seq);
                prop_assert_eq!(store.apply(v.clone()), model_apply(&mut model, v));
                check(&store, &model, &their, budget);
            }
        }
    }
}

#[test]
fn an_entry_is_40_bytes() {
    assert_eq!(std::mem::size_of::<Option<Entry>>(), 40);
}

#[test]
fn a_reserved_store_takes_that_many_keys_without_growing() {
    let mut s = Store::new();
    s.apply(version("before", Some("0"), "a", 1, 1));
    s.reserve(1000);
    let capacity = s.table.capacity();
    assert!(capacity >= 1001, "{capacity}");
    for i in 0..1000u64 {
        s.apply(version(&format!("k{i}"), Some("1"), "a", i + 2, i + 2));
    }
    assert_eq!(s.table.capacity(), capacity, "the key table grew");
    assert_eq!(s.live_len(), 1001);
    assert_eq!(s.get("before").unwrap().value(), Some("0"));
    assert_eq!(s.get("k999").unwrap().value(), Some("1"));
}

#[test]
fn entries_past_several_chunks_stay_in_place_and_freed_slots_are_reused() {
    let keys = 3 * CHUNK + 5;
    let mut s = Store::new();
    for i in 0..keys {
        let value = format!("{i}");
        s.apply(version(
            &format!("k{i}"),
            Some(&value),
            "a",
            i as u64 + 1,
            i as u64 + 1,
        ));
    }
    assert_eq!(s.slots.len(), keys);
    assert_eq!(s.slots.capacity(), 4 * CHUNK);
    // Every chunk but the last is full and none grew past its capacity.
    assert!(s.slots.chunks.iter().all(|c| c.capacity() == CHUNK));
    // Remove keys on both sides of each chunk boundary, then write new keys:
    // they take the freed slots instead of growing the array.
    let removed = [CHUNK - 1, CHUNK, 2 * CHUNK - 1, 2 * CHUNK, keys - 1];
    for i in removed {
        let seq = s.get(&format!("k{i}")).unwrap().seq();
        s.apply(version(&format!("k{i}"), None, "b", seq, keys as u64 + seq));
    }
    let everything_of_b = VClock::from_pairs([(Origin::new("b", 1), u64::MAX)]);
    assert_eq!(s.collect_tombstones(&everything_of_b).len(), removed.len());
    for j in 0..5u64 {
        s.apply(version(
            &format!("new{j}"),
            Some("1"),
            "c",
            j + 1,
            10 * keys as u64 + j,
        ));
    }
    assert_eq!(s.slots.len(), keys);
    for i in 0..keys {
        let found = s
            .get(&format!("k{i}"))
            .map(|v| v.value().map(str::to_string));
        if removed.contains(&i) {
            assert_eq!(found, None, "k{i}");
        } else {
            assert_eq!(found, Some(Some(format!("{i}"))), "k{i}");
        }
    }
    for j in 0..5 {
        assert_eq!(s.get(&format!("new{j}")).unwrap().value(), Some("1"));
    }
}

#[test]
fn a_version_with_the_most_dependencies_a_clock_may_have_round_trips() {
    // Deps are stored after the text with a u16 count: the largest clock
    // any decoder accepts, plus the version's own dot, must fit and read
    // back intact.
    let mut deps: Vec<(Origin, u64)> = (0..MAX_CLOCK_ENTRIES)
        .map(|i| {
            (
                Origin::new(&format!("10.0.{}.{}:8090", i / 256, i % 256), 1),
                u64::MAX - i as u64,
            )
        })
        .collect();
    let own = Origin::new("a", 1);
    deps.push((own.clone(), 7));
    let v = Version {
        key: Key::from("k"),
        value: Some(JsonText::from("\"v\"")),
        dot: Dot {
            origin: own,
            seq: 7,
        },
        lamport: u64::MAX,
        deps: VClock::from_pairs(deps),
    };
    let mut s = Store::new();
    s.apply(v.clone());
    let stored = s.get("k").unwrap();
    assert_eq!(stored, v);
    assert_eq!(stored.to_version(), v);
    assert_eq!(
        s.footprint().deps,
        MAX_CLOCK_ENTRIES * DEP_BYTES + DEP_COUNT_BYTES
    );
}
