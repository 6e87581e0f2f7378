//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

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
    assert_eq!(s1.get("k"), s2.get("k"));
    assert_eq!(s1.get("k").unwrap().value.as_deref(), Some("2"));
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
