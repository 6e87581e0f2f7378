//! Unit tests of [`super`]; kept beside it so that the module itself stays short.

use super::*;
use crate::core::clock::Origin;

const T: Timing = Timing {
    suspect_after_ms: 700,
    dead_after_ms: 1500,
    dead_member_grace_ms: 10_000,
};

/// `a`'s table of a, b and c, having heard from b and c (only members heard
/// from are in a view).
fn table() -> Membership {
    let view = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let mut m = Membership::new("a", &view, T, 0);
    m.heard_from("b", 1, 0);
    m.heard_from("c", 1, 0);
    m
}

/// A table of `me` among a, b and c, having heard from the other two.
fn table_of(me: &str) -> Membership {
    let view = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let mut m = Membership::new(me, &view, T, 0);
    for peer in ["a", "b", "c"] {
        m.heard_from(peer, 1, 0);
    }
    m
}

#[test]
fn silence_makes_suspect_then_dead_and_contact_refutes() {
    let mut m = table();
    m.heard_from("b", 1, 0);
    m.heard_from("c", 1, 0);
    assert!(m.tick(600).is_empty());
    let changes = m.tick(700);
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.to == Liveness::Suspect));
    assert_eq!(m.view(), vec!["a", "b", "c"], "suspects stay in the view");
    assert_eq!(
        m.heard_from("b", 1, 800),
        Heard::Refreshed { revived: true }
    );
    m.tick(1500);
    assert_eq!(m.view(), vec!["a", "b"]);
    assert_eq!(m.member("c").unwrap().liveness, Liveness::Dead);
    assert_eq!(m.absent_peers(), vec!["c"]);
    assert_eq!(
        m.heard_from("c", 1, 5000),
        Heard::Refreshed { revived: true }
    );
    assert_eq!(m.view(), vec!["a", "b", "c"]);
}

#[test]
fn dead_never_flips_back_by_arithmetic_alone() {
    let mut m = table();
    m.tick(2000);
    assert_eq!(m.view(), vec!["a"]);
    assert!(m.tick(2001).is_empty());
    assert_eq!(m.view(), vec!["a"]);
}

#[test]
fn old_incarnations_are_ignored_and_restarts_reset_known_clock() {
    let mut m = table();
    assert_eq!(m.heard_from("b", 5, 0), Heard::NewIncarnation);
    m.record_clock("b", 5, &VClock::from_pairs([(Origin::new("b", 5), 3)]));
    assert_eq!(m.heard_from("b", 4, 10), Heard::Stale);
    assert_eq!(m.heard_from("b", 6, 10), Heard::NewIncarnation);
    assert!(m.member("b").unwrap().known_clock.is_empty());
}

#[test]
fn what_pushes_delivered_is_kept_per_life_and_never_counts_for_the_frontier() {
    let mut m = table();
    m.heard_from("b", 5, 0);
    let reported = VClock::from_pairs([(Origin::new("b", 5), 3)]);
    let pushed = VClock::from_pairs([(Origin::new("a", 1), 7)]);
    m.record_clock("b", 5, &reported);
    m.record_push("b", 5, &pushed);
    // Another life's acknowledgement says nothing about this one.
    m.record_push("b", 4, &VClock::from_pairs([(Origin::new("a", 1), 9)]));
    let (life, basis) = m.push_basis("b").unwrap();
    assert_eq!(life, 5);
    assert_eq!(basis, reported.joined(&pushed));
    let dot = |origin: &str, seq| Dot {
        origin: Origin::new(origin, if origin == "a" { 1 } else { 5 }),
        seq,
    };
    assert!(m.holds("b", &dot("a", 7)) && m.holds("b", &dot("b", 3)));
    assert!(!m.holds("b", &dot("a", 8)));
    // The frontier only believes what b reported itself.
    let mine = reported.joined(&pushed);
    assert!(!m.stability_frontier(&mine, 0).covers(&pushed));
    // A new life holds nothing that was pushed to the old one.
    assert_eq!(m.heard_from("b", 6, 10), Heard::NewIncarnation);
    assert_eq!(m.push_basis("b").unwrap(), (6, VClock::new()));
}

#[test]
fn left_is_final_for_that_incarnation_only() {
    let mut m = table();
    m.heard_from("b", 1, 0);
    assert!(m.mark_left("b", 1, None).is_some());
    assert_eq!(m.view(), vec!["a", "c"]);
    m.heard_from("b", 1, 100);
    assert_eq!(
        m.view(),
        vec!["a", "c"],
        "a draining replica does not come back"
    );
    m.heard_from("b", 2, 200);
    assert_eq!(m.view(), vec!["a", "b", "c"]);
}

#[test]
fn operator_changes_spread_and_removal_is_not_undone_by_gossip() {
    let mut a = table();
    let mut b = table_of("b");
    assert_eq!(a.remove("c"), ViewChange::Deleted);
    assert_eq!(a.remove("c"), ViewChange::Absent);
    b.merge_admissions(&a.admissions(), 0);
    assert_eq!(b.view(), vec!["a", "b"]);
    // c keeps talking: still not in the view.
    b.heard_from("c", 1, 10);
    assert_eq!(b.view(), vec!["a", "b"]);
    // Stale records from someone who missed the removal do not undo it.
    let stale = Membership::new("a", &["a".into(), "b".into(), "c".into()], T, 0);
    b.merge_admissions(&stale.admissions(), 20);
    assert_eq!(b.view(), vec!["a", "b"]);
    // c announces itself again: back everywhere.
    assert_eq!(b.admit("c", 30), ViewChange::Added);
    assert_eq!(b.admit("c", 30), ViewChange::AlreadyPresent);
    a.merge_admissions(&b.admissions(), 30);
    assert_eq!(a.view(), vec!["a", "b", "c"]);
}

#[test]
fn a_replica_added_to_a_running_cluster_is_admitted_both_ways() {
    // x runs alone; a (in a cluster with b) adds it.
    let mut a = table();
    let mut x = Membership::new("x", &["x".into()], T, 0);
    assert_eq!(a.admit("x", 0), ViewChange::Added);
    // x hears a's heartbeat: a vouches for itself, b comes with the table.
    x.heard_from("a", 1, 0);
    x.merge_admissions(&a.admissions(), 0);
    assert_eq!(x.view(), vec!["a", "x"], "only members it has heard from");
    x.heard_from("b", 1, 0);
    x.heard_from("c", 1, 0);
    assert_eq!(x.view(), vec!["a", "b", "c", "x"]);
    // a hears x, which it had never heard from before: x's records do
    // not remove anyone, even though x had a placeholder for a.
    a.heard_from("x", 1, 0);
    let mut b = table_of("b");
    b.merge_admissions(&a.admissions(), 0);
    b.merge_admissions(&x.admissions(), 0);
    for peer in ["a", "c", "x"] {
        b.heard_from(peer, 1, 0);
    }
    assert_eq!(b.view(), vec!["a", "b", "c", "x"]);
    assert!(x.admissions().iter().all(|r| r.admitted));
}

#[test]
fn an_admission_record_from_the_far_future_is_refused() {
    let mut a = table();
    let poisoned = Admission {
        address: "c".into(),
        admitted: false,
        version: u64::MAX,
    };
    assert_eq!(a.merge_admissions(&[poisoned], 0).refused, 1);
    assert_eq!(a.view(), vec!["a", "b", "c"], "the record decided nothing");
    assert_eq!(a.admit("d", 0), ViewChange::Added);
    a.heard_from("d", 1, 0);
    assert_eq!(a.view(), vec!["a", "b", "c", "d"]);
    assert_eq!(a.remove("d"), ViewChange::Deleted);
    assert_eq!(a.view(), vec!["a", "b", "c"]);
    // Any admitted member can be removed, whether or not it ever answered.
    assert_eq!(a.admit("e", 0), ViewChange::Added);
    assert_eq!(a.remove("e"), ViewChange::Deleted);
    assert!(a.absent_peers().is_empty(), "no longer probed");
}

#[test]
fn an_exhausted_decision_counter_refuses_new_decisions() {
    let mut a = table();
    a.admission_clock = u64::MAX;
    assert_eq!(a.admit("d", 0), ViewChange::CounterExhausted);
    assert_eq!(a.remove("b"), ViewChange::CounterExhausted);
    assert_eq!(a.view(), vec!["a", "b", "c"]);
}

#[test]
fn frontier_waits_for_dead_members_within_grace() {
    let mut m = table();
    let o = Origin::new("a", 1);
    m.heard_from("b", 1, 0);
    m.heard_from("c", 1, 0);
    m.record_clock("b", 1, &VClock::from_pairs([(o.clone(), 5)]));
    m.record_clock("c", 1, &VClock::from_pairs([(o.clone(), 2)]));
    let mine = VClock::from_pairs([(o.clone(), 9)]);
    assert_eq!(m.stability_frontier(&mine, 0).get(&o), 2);
    m.tick(2000);
    assert_eq!(
        m.stability_frontier(&mine, 2000).get(&o),
        2,
        "dead c still counts"
    );
    m.tick(40_000);
    assert_eq!(
        m.stability_frontier(&mine, 40_000).get(&o),
        9,
        "both gone past grace"
    );
}

#[test]
fn a_replica_learns_its_own_removal_and_then_lists_only_itself() {
    let mut a = table();
    let mut c = table_of("c");
    assert_eq!(a.remove("c"), ViewChange::Deleted);
    assert!(!c.removed());
    let merged = c.merge_admissions(&a.admissions(), 0);
    assert!(merged
        .changed
        .iter()
        .any(|r| r.address == "c" && !r.admitted));
    assert!(c.removed());
    assert_eq!(c.view(), vec!["c"]);
    assert_eq!(
        c.live_peers().len(),
        2,
        "it keeps exchanging with its peers"
    );
    // Added back anywhere: it learns that too.
    let mut b = table_of("b");
    b.merge_admissions(&a.admissions(), 0);
    assert_eq!(b.admit("c", 0), ViewChange::Added);
    c.merge_admissions(&b.admissions(), 0);
    assert!(!c.removed());
    assert_eq!(c.view(), vec!["a", "b", "c"]);
}

#[test]
fn every_class_of_member_has_a_rule_in_the_stability_frontier() {
    let o = Origin::new("a", 1);
    let view: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let mut m = Membership::new("a", &view, T, 0);
    let mine = VClock::from_pairs([(o.clone(), 9)]);
    for (peer, seen) in [("b", 7), ("c", 5), ("d", 3)] {
        m.heard_from(peer, 1, 0);
        m.record_clock(peer, 1, &VClock::from_pairs([(o.clone(), seen)]));
    }
    assert_eq!(m.stability_frontier(&mine, 0).get(&o), 3);
    // d removed by an operator but still running: still counted.
    m.remove("d");
    m.heard_from("d", 1, 100);
    assert_eq!(m.stability_frontier(&mine, 100).get(&o), 3);
    // d left (handed off and said goodbye): no longer counted.
    m.mark_left("d", 1, None);
    assert_eq!(m.stability_frontier(&mine, 100).get(&o), 5);
    // c dead, within the grace period and then past it.
    m.heard_from("b", 1, 5_000);
    m.tick(5_000);
    assert_eq!(m.member("c").unwrap().liveness, Liveness::Dead);
    assert_eq!(m.stability_frontier(&mine, 5_000).get(&o), 5);
    m.heard_from("b", 1, 20_000);
    assert_eq!(m.stability_frontier(&mine, 20_000).get(&o), 7);
}

/// A member never heard from holds no data anybody gave it, but it may be a
/// replica cut off from us since it started: it holds collection back (with
/// an empty clock) only until the failure detector declares it dead, not for
/// the whole grace period. Should it ever appear, it takes a snapshot (our
/// horizon is above its clock), which re-issues whatever it wrote that a
/// collected delete may have beaten (see `Replica::complete_snapshot`).
#[test]
fn a_member_never_heard_from_holds_collection_back_only_until_declared_dead() {
    let o = Origin::new("a", 1);
    let mut m = Membership::new("a", &["a".into(), "b".into(), "e".into()], T, 0);
    let mine = VClock::from_pairs([(o.clone(), 9)]);
    m.heard_from("b", 1, 0);
    m.record_clock("b", 1, &VClock::from_pairs([(o.clone(), 7)]));
    assert_eq!(
        m.stability_frontier(&mine, 0).get(&o),
        0,
        "e may be starting up"
    );
    let declared_dead = T.dead_after_ms + 1;
    assert!(declared_dead < T.dead_member_grace_ms);
    m.heard_from("b", 1, declared_dead);
    m.tick(declared_dead);
    assert_eq!(
        m.stability_frontier(&mine, declared_dead).get(&o),
        7,
        "e never answered: it holds nothing of ours"
    );
    // Heard at last, it counts again, with the clock it reports.
    m.heard_from("e", 1, declared_dead + 1);
    assert_eq!(m.stability_frontier(&mine, declared_dead + 1).get(&o), 0);
}

#[test]
fn a_leave_ends_only_the_life_known_and_only_from_its_process() {
    let mut m = table();
    m.heard_from_process("b", 5, Some(77), true, 0);
    // Never heard, newer, older, or another process: nothing changes.
    assert!(m.mark_left("d", 1, None).is_none());
    assert!(m.mark_left("b", u64::MAX, None).is_none());
    assert!(m.mark_left("b", 6, None).is_none());
    assert!(m.mark_left("b", 4, None).is_none());
    assert!(m.mark_left("b", 5, Some(78)).is_none());
    assert_eq!(m.view(), vec!["a", "b", "c"]);
    assert_eq!(
        m.heard_from("b", 5, 10),
        Heard::Refreshed { revived: false }
    );
    assert!(m.mark_left("b", 5, Some(77)).is_some());
    assert_eq!(m.view(), vec!["a", "c"]);
}

#[test]
fn a_request_from_a_non_member_adds_nothing_and_the_table_is_capped() {
    let mut m = table();
    assert_eq!(m.heard_from_process("x", 1, None, false, 0), Heard::Unknown);
    assert!(m.member("x").is_none());
    for i in 0..2 * MAX_MEMBERS {
        m.heard_from(&format!("h{i}"), 1, 0);
        let record = Admission {
            address: format!("r{i}"),
            admitted: true,
            version: 1,
        };
        m.merge_admissions(&[record], 0);
        assert!(m.members().count() <= MAX_MEMBERS);
    }
    assert_eq!(m.members().count(), MAX_MEMBERS);
    assert_eq!(m.admit("one-more", 0), ViewChange::TableFull);
    // Decisions already taken stay: b and c are still admitted members.
    assert!(m.member("b").unwrap().admission.admitted);
    assert_eq!(m.admit("b", 0), ViewChange::AlreadyPresent);
}

#[test]
fn a_sender_never_admitted_is_forgotten_once_dead_past_the_grace_period() {
    let mut m = table();
    m.heard_from("x", 1, 0);
    assert!(m.remove("c") == ViewChange::Deleted);
    m.tick(T.dead_after_ms);
    assert!(m.member("x").is_some(), "dead, but within the grace period");
    m.tick(T.dead_member_grace_ms + 1);
    assert!(m.member("x").is_none(), "forgotten after the grace period");
    // Decisions are never forgotten: the removed c and the admitted b stay.
    assert!(m.member("c").is_some() && m.member("b").is_some());
}
