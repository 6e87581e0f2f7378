//! One replica's whole state and every rule that changes it: the pure core.
//!
//! No I/O, no tasks, no wall clock, no randomness: the shell ([`crate::node`])
//! passes time in and carries the messages this module produces.
//!
//! # Invariants
//!
//! * **I1 (reflection).** For every write `w` the clock covers, the store holds
//!   `w` or a version of `w`'s key whose stamp is greater (a later or winning
//!   concurrent write, possibly a tombstone) — or held such a tombstone and
//!   collected it once every member had it.
//! * **Horizon.** `horizon` only grows, and every member not gone for longer
//!   than the grace period covered it when it was raised. A peer whose clock
//!   does not cover it (a new replica, or one gone longer than the grace
//!   period) must take a full snapshot; this is what makes collecting the
//!   tombstones below it safe.
//!
//! Client metadata is never trimmed below the horizon: a replica back after
//! the grace period, or one that started empty because no peer answered,
//! serves clients before it learns what it missed, and only the full
//! metadata makes it hold those clients back instead of answering stale.
//! * **I2 (closure).** For every stored version whose dot the clock covers, the
//!   clock also covers the version's dependencies. Together with I1: the clock
//!   never claims a write whose causal past is missing here.
//! * **I3 (Lamport).** `lamport` is at least the Lamport time of every write the
//!   clock covers, so a new local write's stamp beats everything it depends on.
//!
//! Versions received in an incomplete transfer are applied at once (they are
//! safe to read: clients inherit their dependencies and are held back if they
//! then ask for something missing), but the clock is raised only when the
//! transfer completes, to the sender's clock as of its first chunk.
//!
//! # Bounds on counters from the network
//!
//! Lamport times and sequence numbers are `u64` and only ever grow; a local
//! write takes the next of each. A peer (buggy, or anyone who can reach the
//! internal endpoint) could send a version stamped near `u64::MAX`: it would
//! win every later write of its key, and the next local write would have no
//! counter left. So a version is refused (not applied, and counted by the
//! shell) when its Lamport time is more than [`MAX_LAMPORT_LEAP`] (2^40)
//! beyond this replica's own, or when its sequence number or any of its
//! dependencies is more than [`MAX_SEQ_LEAP`] (2^40) beyond what this
//! replica's clock holds for that origin. A transfer's guarantee
//! ([`Covers`]) is held to the same bounds. 2^40 is about a trillion writes —
//! more than any real history — yet leaves 2^24 such leaps before a counter
//! could run out. Should one run out anyway, a local write is refused
//! ([`WriteError::CountersExhausted`]); counters never wrap.

use std::collections::HashSet;

use super::clock::{Dot, Origin, VClock};
use super::exchange::Covers;
use super::membership::{Membership, Timing};
use super::store::{Applied, JsonText, Key, Store, Version};

/// How far beyond this replica's Lamport time a version (or a transfer's
/// guarantee) from the network may be; anything further is refused.
pub const MAX_LAMPORT_LEAP: u64 = 1 << 40;

/// How far beyond this replica's clock entry for an origin a sequence number
/// from the network may be; anything further is refused.
pub const MAX_SEQ_LEAP: u64 = 1 << 40;

/// A client request needs writes this replica does not (yet) have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NotYet;

/// Why a local write was not taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteError {
    /// The client has seen writes this replica does not (yet) have.
    NotYet,
    /// The sequence number or Lamport time of this replica's life is at its
    /// maximum. Bounded leaps make this practically unreachable; the write is
    /// refused rather than let a counter wrap.
    CountersExhausted,
}

impl From<NotYet> for WriteError {
    fn from(_: NotYet) -> Self {
        WriteError::NotYet
    }
}

/// What [`Replica::apply_versions`] did with a batch.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ApplyReport {
    /// Versions that changed the store.
    pub changed: usize,
    /// Versions refused as malformed or beyond the counter bounds.
    pub refused: usize,
}

/// A missing key's answer carries metadata too: the client's joined with the
/// dependencies of the tombstone it observed (if the store still holds one),
/// so a client that saw a delete is never served the deleted value afterwards
/// by a replica that has not had the delete yet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ReadOutcome {
    /// The key holds a value.
    Found {
        /// The value's JSON text.
        value: JsonText,
        /// What the client has now seen: its metadata and the value's causal past.
        metadata: VClock,
    },
    /// The key is missing or deleted.
    NotFound {
        /// What the client has now seen: its metadata and the tombstone's causal past.
        metadata: VClock,
    },
}

#[derive(Clone, PartialEq, Eq, Debug)]
/// What a client write (or delete) did.
pub enum WriteOutcome {
    /// The key was missing or deleted and now holds the value.
    Created {
        /// What the client has now seen: its metadata and this write.
        metadata: VClock,
    },
    /// The key held a value, now replaced.
    Replaced {
        /// What the client has now seen: its metadata and this write.
        metadata: VClock,
    },
    /// The key held a value, now deleted (a tombstone).
    Deleted {
        /// What the client has now seen: its metadata and this delete.
        metadata: VClock,
    },
    /// A delete of a missing key; `metadata` as in [`ReadOutcome::NotFound`].
    NotFound {
        /// What the client has now seen (see [`ReadOutcome::NotFound`]).
        metadata: VClock,
    },
}

#[derive(Debug)]
/// One replica's whole state: its life, counters, clock, store, horizon and member table.
pub struct Replica {
    address: String,
    incarnation: u64,
    origin: Origin,
    next_seq: u64,
    lamport: u64,
    clock: VClock,
    store: Store,
    /// The stability horizon: the join of every stability frontier this
    /// replica collected tombstones below.
    horizon: VClock,
    /// The member table (admissions, liveness, known clocks per life).
    pub members: Membership,
}

impl Replica {
    /// A replica of `address` in life `incarnation`, empty, with `view` admitted.
    pub fn new(
        address: &str,
        incarnation: u64,
        view: &[String],
        timing: Timing,
        now_ms: u64,
    ) -> Self {
        Replica {
            address: address.to_string(),
            incarnation,
            origin: Origin::new(address, incarnation),
            next_seq: 1,
            lamport: 0,
            clock: VClock::new(),
            store: Store::new(),
            horizon: VClock::new(),
            members: Membership::new(address, view, timing, now_ms),
        }
    }

    /// This replica's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its current life's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The origin of its current life: the name of its new writes.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Every write it holds (or holds something that beats).
    pub fn clock(&self) -> &VClock {
        &self.clock
    }

    /// Its Lamport time.
    pub fn lamport(&self) -> u64 {
        self.lamport
    }

    /// The versioned map.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Its stability horizon: below it, tombstones may have been collected.
    pub fn horizon(&self) -> &VClock {
        &self.horizon
    }

    /// Starts a new life of this replica with an incarnation of at least
    /// `min_incarnation` (and above the current one): a peer knows a life of
    /// this address at least as new as ours, so ours must move past it. The
    /// data and the clock stay (they are this replica's, whatever its life);
    /// new writes get dots of the new origin, from sequence 1.
    ///
    /// Returns `false`, changing nothing, when no larger incarnation exists.
    pub fn open_new_life(&mut self, min_incarnation: u64) -> bool {
        let Some(next) = self.incarnation.checked_add(1) else {
            return false;
        };
        self.incarnation = next.max(min_incarnation);
        self.origin = Origin::new(&self.address, self.incarnation);
        self.next_seq = 1;
        true
    }

    /// Whether a client that has seen `metadata` can be served here now.
    pub fn satisfies(&self, metadata: &VClock) -> bool {
        self.clock.covers(metadata)
    }

    /// Reads `key` for a client that has seen `metadata`; `NotYet` if this replica lacks some of it.
    pub fn read(&self, key: &str, metadata: &VClock) -> Result<ReadOutcome, NotYet> {
        if !self.satisfies(metadata) {
            return Err(NotYet);
        }
        Ok(match self.store.get(key) {
            Some(Version {
                value: Some(value),
                deps,
                ..
            }) => ReadOutcome::Found {
                value: value.clone(),
                metadata: metadata.joined(deps),
            },
            _ => ReadOutcome::NotFound {
                metadata: self.metadata_for_missing(key, metadata),
            },
        })
    }

    /// What a client that has seen `metadata` and is told `key` is missing
    /// has now seen: the delete, if the store still holds its tombstone (a
    /// key that never existed, or whose tombstone was collected, adds
    /// nothing).
    fn metadata_for_missing(&self, key: &str, metadata: &VClock) -> VClock {
        match self.store.get(key) {
            Some(tombstone) if tombstone.is_tombstone() => metadata.joined(&tombstone.deps),
            _ => metadata.clone(),
        }
    }

    /// Puts `value` under `key`, or deletes `key` when `value` is `None`.
    pub fn write(
        &mut self,
        key: &str,
        value: Option<JsonText>,
        metadata: &VClock,
    ) -> Result<WriteOutcome, WriteError> {
        if !self.satisfies(metadata) {
            return Err(WriteError::NotYet);
        }
        let current = self.store.get(key);
        let exists = current.is_some_and(|v| !v.is_tombstone());
        // An overwrite shares the key's existing text instead of copying it.
        let shared_key = current.map_or_else(|| Key::from(key), |v| v.key.clone());
        let deleting = value.is_none();
        if deleting && !exists {
            return Ok(WriteOutcome::NotFound {
                metadata: self.metadata_for_missing(key, metadata),
            });
        }
        let (Some(next_seq), Some(lamport)) =
            (self.next_seq.checked_add(1), self.lamport.checked_add(1))
        else {
            return Err(WriteError::CountersExhausted);
        };
        let seq = self.next_seq;
        self.next_seq = next_seq;
        self.lamport = lamport;
        let dot = Dot {
            origin: self.origin.clone(),
            seq,
        };
        let mut deps = metadata.clone();
        deps.raise(&dot.origin, seq);
        let version = Version {
            key: shared_key,
            value,
            dot,
            lamport: self.lamport,
            deps: deps.clone(),
        };
        let applied = self.store.apply(version);
        debug_assert!(
            matches!(applied, Applied::Replaced { .. }),
            "a local write always wins"
        );
        self.clock.raise(&self.origin, seq);
        Ok(match (deleting, exists) {
            (true, _) => WriteOutcome::Deleted { metadata: deps },
            (false, true) => WriteOutcome::Replaced { metadata: deps },
            (false, false) => WriteOutcome::Created { metadata: deps },
        })
    }

    /// Applies versions from a peer; reports how many changed the store and
    /// how many were refused (malformed, or beyond the counter bounds).
    ///
    /// A version whose dot the clock already covers is skipped: by I1 this
    /// replica holds it or something that beats it — or held a tombstone
    /// that beat it and has collected it, in which case applying the old
    /// version would bring a deleted key back. (A peer's delta can carry such
    /// versions when its idea of our clock is stale, and a snapshot from a
    /// peer that missed a delete always does.)
    pub fn apply_versions(&mut self, versions: Vec<Version>) -> ApplyReport {
        let mut report = ApplyReport::default();
        for version in versions {
            if !Self::well_formed(&version) || !self.within_bounds(&version) {
                report.refused += 1;
                continue;
            }
            if self.clock.covers_dot(&version.dot) {
                continue;
            }
            self.lamport = self.lamport.max(version.lamport);
            if let Applied::Replaced { .. } = self.store.apply(version) {
                report.changed += 1;
            }
        }
        report
    }

    /// Whether `lamport` is no further ahead of this replica's Lamport time
    /// than [`MAX_LAMPORT_LEAP`].
    fn plausible_lamport(&self, lamport: u64) -> bool {
        lamport <= self.lamport.saturating_add(MAX_LAMPORT_LEAP)
    }

    /// Whether every entry of `clock` is no further ahead of this replica's
    /// clock than [`MAX_SEQ_LEAP`].
    fn plausible_clock(&self, clock: &VClock) -> bool {
        clock
            .iter()
            .all(|(origin, seq)| *seq <= self.clock.get(origin).saturating_add(MAX_SEQ_LEAP))
    }

    /// Whether a transfer's guarantee stays within the counter bounds. One
    /// that does not is not adopted (the versions it claims were refused).
    fn plausible_covers(&self, covers: &Covers) -> bool {
        self.plausible_lamport(covers.lamport)
            && self.plausible_clock(&covers.clock)
            && self.plausible_clock(&covers.horizon)
    }

    /// Whether a version from the network stays within the counter bounds
    /// (its dot is one of its dependencies, so checking them covers it).
    fn within_bounds(&self, version: &Version) -> bool {
        self.plausible_lamport(version.lamport) && self.plausible_clock(&version.deps)
    }

    /// A version from the network is usable only if it is internally
    /// consistent; anything else is dropped rather than allowed to break I2.
    fn well_formed(version: &Version) -> bool {
        version.dot.seq > 0 && version.deps.covers_dot(&version.dot) && !version.key.is_empty()
    }

    /// A transfer completed: adopt the sender's guarantee.
    pub fn complete_transfer(&mut self, covers: &Covers) {
        if !self.plausible_covers(covers) {
            return;
        }
        self.clock.merge(&covers.clock);
        self.lamport = self.lamport.max(covers.lamport);
    }

    /// A full snapshot completed: drop versions the sender had deleted and
    /// collected, then adopt its guarantee and its horizon.
    pub fn complete_snapshot(&mut self, covers: &Covers, snapshot_keys: &HashSet<Key>) -> usize {
        if !self.plausible_covers(covers) {
            return 0;
        }
        let dropped = self
            .store
            .drop_versions_deleted_elsewhere(&covers.clock, snapshot_keys);
        self.complete_transfer(covers);
        self.horizon.merge(&covers.horizon);
        dropped
    }

    /// Raises the horizon to the stability frontier (what every member not
    /// gone past the grace period holds) and collects the tombstones below it.
    /// Returns how many were collected.
    pub fn collect_garbage(&mut self, now_ms: u64) -> usize {
        let frontier = self.members.stability_frontier(&self.clock, now_ms);
        self.horizon.merge(&frontier);
        self.store.collect_tombstones(&self.horizon).len()
    }

    /// Checks I2 and I3 over the whole store (tests and debug assertions).
    pub fn check_invariants(&self) -> Result<(), String> {
        for version in self.store.versions() {
            if self.clock.covers_dot(&version.dot) {
                if !self.clock.covers(&version.deps) {
                    return Err(format!(
                        "{}: clock {:?} claims {:?} but not its deps {:?}",
                        self.address, self.clock, version.dot, version.deps
                    ));
                }
                if version.lamport > self.lamport {
                    return Err(format!(
                        "{}: lamport behind {:?}",
                        self.address, version.dot
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn causal_metadata_holds_back_a_replica_that_is_behind() {
        let mut r = replicas(2);
        let (a, b) = r.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let WriteOutcome::Created { metadata } = a.write("x", v("1"), &VClock::new()).unwrap()
        else {
            panic!()
        };
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
        let WriteOutcome::Created { metadata: my } = a.write("y", v("2"), &VClock::new()).unwrap()
        else {
            panic!()
        };
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
        let WriteOutcome::Created { metadata: seen } =
            a.write("other", v("1"), &VClock::new()).unwrap()
        else {
            panic!()
        };
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
        let WriteOutcome::Created { metadata: put } = r[0].write("k", v("1"), &none).unwrap()
        else {
            panic!()
        };
        let (left, right) = r.split_at_mut(1);
        sync(&mut left[0], &mut right[0], 1 << 20);
        sync(&mut left[0], &mut right[1], 1 << 20);
        let WriteOutcome::Deleted { metadata: deleted } = r[0].write("k", None, &put).unwrap()
        else {
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
        let WriteOutcome::Created {
            metadata: elsewhere,
        } = r[1].write("j", v("2"), &none).unwrap()
        else {
            panic!()
        };
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
        let WriteOutcome::Created { .. } = r[0].write("j", v("9"), &m).unwrap() else {
            panic!()
        };
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
        let old = r[0].store().get("k").unwrap().clone();
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
}
