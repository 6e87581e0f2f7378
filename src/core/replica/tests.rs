//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

use super::*;

const T: Timing = Timing {
    suspect_after_ms: 700,
    dead_after_ms: 1500,
    dead_member_grace_ms: 60_000,
};

fn replicas(n: usize) -> Vec<Replica> {
    let view: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    view.iter()
        .map(|a| Replica::new(a, 1, &view, T, 0))
        .collect()
}

/// Pulls everything `from` has into `into`, chunk by chunk.
fn sync(from: &mut Replica, into: &mut Replica, budget: usize) {
    crate::core::exchange::pull_all(from, into, false, budget, 0).unwrap();
    into.check_invariants().unwrap();
}

/// Whether `from` would send `into` to a snapshot.
fn requires_snapshot(from: &mut Replica, into: &Replica) -> bool {
    let request = crate::core::Pull::new(from.address(), false).request(into);
    from.answer_pull(&request, 0, 1 << 20)
        .unwrap()
        .snapshot_required
}

fn v(s: &str) -> Option<JsonText> {
    Some(JsonText::from(s))
}

/// Writes a new key at `r` and returns the metadata of its `created` answer.
fn created(r: &mut Replica, key: &str, value: &str, metadata: &VClock) -> VClock {
    match r.write(key, v(value), metadata) {
        Ok(WriteOutcome::Created { metadata }) => metadata,
        other => panic!("{key} was not created: {other:?}"),
    }
}

/// Reads `key` at `r` and returns the metadata of its `found` answer.
fn found(r: &Replica, key: &str, metadata: &VClock) -> VClock {
    match r.read(key, metadata) {
        Ok(ReadOutcome::Found { metadata, .. }) => metadata,
        other => panic!("{key} was not found: {other:?}"),
    }
}

#[test]
fn causal_metadata_holds_back_a_replica_that_is_behind() {
    let mut r = replicas(2);
    let (a, b) = r.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    let metadata = created(a, "x", "1", &VClock::new());
    assert_eq!(b.read("x", &metadata), Err(NotYet));
    sync(a, b, 1 << 20);
    assert_eq!(
        b.read("x", &metadata).unwrap(),
        ReadOutcome::Found {
            value: JsonText::from("1"),
            metadata: metadata.clone()
        }
    );
}

#[test]
fn returned_metadata_is_minimal() {
    let mut r = replicas(1);
    let a = &mut r[0];
    a.write("x", v("1"), &VClock::new()).unwrap();
    let my = created(a, "y", "2", &VClock::new());
    assert_eq!(my.get(a.origin()), 2);
    let ReadOutcome::Found { metadata, .. } = a.read("x", &VClock::new()).unwrap() else {
        panic!()
    };
    assert_eq!(metadata.get(a.origin()), 1, "reading x does not drag in y");
}

#[test]
fn create_replace_delete_outcomes() {
    let mut r = replicas(1);
    let a = &mut r[0];
    let m = VClock::new();
    assert!(matches!(
        a.write("k", None, &m),
        Ok(WriteOutcome::NotFound { .. })
    ));
    assert!(matches!(
        a.write("k", v("1"), &m),
        Ok(WriteOutcome::Created { .. })
    ));
    assert!(matches!(
        a.write("k", v("2"), &m),
        Ok(WriteOutcome::Replaced { .. })
    ));
    assert!(matches!(
        a.write("k", None, &m),
        Ok(WriteOutcome::Deleted { .. })
    ));
    assert!(matches!(
        a.write("k", None, &m),
        Ok(WriteOutcome::NotFound { .. })
    ));
    assert!(matches!(a.read("k", &m), Ok(ReadOutcome::NotFound { .. })));
    assert!(matches!(
        a.write("k", v("3"), &m),
        Ok(WriteOutcome::Created { .. })
    ));
}

#[test]
fn a_missing_key_answers_with_the_clients_metadata_unchanged() {
    let mut r = replicas(1);
    let a = &mut r[0];
    let seen = created(a, "other", "1", &VClock::new());
    assert_eq!(
        a.read("never", &seen),
        Ok(ReadOutcome::NotFound {
            metadata: seen.clone()
        })
    );
    assert_eq!(
        a.write("never", None, &seen),
        Ok(WriteOutcome::NotFound {
            metadata: seen.clone()
        })
    );
}

#[test]
fn a_404_for_a_deleted_key_carries_the_tombstones_dependencies() {
    let mut r = replicas(3);
    let none = VClock::new();
    let put = created(&mut r[0], "k", "1", &none);
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    sync(&mut left[0], &mut right[1], 1 << 20);
    let WriteOutcome::Deleted { metadata: deleted } = r[0].write("k", None, &put).unwrap() else {
        panic!()
    };
    // A client that saw nothing before learns of the delete from a GET
    // 404, another from a DELETE 404; a third already had other writes.
    let Ok(ReadOutcome::NotFound { metadata: by_read }) = r[0].read("k", &none) else {
        panic!()
    };
    assert_eq!(by_read, deleted);
    let Ok(WriteOutcome::NotFound {
        metadata: by_delete,
    }) = r[0].write("k", None, &none)
    else {
        panic!()
    };
    assert_eq!(by_delete, deleted);
    let elsewhere = created(&mut r[1], "j", "2", &none);
    let (left, right) = r.split_at_mut(1);
    sync(&mut right[0], &mut left[0], 1 << 20);
    let Ok(ReadOutcome::NotFound { metadata: joined }) = r[0].read("k", &elsewhere) else {
        panic!()
    };
    assert_eq!(joined, elsewhere.joined(&deleted));
    // r1 still holds the value: every one of those clients is held there
    // until the delete arrives, and then told 404, never the old value.
    for metadata in [&by_read, &by_delete] {
        assert_eq!(r[1].read("k", metadata), Err(NotYet));
        assert_eq!(r[1].write("k", None, metadata), Err(WriteError::NotYet));
    }
    assert!(matches!(
        r[1].read("k", &none),
        Ok(ReadOutcome::Found { .. })
    ));
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    assert_eq!(
        r[1].read("k", &by_read),
        Ok(ReadOutcome::NotFound {
            metadata: deleted.clone()
        })
    );
}

#[test]
fn a_collected_tombstone_forces_a_snapshot_and_prevents_resurrection() {
    let mut r = replicas(3);
    let m = VClock::new();
    r[0].write("k", v("1"), &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    sync(&mut left[0], &mut right[1], 1 << 20);
    // r2 is cut off; r0 deletes; r1 learns; r2 is forgotten (past grace).
    created(&mut r[0], "j", "9", &m);
    r[0].write("k", None, &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    let now = 100_000;
    for i in 0..2 {
        let other = 1 - i;
        let (addr, inc, clock) = (r[other].address().to_string(), 1, r[other].clock().clone());
        r[i].members.heard_from(&addr, inc, now);
        r[i].members.record_clock(&addr, 1, &clock);
        r[i].members.tick(now);
    }
    assert_eq!(r[0].collect_garbage(now), 1);
    assert!(r[0].store().get("k").is_none());
    // r2 comes back holding k=1 and pulls from r0.
    let (left, right) = r.split_at_mut(2);
    assert!(requires_snapshot(&mut left[0], &right[0]));
    sync(&mut left[0], &mut right[0], 1 << 20);
    assert_eq!(
        right[0].read("k", &m),
        Ok(ReadOutcome::NotFound {
            metadata: m.clone()
        }),
        "a collected tombstone adds nothing to the metadata"
    );
    assert!(matches!(
        right[0].read("j", &m),
        Ok(ReadOutcome::Found { .. })
    ));
}

#[test]
fn a_snapshot_passes_on_the_horizon() {
    let mut r = replicas(4);
    let m = VClock::new();
    r[0].write("k", v("1"), &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    for other in right.iter_mut() {
        sync(&mut left[0], other, 1 << 20);
    }
    r[0].write("k", None, &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    // r0 collects the tombstone (r2, r3 are forgotten: dead past grace).
    let now = 100_000;
    let clock = r[1].clock().clone();
    r[0].members.heard_from("r1", 1, now);
    r[0].members.record_clock("r1", 1, &clock);
    r[0].members.tick(now);
    assert_eq!(r[0].collect_garbage(now), 1);
    // r3 restarts empty and takes a snapshot from r0 …
    r[3] = Replica::new(
        "r3",
        2,
        &["r0".into(), "r1".into(), "r2".into(), "r3".into()],
        T,
        0,
    );
    let (left, right) = r.split_at_mut(3);
    sync(&mut left[0], &mut right[0], 1 << 20);
    // … so when r2 (still holding k=1) meets r3, r3 demands a snapshot.
    let (left, right) = r.split_at_mut(3);
    assert!(requires_snapshot(&mut right[0], &left[2]));
    let (left, right) = r.split_at_mut(3);
    sync(&mut right[0], &mut left[2], 1 << 20);
    assert_eq!(
        r[2].read("k", &m),
        Ok(ReadOutcome::NotFound {
            metadata: m.clone()
        }),
        "a collected tombstone adds nothing to the metadata"
    );
}

#[test]
fn metadata_keeps_entries_even_below_the_horizon() {
    // A replica that returns after the grace period (or starts empty with
    // no peer reachable) serves before it learns what it missed; only the
    // client's full metadata holds it back from answering stale.
    let mut r = replicas(2);
    let m = VClock::new();
    r[0].write("a", v("1"), &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    let clock = r[1].clock().clone();
    r[0].members.heard_from("r1", 1, 10);
    r[0].members.record_clock("r1", 1, &clock);
    r[0].collect_garbage(10);
    assert_eq!(r[0].horizon().get(r[0].origin()), 1);
    let ReadOutcome::Found { metadata, .. } = r[0].read("a", &m).unwrap() else {
        panic!()
    };
    assert_eq!(metadata.get(r[0].origin()), 1);
    let fresh = Replica::new("r9", 1, &[], T, 0);
    assert_eq!(fresh.read("a", &metadata), Err(NotYet));
}

#[test]
fn a_stale_version_cannot_bring_back_a_collected_delete() {
    let mut r = replicas(2);
    let m = VClock::new();
    r[0].write("k", v("1"), &m).unwrap();
    let old = r[0].store().get("k").unwrap().to_version();
    r[0].write("k", None, &m).unwrap();
    let (left, right) = r.split_at_mut(1);
    sync(&mut left[0], &mut right[0], 1 << 20);
    let clock = r[1].clock().clone();
    r[0].members.heard_from("r1", 1, 0);
    r[0].members.record_clock("r1", 1, &clock);
    assert_eq!(r[0].collect_garbage(0), 1);
    // A peer with a stale idea of our clock sends the old value again.
    assert_eq!(r[0].apply_versions(vec![old]).changed, 0);
    assert_eq!(
        r[0].read("k", &m),
        Ok(ReadOutcome::NotFound {
            metadata: m.clone()
        }),
        "a collected tombstone adds nothing to the metadata"
    );
}

/// A version from `origin` written on top of nothing, at `lamport`.
fn foreign(key: &str, origin: &str, seq: u64, lamport: u64) -> Version {
    let origin = Origin::new(origin, 1);
    Version {
        key: Key::from(key),
        value: v("\"theirs\""),
        dot: Dot {
            origin: origin.clone(),
            seq,
        },
        lamport,
        deps: VClock::from_pairs([(origin, seq)]),
    }
}

#[test]
fn a_version_from_the_far_future_cannot_poison_the_lamport_clock() {
    let mut r = replicas(1);
    let m = VClock::new();
    let report = r[0].apply_versions(vec![foreign("k", "evil", 1, u64::MAX)]);
    assert_eq!(report.refused, 1);
    let (WriteOutcome::Created { metadata } | WriteOutcome::Replaced { metadata }) =
        r[0].write("k", v("\"mine\""), &m).unwrap()
    else {
        panic!("the write is acknowledged")
    };
    assert_eq!(
        r[0].read("k", &metadata).unwrap(),
        ReadOutcome::Found {
            value: JsonText::from("\"mine\""),
            metadata,
        },
        "an acknowledged write is readable, not lost to a poisoned version"
    );
    r[0].check_invariants().unwrap();
}

#[test]
fn leaps_up_to_the_bound_are_applied_and_beyond_it_refused() {
    let mut r = replicas(1);
    let near = foreign("a", "peer", MAX_SEQ_LEAP, MAX_LAMPORT_LEAP);
    assert_eq!(
        r[0].apply_versions(vec![near]),
        ApplyReport {
            changed: 1,
            refused: 0
        }
    );
    // Measured from where the receiver is now: its Lamport time is 2^40.
    let far_seq = foreign("b", "other", MAX_SEQ_LEAP + 1, 1);
    let far_lamport = foreign("c", "other", 1, 2 * MAX_LAMPORT_LEAP + 1);
    let mut far_dep = foreign("d", "other", 1, 1);
    far_dep
        .deps
        .raise(&Origin::new("third", 1), MAX_SEQ_LEAP + 1);
    assert_eq!(
        r[0].apply_versions(vec![far_seq, far_lamport, far_dep]),
        ApplyReport {
            changed: 0,
            refused: 3
        }
    );
    assert_eq!(r[0].store().live_len(), 1);
}

#[test]
fn a_transfer_guarantee_beyond_the_bounds_is_not_adopted() {
    let mut r = replicas(1);
    let evil = Origin::new("evil", 1);
    for covers in [
        Covers {
            clock: VClock::new(),
            lamport: u64::MAX,
            horizon: VClock::new(),
        },
        Covers {
            clock: VClock::from_pairs([(evil.clone(), u64::MAX)]),
            lamport: 1,
            horizon: VClock::new(),
        },
    ] {
        r[0].complete_transfer(&covers);
        assert_eq!(r[0].lamport(), 0);
        assert!(r[0].clock().is_empty());
        r[0].complete_snapshot(&covers, &HashSet::new());
        assert!(r[0].clock().is_empty() && r[0].horizon().is_empty());
    }
}

#[test]
fn a_write_with_no_counter_left_is_refused_not_wrapped() {
    let mut r = replicas(1);
    let m = VClock::new();
    r[0].write("k", v("1"), &m).unwrap();
    r[0].lamport = u64::MAX;
    assert_eq!(
        r[0].write("k", v("2"), &m),
        Err(WriteError::CountersExhausted)
    );
    r[0].lamport = 1;
    r[0].next_seq = u64::MAX;
    assert_eq!(
        r[0].write("k", v("2"), &m),
        Err(WriteError::CountersExhausted)
    );
    let ReadOutcome::Found { value, .. } = r[0].read("k", &m).unwrap() else {
        panic!()
    };
    assert_eq!(value, JsonText::from("1"), "nothing changed");
    r[0].check_invariants().unwrap();
}

#[test]
fn malformed_versions_are_ignored() {
    let mut r = replicas(1);
    let bad = Version {
        key: Key::from("k"),
        value: v("1"),
        dot: Dot {
            origin: Origin::new("z", 1),
            seq: 3,
        },
        lamport: 1,
        deps: VClock::new(),
    };
    assert_eq!(
        r[0].apply_versions(vec![bad]),
        ApplyReport {
            changed: 0,
            refused: 1
        }
    );
    assert!(r[0].store().get("k").is_none());
}

#[test]
fn an_empty_replica_takes_a_foreign_cluster_identity_only_on_evidence() {
    let mut a = Replica::new("r0", 1, &[], T, 0).with_cluster(50);
    let theirs = VClock::from_pairs([(Origin::new("r9", 1), 3)]);
    // A forged digest (empty or not) without evidence moves nothing.
    assert!(a.meet_cluster(1, &VClock::new(), false).is_err());
    assert!(a.meet_cluster(2, &theirs, false).is_err());
    assert_eq!(a.cluster(), 50);
    // Vouched for: an empty replica joins the other cluster.
    assert!(a.meet_cluster(2, &theirs, true).is_ok());
    assert_eq!(a.cluster(), 2);
    // An empty peer is never refused: it adopts ours.
    assert!(a.meet_cluster(3, &VClock::new(), false).is_ok());
    assert_eq!(a.cluster(), 2);
}

#[test]
fn a_guarantee_claiming_our_own_writes_or_an_unknown_newer_life_is_not_adopted() {
    let view = vec!["r0".to_string(), "r1".to_string()];
    let mut a = Replica::new("r0", 5, &view, T, 0);
    a.members.heard_from("r1", 7, 0);
    a.write("x", v("1"), &VClock::new()).unwrap();
    let covers = |origin: Origin, seq| Covers {
        clock: VClock::from_pairs([(origin, seq)]),
        lamport: 1,
        horizon: VClock::new(),
    };
    for forged in [
        covers(Origin::new("r0", 5), 2),
        covers(Origin::new("r0", 6), 1),
        covers(Origin::new("r1", 8), 1),
        covers(Origin::new("r7", 1), 1),
    ] {
        a.complete_transfer(&forged);
        assert_eq!(a.clock(), &VClock::from_pairs([(Origin::new("r0", 5), 1)]));
    }
    // What can be known is adopted: our own past, known lives of others.
    a.complete_transfer(&covers(Origin::new("r1", 7), 9));
    a.complete_transfer(&covers(Origin::new("r0", 4), 3));
    assert_eq!(a.clock().len(), 3);
    // No guarantee grows the clock beyond what peers can read.
    let many = Covers {
        clock: VClock::from_pairs(
            (1..=crate::core::clock::MAX_CLOCK_ENTRIES as u64).map(|i| (Origin::new("r1", i), 1)),
        ),
        lamport: 1,
        horizon: VClock::new(),
    };
    a.members.heard_from("r1", 1 << 20, 0);
    a.complete_transfer(&many);
    assert_eq!(a.clock().len(), 3);
    // A version "of ours" that we never wrote is refused.
    let mut forged = foreign("y", "r0", 2, 2);
    let ours = Origin::new("r0", 5);
    forged.dot.origin = ours.clone();
    forged.deps = VClock::from_pairs([(ours, 2)]);
    assert_eq!(a.apply_versions(vec![forged]).refused, 1);
}

/// Makes `r[at]` hear every replica in `heard` at `now` (with its current
/// clock) and then notice that everybody else has been silent since time 0.
fn hear_only(r: &mut [Replica], at: usize, heard: &[usize], now: u64) {
    for &other in heard {
        let (address, clock) = (r[other].address().to_string(), r[other].clock().clone());
        r[at].members.heard_from(&address, 1, now);
        r[at].members.record_clock(&address, 1, &clock);
    }
    r[at].members.tick(now);
}

/// Pulls from `r[from]` into `r[into]` (a delta, or the snapshot `r[from]` demands).
fn pull(r: &mut [Replica], from: usize, into: usize) -> crate::core::PullDone {
    let (from, into) = if from < into {
        let (left, right) = r.split_at_mut(into);
        (&mut left[from], &mut right[0])
    } else {
        let (left, right) = r.split_at_mut(from);
        (&mut right[0], &mut left[into])
    };
    let done = crate::core::exchange::pull_all(from, into, false, 1 << 20, 0).unwrap();
    into.check_invariants().unwrap();
    done
}

/// The dead-past-grace gap: r2, cut off for longer than the grace period,
/// writes `k` concurrently with a delete that r0 then collects without it
/// (r1 still holds the tombstone). Before the fix r2 kept its write through
/// the snapshot — under a clock that claimed the delete — and passed it on:
/// r0 (which had collected the tombstone) took it, r1 (which had not) kept
/// the delete, and the two disagreed for good. Now r2 re-issues the write
/// above everything the snapshot holds: every replica ends with it, and no
/// acknowledged write is lost.
#[test]
fn a_write_from_past_the_grace_period_concurrent_with_a_collected_delete_converges() {
    let mut r = replicas(3);
    let m = VClock::new();
    r[0].write("k", v("1"), &m).unwrap();
    pull(&mut r, 0, 1);
    pull(&mut r, 0, 2);
    // r2 is cut off and overwrites k; r0 deletes k with a later stamp.
    let WriteOutcome::Replaced {
        metadata: seen_at_r2,
    } = r[2].write("k", v("2"), &m).unwrap()
    else {
        panic!()
    };
    r[0].write("j", v("9"), &m).unwrap();
    r[0].write("k", None, &m).unwrap();
    assert!(r[0].store().get("k").unwrap().stamp() > r[2].store().get("k").unwrap().stamp());
    pull(&mut r, 0, 1);
    // Past the grace period r0 collects the tombstone without r2; r1 still holds it.
    let now = 100_000;
    hear_only(&mut r, 0, &[1], now);
    assert_eq!(r[0].collect_garbage(now), 1);
    assert!(r[1].store().get("k").is_some_and(|t| t.is_tombstone()));
    // r2 comes back: r0 sends it to a snapshot.
    assert!(pull(&mut r, 0, 2).snapshot);
    // Everybody pulls from everybody, twice.
    for _ in 0..2 {
        for (from, into) in [(2, 0), (2, 1), (0, 1), (1, 0), (0, 2), (1, 2)] {
            pull(&mut r, from, into);
        }
    }
    for replica in &r {
        assert_eq!(
            replica.read("k", &m).map(|found| match found {
                ReadOutcome::Found { value, .. } => Some(value),
                ReadOutcome::NotFound { .. } => None,
            }),
            Ok(v("2")),
            "{} disagrees",
            replica.address()
        );
        assert!(
            replica.satisfies(&seen_at_r2),
            "{} lost r2's write",
            replica.address()
        );
    }
}

/// An answer names the latest writes the client observed: the value's dot
/// replaces the client's entries the value depends on, entries it does not
/// depend on stay, and metadata that covers the dot comes back unchanged.
#[test]
fn an_answer_names_only_the_latest_writes_observed() {
    let mut r = replicas(3);
    let none = VClock::new();
    let a = created(&mut r[0], "a", "1", &none);
    assert_eq!(a.len(), 1);
    // b depends on a: after writing it, the client names b alone.
    let b = created(&mut r[0], "b", "2", &a);
    assert_eq!(b, VClock::from_pairs([(r[0].origin().clone(), 2)]));
    // A write at r1 that knows nothing of r0's.
    let c = created(&mut r[1], "c", "3", &none);
    pull(&mut r, 0, 2);
    pull(&mut r, 1, 2);
    // Reading c with b: c does not depend on b, so both stay.
    assert_eq!(found(&r[2], "c", &b), b.joined(&c));
    // Reading a with b: b already covers a's dot, so nothing changes.
    assert_eq!(found(&r[2], "a", &b), b);
    // Reading b with a: b's dot stands for a.
    assert_eq!(found(&r[2], "b", &a), b);
}
