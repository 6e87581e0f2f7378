//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

use super::*;
use crate::core::membership::Timing;
use crate::core::store::JsonText;
use crate::core::{ReadOutcome, WriteOutcome};

const T: Timing = Timing {
    suspect_after_ms: 700,
    dead_after_ms: 1500,
    dead_member_grace_ms: 10_000,
};

fn view(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

fn replica(i: usize, incarnation: u64, n: usize) -> Replica {
    Replica::new(&format!("r{i}"), incarnation, &view(n), T, 0)
}

fn put(r: &mut Replica, key: &str) -> VClock {
    match r
        .write(key, Some(JsonText::from("1")), &VClock::new())
        .unwrap()
    {
        WriteOutcome::Created { metadata } | WriteOutcome::Replaced { metadata } => metadata,
        other => panic!("{other:?}"),
    }
}

fn holds(r: &Replica, key: &str) -> bool {
    matches!(r.read(key, &VClock::new()), Ok(ReadOutcome::Found { .. }))
}

/// The reviewer's first finding, in the core: what a peer's earlier life
/// reported must not shape a push to its new life.
#[test]
fn a_push_computed_against_an_earlier_life_is_refused() {
    let (mut a, mut b) = (replica(0, 1, 2), replica(1, 1, 2));
    for key in ["k1", "k2"] {
        put(&mut a, key);
    }
    pull_all(&mut a, &mut b, false, 1 << 20, 0).unwrap();
    // a learns b's clock (it covers k1, k2) from b's next pull.
    pull_all(&mut a, &mut b, false, 1 << 20, 0).unwrap();
    let k3 = put(&mut a, "k3");
    let mut push = Push::start(&a, "r1").expect("b lacks k3");
    // b restarts empty, as a new life.
    let mut b = replica(1, 2, 2);
    let request = push.next_request(&a, 1 << 20).unwrap().unwrap();
    assert_eq!(
        b.accept_push(request, 0),
        Err(Refusal::WrongReceiver { life: b.life() })
    );
    assert!(!b.clock().covers(&k3));
    assert!(b.clock().is_empty(), "nothing claimed");
}

/// A push whose basis the receiver's clock does not cover proves nothing
/// about what the basis covers: its versions are kept, its guarantee not.
#[test]
fn a_push_guarantee_is_adopted_only_above_its_basis() {
    let (mut a, mut b) = (replica(0, 1, 2), replica(1, 1, 2));
    let k1 = put(&mut a, "k1");
    put(&mut a, "k2");
    // a believes b holds k1 (say a forged or confused report).
    a.members.heard_from("r1", 1, 0);
    a.members.record_clock("r1", 1, &k1);
    let applied = push_all(&a, &mut b, 1 << 20, 0).unwrap().unwrap();
    assert!(!applied.adopted);
    assert!(holds(&b, "k2") && !holds(&b, "k1"));
    assert!(
        !b.clock().covers(&k1),
        "b does not claim k1, which it lacks"
    );
    b.check_invariants().unwrap();
    // A push computed against what b really holds is adopted.
    pull_all(&mut a, &mut b, false, 1 << 20, 0).unwrap();
    assert!(b.clock().covers(a.clock()));
}

/// A pull that meets another life of its peer part-way is abandoned.
#[test]
fn a_pull_bound_to_one_life_refuses_chunks_of_another() {
    let (mut a, mut b) = (replica(0, 1, 2), replica(1, 1, 2));
    for i in 0..20 {
        put(&mut a, &format!("k{i}"));
    }
    let mut pull = Pull::new("r0", false);
    let chunk = a.answer_pull(&pull.request(&b), 0, 64).unwrap();
    assert_eq!(pull.on_chunk(&mut b, chunk, 0), Ok(PullStep::More));
    // a restarts (a new life with its own writes) and is asked for more.
    let mut a2 = replica(0, 2, 2);
    put(&mut a2, "fresh");
    let request = pull.request(&b);
    assert_eq!(
        a2.answer_pull(&request, 0, 64),
        Err(Refusal::WrongReceiver { life: a2.life() })
    );
    // Even a chunk that got through is refused by the requester.
    let stray = a2
        .answer_pull(&Pull::new("r0", false).request(&b), 0, 64)
        .unwrap();
    assert!(matches!(
        pull.on_chunk(&mut b, stray, 0),
        Err(ExchangeError::WrongLife { .. })
    ));
    assert!(b.clock().is_empty(), "nothing claimed from either life");
    b.check_invariants().unwrap();
}

/// The reviewer's sixth finding: a pull that must switch to a snapshot
/// after its first chunk starts over, so the snapshot's key list is
/// complete and no live key is dropped.
#[test]
fn a_switch_to_a_snapshot_part_way_starts_the_pull_over() {
    let (mut a, mut b, mut c) = (replica(0, 1, 3), replica(1, 1, 3), replica(2, 1, 3));
    for i in 0..10 {
        put(&mut a, &format!("k{i}"));
    }
    pull_all(&mut a, &mut c, false, 1 << 20, 0).unwrap();
    let mut pull = Pull::new("r0", false);
    let chunk = a.answer_pull(&pull.request(&b), 0, 64).unwrap();
    assert!(!chunk.snapshot_required && !chunk.entries.is_empty());
    assert_eq!(pull.on_chunk(&mut b, chunk, 0), Ok(PullStep::More));
    // Meanwhile b is dead past the grace period at a, and a raises its
    // horizon to what c holds: b is now below it.
    let later = 1_000_000;
    a.members.heard_from("r2", 1, later);
    a.members.record_clock("r2", 1, c.clock());
    a.members.tick(later);
    a.collect_garbage(later);
    assert!(!b.clock().covers(a.horizon()));
    let mut snapshot = false;
    loop {
        let chunk = a.answer_pull(&pull.request(&b), later, 64).unwrap();
        snapshot |= chunk.snapshot_required;
        if let PullStep::Done(done) = pull.on_chunk(&mut b, chunk, later).unwrap() {
            assert!(done.snapshot && snapshot);
            assert_eq!(done.dropped, 0);
            break;
        }
    }
    for i in 0..10 {
        assert!(holds(&b, &format!("k{i}")), "k{i} kept");
    }
    assert_eq!(b.clock(), a.clock());
    b.check_invariants().unwrap();
}

#[test]
fn a_join_after_a_stale_refusal_opens_a_newer_life() {
    let mut a = replica(0, 1, 2);
    a.members.heard_from("r1", 7, 0);
    let mut b = replica(1, 5, 2);
    let refusal = a.hear(&b.life(), 0).unwrap_err();
    let Refusal::StaleSender { known } = refusal else {
        panic!("{refusal:?}")
    };
    assert!(b.open_new_life(known + 1));
    assert_eq!(b.incarnation(), 8);
    assert!(a.hear(&b.life(), 0).is_ok());
    let mut last = replica(1, u64::MAX, 2);
    assert!(
        !last.open_new_life(u64::MAX),
        "no incarnation above the largest"
    );
}

/// A push from a peer that has not seen a tombstone this replica has
/// collected may carry the value that tombstone deleted: refused.
#[test]
fn no_delta_is_taken_from_a_peer_below_the_horizon() {
    let (mut a, mut b) = (replica(0, 1, 2), replica(1, 1, 2));
    put(&mut a, "k");
    pull_all(&mut a, &mut b, false, 1 << 20, 0).unwrap();
    // b is cut off; it overwrites k concurrently (a lower Lamport time
    // than a's delete, so the delete should win).
    b.write("k", Some(JsonText::from("2")), &VClock::new())
        .unwrap();
    put(&mut a, "other");
    a.write("k", None, &VClock::new()).unwrap();
    // b is dead past the grace period at a: a collects the tombstone.
    let later = 1_000_000;
    a.members.tick(later);
    assert_eq!(a.collect_garbage(later), 1);
    // b returns and pushes: refused, nothing applied.
    a.members.heard_from("r1", 1, later);
    assert_eq!(
        push_all(&b, &mut a, 1 << 20, later),
        Err(ExchangeError::Refused(Refusal::SenderBelowHorizon))
    );
    // a pulling a delta from b refuses it too.
    assert_eq!(
        pull_all(&mut b, &mut a, false, 1 << 20, later),
        Err(ExchangeError::PeerBelowHorizon)
    );
    assert!(!holds(&a, "k"), "the delete holds at a");
    // b takes a snapshot from a and is then up to date.
    pull_all(&mut a, &mut b, false, 1 << 20, later).unwrap();
    assert!(b.clock().covers(a.horizon()));
    b.check_invariants().unwrap();
}
