//! Property tests of the pure core's laws.
//!
//! * Vector clocks form a join-semilattice: merge is commutative,
//!   associative and idempotent, and `covers` is the order it induces; join,
//!   meet and `covers` are the componentwise max, min and ≥.
//! * Applying versions is commutative and idempotent, and the survivor of
//!   each key is the version with the greatest stamp (last-writer-wins is a
//!   total order, so every replica picks the same one).
//! * A delta — cut into chunks of any size — brings the receiver up to the
//!   sender: afterwards its clock covers the sender's and each of its keys
//!   holds the sender's version or a greater one; the invariants hold.
//! * Replicas that exchanged everything are identical.

use std::collections::HashSet;

use hearsay::core::{
    Dot, JsonText, Key, Membership, Origin, Replica, Store, Timing, VClock, Version,
};
use proptest::prelude::*;

const ORIGINS: [&str; 4] = ["a:1", "b:1", "c:1", "d:1"];

fn clock() -> impl Strategy<Value = VClock> {
    proptest::collection::vec((0..ORIGINS.len(), 0u64..6), 0..6).prop_map(|pairs| {
        VClock::from_pairs(
            pairs
                .into_iter()
                .map(|(o, n)| (Origin::new(ORIGINS[o], 1), n)),
        )
    })
}

proptest! {
    #[test]
    fn merge_is_a_semilattice(a in clock(), b in clock(), c in clock()) {
        prop_assert_eq!(a.joined(&b), b.joined(&a));
        prop_assert_eq!(a.joined(&b).joined(&c), a.joined(&b.joined(&c)));
        prop_assert_eq!(a.joined(&a), a.clone());
        let ab = a.joined(&b);
        prop_assert!(ab.covers(&a) && ab.covers(&b));
        // covers is the induced order: a ≤ b iff a ⊔ b = b.
        prop_assert_eq!(b.covers(&a), a.joined(&b) == b);
    }

    #[test]
    fn clock_operations_are_componentwise(a in clock(), b in clock()) {
        // The model: a clock is a function from origin to count (0 if absent).
        let origins: Vec<Origin> = ORIGINS.iter().map(|o| Origin::new(o, 1)).collect();
        let joined = a.joined(&b);
        let mut met = a.clone();
        met.meet(&b);
        for origin in &origins {
            prop_assert_eq!(joined.get(origin), a.get(origin).max(b.get(origin)));
            prop_assert_eq!(met.get(origin), a.get(origin).min(b.get(origin)));
        }
        let covers = origins.iter().all(|o| a.get(o) >= b.get(o));
        prop_assert_eq!(a.covers(&b), covers);
        // Normal form: no zero entries, so equal functions are equal clocks.
        prop_assert!(joined.iter().chain(met.iter()).all(|(_, n)| *n > 0));
        prop_assert_eq!(joined.len(), origins.iter().filter(|o| joined.get(o) > 0).count());
    }

    #[test]
    fn meet_is_the_greatest_lower_bound(a in clock(), b in clock()) {
        let mut m = a.clone();
        m.meet(&b);
        prop_assert!(a.covers(&m) && b.covers(&m));
        let mut m2 = b.clone();
        m2.meet(&a);
        prop_assert_eq!(m, m2);
    }
}

/// Versions of a few keys with distinct dots.
fn versions() -> impl Strategy<Value = Vec<Version>> {
    proptest::collection::vec(
        (
            0..3usize,
            0..ORIGINS.len(),
            1u64..20,
            proptest::option::of(0u8..5),
        ),
        1..30,
    )
    .prop_map(|raw| {
        let mut seen = HashSet::new();
        raw.into_iter()
            .filter(|(_, o, seq, _)| seen.insert((*o, *seq)))
            .map(|(key, o, seq, value)| {
                let origin = Origin::new(ORIGINS[o], 1);
                Version {
                    key: Key::from(format!("k{key}")),
                    value: value.map(|v| JsonText::from(v.to_string())),
                    dot: Dot {
                        origin: origin.clone(),
                        seq,
                    },
                    // Lamport ties across origins are allowed: origin breaks them.
                    lamport: seq / 2,
                    deps: VClock::from_pairs([(origin, seq)]),
                }
            })
            .collect()
    })
}

fn snapshot(store: &Store) -> Vec<Version> {
    store.versions().map(|v| v.to_version()).collect()
}

proptest! {
    #[test]
    fn apply_is_commutative_idempotent_and_keeps_the_greatest_stamp(
        vs in versions(),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
    ) {
        let mut forward = Store::new();
        for v in &vs {
            forward.apply(v.clone());
        }
        // Any order, with repeats.
        let mut shuffled = Store::new();
        for i in &order {
            shuffled.apply(i.get(&vs).clone());
        }
        for v in vs.iter().rev() {
            shuffled.apply(v.clone());
        }
        prop_assert_eq!(snapshot(&forward), snapshot(&shuffled));
        for key in ["k0", "k1", "k2"] {
            let best = vs.iter().filter(|v| &*v.key == key).max_by_key(|v| v.stamp());
            prop_assert_eq!(forward.get(key).map(|v| v.to_version()), best.cloned());
        }
    }
}

const T: Timing = Timing {
    suspect_after_ms: 700,
    dead_after_ms: 1500,
    dead_member_grace_ms: 60_000,
};

/// One step of a random history over three replicas.
#[derive(Clone, Debug)]
enum Step {
    Put {
        at: usize,
        key: u8,
        value: u8,
    },
    Delete {
        at: usize,
        key: u8,
    },
    Sync {
        from: usize,
        to: usize,
        budget: usize,
    },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..3usize, 0..4u8, any::<u8>()).prop_map(|(at, key, value)| Step::Put { at, key, value }),
        1 => (0..3usize, 0..4u8).prop_map(|(at, key)| Step::Delete { at, key }),
        3 => (0..3usize, 0..3usize, 1usize..400).prop_map(|(from, to, budget)| Step::Sync { from, to, budget }),
    ];
    proptest::collection::vec(step, 1..60)
}

/// A MessagePack map of `pairs` exactly as given: unsorted, with duplicate
/// origins and zero counts, as a peer could send it.
fn packed_map(pairs: &[(Origin, u64)]) -> Vec<u8> {
    struct Map<'a>(&'a [(Origin, u64)]);
    impl serde::Serialize for Map<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(o, n)| (o, n)))
        }
    }
    rmp_serde::to_vec(&Map(pairs)).unwrap()
}

proptest! {
    #[test]
    fn a_decoded_clock_is_the_componentwise_max_of_its_entries(
        pairs in proptest::collection::vec((0usize..8, 0u64..5), 0..40)
    ) {
        let pairs: Vec<(Origin, u64)> = pairs
            .into_iter()
            .map(|(o, n)| (Origin::new("10.0.0.1:8090", o as u64), n))
            .collect();
        // The model: per origin, the greatest count given; zero means absent.
        let mut model = std::collections::BTreeMap::new();
        for (origin, n) in &pairs {
            let entry = model.entry(origin.clone()).or_insert(0);
            *entry = (*entry).max(*n);
        }
        model.retain(|_, n| *n > 0);
        let decoded: VClock = rmp_serde::from_slice(&packed_map(&pairs)).unwrap();
        let entries: Vec<(Origin, u64)> = decoded.iter().map(|(o, n)| (o.clone(), *n)).collect();
        let expected: Vec<(Origin, u64)> = model.into_iter().collect();
        prop_assert_eq!(&entries, &expected);
        prop_assert_eq!(&decoded, &VClock::from_pairs(pairs));
    }
}

fn cluster() -> Vec<Replica> {
    let view: Vec<String> = ORIGINS[..3].iter().map(|s| s.to_string()).collect();
    view.iter()
        .map(|a| Replica::new(a, 1, &view, T, 0))
        .collect()
}

/// A complete pull of `from` into `to`, chunked by `budget` bytes.
fn sync(replicas: &mut [Replica], from: usize, to: usize, budget: usize) {
    if from == to {
        return;
    }
    let (giver, taker) = if from < to {
        let (left, right) = replicas.split_at_mut(to);
        (&mut left[from], &mut right[0])
    } else {
        let (left, right) = replicas.split_at_mut(from);
        (&mut right[0], &mut left[to])
    };
    let done = hearsay::core::exchange::pull_all(giver, taker, false, budget, 0)
        .expect("a pull between live replicas completes");
    assert!(!done.snapshot, "no tombstones are collected here");
}

fn run(steps: &[Step]) -> Vec<Replica> {
    let mut replicas = cluster();
    for step in steps {
        match *step {
            Step::Put { at, key, value } => {
                let m = VClock::new();
                replicas[at]
                    .write(
                        &format!("k{key}"),
                        Some(JsonText::from(value.to_string())),
                        &m,
                    )
                    .unwrap();
            }
            Step::Delete { at, key } => {
                replicas[at]
                    .write(&format!("k{key}"), None, &VClock::new())
                    .unwrap();
            }
            Step::Sync { from, to, budget } => sync(&mut replicas, from, to, budget),
        }
    }
    replicas
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_delta_brings_the_receiver_up_to_the_sender(history in steps(), budget in 1usize..300) {
        let mut replicas = run(&history);
        let before = snapshot(replicas[0].store());
        let sender_clock = replicas[0].clock().clone();
        sync(&mut replicas, 0, 1, budget);
        let receiver = &replicas[1];
        prop_assert!(receiver.clock().covers(&sender_clock));
        for version in before {
            let theirs = receiver.store().get(&version.key).expect("key reached the receiver");
            prop_assert!(theirs.stamp() >= version.stamp());
        }
        for r in &replicas {
            prop_assert!(r.check_invariants().is_ok(), "{:?}", r.check_invariants());
        }
    }

    #[test]
    fn replicas_that_exchanged_everything_are_identical(history in steps()) {
        let mut replicas = run(&history);
        for (from, to) in [(0, 1), (1, 2), (2, 0), (0, 1), (1, 2)] {
            sync(&mut replicas, from, to, 128);
        }
        let first = snapshot(replicas[0].store());
        for r in &replicas[1..] {
            prop_assert_eq!(&snapshot(r.store()), &first);
            prop_assert_eq!(r.clock(), replicas[0].clock());
        }
    }

    #[test]
    fn the_stability_frontier_is_below_every_member(a in clock(), b in clock(), mine in clock()) {
        let view = vec!["a:1".to_string(), "b:1".to_string(), "c:1".to_string()];
        let mut m = Membership::new("c:1", &view, T, 0);
        m.heard_from("a:1", 1, 0);
        m.heard_from("b:1", 1, 0);
        m.record_clock("a:1", 1, &a);
        m.record_clock("b:1", 1, &b);
        let frontier = m.stability_frontier(&mine, 0);
        prop_assert!(a.covers(&frontier) && b.covers(&frontier) && mine.covers(&frontier));
    }
}
