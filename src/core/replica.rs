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
//! * **Horizon.** `horizon` is a frontier every member not gone for longer
//!   than the grace period covered; it is covered by the clock. A peer whose
//!   clock does not cover it (a new replica, or one gone longer than the
//!   grace period) must take a full snapshot; this is what makes collecting
//!   the tombstones below it safe. It only grows.
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
//! * **C1 (closed clock).** If the clock covers a write, it covers that
//!   write's dependencies. A clock grows only by this life's own writes
//!   (whose dependencies it covered when the client was served), by
//!   adopting a peer's whole clock (closed by the same law; a guarantee is
//!   never adopted in part), or by a recovery's stored clock (a clock it
//!   had). So a write's dot stands for its causal past, and answers name
//!   only the latest writes a client observed (`observed`).
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

use super::clock::{Dot, Origin, VClock, MAX_CLOCK_ENTRIES};
use super::exchange::{Covers, Refusal};
use super::membership::{Membership, Timing};
use super::store::{Applied, JsonText, Key, Store, Version, VersionRef};

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

/// What [`Replica::complete_snapshot`] did beyond applying the versions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SnapshotApplied {
    /// Local versions dropped: the sender had deleted and collected them,
    /// or they came in a transfer that never completed and a collected
    /// delete may have beaten them.
    pub dropped: usize,
    /// Values re-issued as new writes of this life because a collected
    /// delete may have beaten them ([`Replica::complete_snapshot`]).
    pub reissued: usize,
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

impl WriteOutcome {
    /// What the client has now seen, whatever the outcome.
    pub fn metadata(&self) -> &VClock {
        match self {
            WriteOutcome::Created { metadata }
            | WriteOutcome::Replaced { metadata }
            | WriteOutcome::Deleted { metadata }
            | WriteOutcome::NotFound { metadata } => metadata,
        }
    }
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
    /// The identity of the cluster whose data this replica holds (see
    /// [`Replica::meet_cluster`]).
    cluster: u64,
    /// The member table (admissions, liveness, known clocks per life).
    pub members: Membership,
    /// Keys whose stored version came from a peer and whose dot the clock
    /// may not cover yet (a transfer's versions are covered only when its
    /// guarantee is adopted). A guarantee is checked against exactly these
    /// before it is adopted (see [`Replica::complete_transfer`]).
    uncovered: HashSet<Key>,
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
            cluster: 0,
            members: Membership::new(address, view, timing, now_ms),
            uncovered: HashSet::new(),
        }
    }

    /// Sets the cluster identity this replica proposes while it holds no data
    /// (a random number chosen at start; 0 in tests that do not care).
    pub fn with_cluster(mut self, cluster: u64) -> Self {
        self.cluster = cluster;
        self
    }

    /// The identity of the cluster whose data this replica holds.
    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    /// Checks a peer's cluster identity before anything it says is taken in.
    ///
    /// Two clusters are never merged by accident: a peer of another cluster
    /// is refused unless one side holds no data yet (a new or restarted
    /// replica, as when an operator adds one), in which case the empty side
    /// adopts the other's identity — the smaller one when both are empty, so
    /// that two empty replicas agree.
    ///
    /// Adopting needs evidence, `vouched`: the sender is admitted here, or
    /// this replica reached it at its address itself and it admits this
    /// replica (the shell decides; see `Node::observe`). Without it an empty
    /// replica neither adopts nor merges: a forged digest with an empty clock
    /// and a small identity would otherwise move it to a foreign cluster,
    /// which its real peers would then refuse once it holds data.
    pub fn meet_cluster(
        &mut self,
        theirs: u64,
        their_clock: &VClock,
        vouched: bool,
    ) -> Result<(), Refusal> {
        if theirs == self.cluster {
            return Ok(());
        }
        let mine_empty = self.clock.is_empty();
        let theirs_empty = their_clock.is_empty();
        if mine_empty && (!theirs_empty || theirs < self.cluster) {
            if vouched {
                self.cluster = theirs;
                return Ok(());
            }
            return Err(Refusal::OtherCluster {
                cluster: self.cluster,
            });
        }
        if theirs_empty {
            // They hold nothing: they will adopt ours.
            return Ok(());
        }
        Err(Refusal::OtherCluster {
            cluster: self.cluster,
        })
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
            Some(version) if !version.is_tombstone() => ReadOutcome::Found {
                value: JsonText::from(version.value().unwrap_or_default()),
                metadata: observed(metadata, &version),
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
            Some(tombstone) if tombstone.is_tombstone() => observed(metadata, &tombstone),
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
        let exists = self.store.get(key).is_some_and(|v| !v.is_tombstone());
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
        // The write's dot alone stands for everything it depends on (C1).
        let seen = VClock::from_pairs([(dot.origin.clone(), seq)]);
        let version = Version {
            key: Key::from(key),
            value,
            dot,
            lamport: self.lamport,
            deps,
        };
        let applied = self.store.apply(version);
        debug_assert!(
            matches!(applied, Applied::Replaced { .. }),
            "a local write always wins"
        );
        self.clock.raise(&self.origin, seq);
        Ok(match (deleting, exists) {
            (true, _) => WriteOutcome::Deleted { metadata: seen },
            (false, true) => WriteOutcome::Replaced { metadata: seen },
            (false, false) => WriteOutcome::Created { metadata: seen },
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
            let key = version.key.clone();
            if let Applied::Replaced { .. } = self.store.apply(version) {
                report.changed += 1;
                self.uncovered.insert(key);
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

    /// Whether a transfer's guarantee stays within the counter bounds and
    /// claims nothing the sender cannot know. One that does not is not
    /// adopted (the versions it came with are still applied).
    ///
    /// What can be checked without per-replica keys: no life of *this*
    /// address beyond what this replica itself made (nobody knows more of
    /// our writes than we do), no life of an address that is not a member,
    /// no life of another address newer than the one this replica knows
    /// there (its writes reach us with its heartbeats soon enough), and no
    /// growth of the clock beyond what peers can read. A claim about a known life of another
    /// replica cannot be checked (see ARCHITECTURE.md, "Input from peers").
    fn plausible_covers(&self, covers: &Covers) -> bool {
        self.plausible_lamport(covers.lamport)
            && self.plausible_clock(&covers.clock)
            && self.plausible_clock(&covers.horizon)
            && self.knowable_clock(&covers.clock)
    }

    /// Whether every entry of `clock` is about a life of a member this
    /// replica knows, no newer than the life it knows there, and about this
    /// replica's own lives no more than it made; and whether adopting it
    /// keeps this replica's clock within [`MAX_CLOCK_ENTRIES`] (beyond it,
    /// peers could not read our clock any more).
    ///
    /// Every replica that writes was admitted somewhere, and admission
    /// records reach every member with the next heartbeat: an address
    /// missing from the table is a transient race at worst, and at best a
    /// forgery that would grow every clock it reaches.
    fn knowable_clock(&self, clock: &VClock) -> bool {
        let mut new_entries = 0;
        let knowable = clock.iter().all(|(origin, seq)| {
            if self.clock.get(origin) == 0 {
                new_entries += 1;
            }
            let address = origin.address();
            if address == self.address {
                return self.own_entry_knowable(origin, *seq);
            }
            match self.members.member(address) {
                Some(member) => member
                    .incarnation
                    .is_none_or(|known| origin.incarnation() <= known),
                None => false,
            }
        });
        knowable && self.clock.len() + new_entries <= MAX_CLOCK_ENTRIES
    }

    /// Whether a version from the network stays within the counter bounds
    /// (its dot is one of its dependencies, so checking them covers it).
    fn within_bounds(&self, version: &Version) -> bool {
        self.plausible_lamport(version.lamport)
            && self.plausible_clock(&version.deps)
            && self.own_lives_knowable(&version.deps)
    }

    /// Whether `clock` claims of this address's lives no more than this
    /// replica made: a version "of ours" we never wrote is forged.
    fn own_lives_knowable(&self, clock: &VClock) -> bool {
        clock.iter().all(|(origin, seq)| {
            origin.address() != self.address || self.own_entry_knowable(origin, *seq)
        })
    }

    /// Whether `origin` (a life of this address) is one this replica has
    /// lived and `seq` not beyond its last write there.
    fn own_entry_knowable(&self, origin: &Origin, seq: u64) -> bool {
        origin.incarnation() < self.incarnation
            || (origin.incarnation() == self.incarnation && seq < self.next_seq)
    }

    /// A version from the network is usable only if it is internally
    /// consistent; anything else is dropped rather than allowed to break I2.
    fn well_formed(version: &Version) -> bool {
        version.dot.seq > 0
            && version.deps.get(&version.dot.origin) == version.dot.seq
            && !version.key.is_empty()
    }

    /// A transfer completed: adopt the sender's guarantee — unless it
    /// contradicts the versions that came with it (claims a version's dot
    /// but not that version's dependencies), which would break I2. Only a
    /// broken or hostile peer sends such a guarantee; the versions stay
    /// (uncovered, as after any transfer whose guarantee is not adopted)
    /// and a later transfer covers them.
    ///
    /// Returns whether the guarantee was adopted.
    pub fn complete_transfer(&mut self, covers: &Covers) -> bool {
        if !self.plausible_covers(covers) || !self.consistent_guarantee(&covers.clock) {
            return false;
        }
        self.clock.merge(&covers.clock);
        self.lamport = self.lamport.max(covers.lamport);
        let (clock, store) = (&self.clock, &self.store);
        self.uncovered.retain(|key| {
            store
                .get(key)
                .is_some_and(|version| !version.covered_by(clock))
        });
        self.debug_check_clock();
        true
    }

    /// Whether adopting `guarantee` keeps I2: every stored version from a
    /// peer whose dot it would newly cover has its dependencies covered too.
    /// Costs one check per version received since the last adopted
    /// guarantee, not per key held.
    fn consistent_guarantee(&self, guarantee: &VClock) -> bool {
        if self.uncovered.is_empty() {
            // An idle round: nothing to check, and no clock to copy.
            return true;
        }
        let mut adopted = self.clock.clone();
        adopted.merge(guarantee);
        self.uncovered.iter().all(|key| {
            self.store.get(key).is_none_or(|version| {
                !version.covered_by(&adopted)
                    || version.deps_iter().all(|(o, n)| adopted.get(o) >= n)
            })
        })
    }

    /// A full snapshot completed: drop versions the sender had deleted and
    /// collected, adopt its guarantee and its horizon, and re-issue the
    /// writes that only this replica holds and that a collected delete may
    /// have beaten (see [`Replica::exposed_to_collected_deletes`]).
    pub fn complete_snapshot(
        &mut self,
        covers: &Covers,
        snapshot_keys: &HashSet<Key>,
    ) -> SnapshotApplied {
        if !self.plausible_covers(covers) || !self.consistent_guarantee(&covers.clock) {
            return SnapshotApplied::default();
        }
        let exposed = self.exposed_to_collected_deletes(covers, snapshot_keys);
        let dropped = self
            .store
            .drop_versions_deleted_elsewhere(&covers.clock, snapshot_keys);
        self.complete_transfer(covers);
        self.horizon.merge(&covers.horizon);
        let mut applied = SnapshotApplied {
            dropped,
            reissued: 0,
        };
        for version in exposed {
            if !self.clock.covers_dot(&version.dot) {
                // Received in a transfer whose guarantee never came, and
                // never acknowledged here: its writer still holds it.
                self.store.remove_key(&version.key);
                self.uncovered.remove(&version.key);
                applied.dropped += 1;
            } else if self.reissue(version).is_ok() {
                applied.reissued += 1;
            }
        }
        self.debug_check_clock();
        debug_assert_eq!(self.check_invariants(), Ok(()));
        applied
    }

    /// The values this replica holds that a delete it never saw may have
    /// beaten, when a snapshot's sender has collected tombstones this
    /// replica's clock does not cover (it was cut off, or never heard of,
    /// for longer than the grace period): values of keys the snapshot lacks,
    /// that the sender's clock does not cover, and whose dependencies do not
    /// cover the sender's horizon (a value that depends on the horizon is
    /// causally after every delete collected below it, so it wins anyway).
    ///
    /// Kept as they are, such values would be refused where the tombstone
    /// is still held and taken where it is gone: replicas would disagree for
    /// good. No replica can tell any more whether the collected delete beat
    /// them, so they are re-issued instead: each becomes a new write of this
    /// life, stamped above everything the snapshot covers, and wins
    /// everywhere. An acknowledged write is never lost; the price is that a
    /// delete concurrent with it (made while this replica was away past the
    /// grace period) does not win.
    fn exposed_to_collected_deletes(
        &self,
        covers: &Covers,
        snapshot_keys: &HashSet<Key>,
    ) -> Vec<Version> {
        if self.clock.covers(&covers.horizon) {
            // Every tombstone collected below the horizon is held here, or
            // something that beats it.
            return Vec::new();
        }
        self.store
            .versions()
            .filter(|v| {
                !v.is_tombstone()
                    && !snapshot_keys.contains(v.key())
                    && !v.covered_by(&covers.clock)
                    && !v.deps_cover(&covers.horizon)
            })
            .map(|v| v.to_version())
            .collect()
    }

    /// Writes `version`'s value again as a new write of this life that
    /// depends on it (see [`Replica::exposed_to_collected_deletes`]).
    fn reissue(&mut self, version: Version) -> Result<(), WriteError> {
        let (Some(next_seq), Some(lamport)) =
            (self.next_seq.checked_add(1), self.lamport.checked_add(1))
        else {
            return Err(WriteError::CountersExhausted);
        };
        let dot = Dot {
            origin: self.origin.clone(),
            seq: self.next_seq,
        };
        self.next_seq = next_seq;
        self.lamport = lamport;
        let mut deps = version.deps;
        deps.raise(&dot.origin, dot.seq);
        self.clock.raise(&dot.origin, dot.seq);
        let applied = self.store.apply(Version {
            key: version.key,
            value: version.value,
            dot,
            lamport,
            deps,
        });
        debug_assert!(matches!(applied, Applied::Replaced { .. }));
        Ok(())
    }

    /// Raises the horizon to the stability frontier (what every member not
    /// gone past the grace period holds) and collects the tombstones below it.
    /// Returns how many were collected.
    pub fn collect_garbage(&mut self, now_ms: u64) -> usize {
        let frontier = self.members.stability_frontier(&self.clock, now_ms);
        self.horizon.merge(&frontier);
        let collected = self.store.collect_tombstones(&self.horizon).len();
        self.debug_check_clock();
        collected
    }

    /// Invariants of the clock checkable in `O(clock entries)`, asserted in
    /// debug builds after every step that changes the clock or the horizon:
    ///
    /// * the entry of this life is exactly its last write (the clock never
    ///   claims a write of ours we did not make, and never forgets one);
    /// * the clock covers the horizon (tombstones are collected only below
    ///   what this replica holds, and a snapshot's sender vouches for the
    ///   horizon it hands over with its clock).
    fn debug_check_clock(&self) {
        debug_assert_eq!(
            self.clock.get(&self.origin),
            self.next_seq - 1,
            "{}: the clock's entry for this life is not its last write",
            self.address
        );
        debug_assert!(
            self.clock.covers(&self.horizon),
            "{}: horizon {:?} above clock {:?}",
            self.address,
            self.horizon,
            self.clock
        );
    }

    /// Checks I2 and I3 over the whole store (tests and debug assertions).
    pub fn check_invariants(&self) -> Result<(), String> {
        for version in self.store.versions() {
            if version.covered_by(&self.clock) {
                if !self.clock.covers(&version.deps()) {
                    return Err(format!(
                        "{}: clock {:?} claims {:?} but not its deps {:?}",
                        self.address,
                        self.clock,
                        version.dot(),
                        version.deps()
                    ));
                }
                if version.lamport() > self.lamport {
                    return Err(format!(
                        "{}: lamport behind {:?}",
                        self.address,
                        version.dot()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a client that has seen `metadata` has seen once it observes
/// `version` (a value it read, or the delete behind a 404), in as few
/// entries as that takes.
///
/// Every replica's clock is causally closed (C1 in the module docs): a
/// clock that covers a write covers that write's dependencies. So the
/// write's dot stands for all of them — any replica that can serve the
/// answer holds them — and the entries of `metadata` they cover are
/// dropped. If `metadata` covers the dot already, it covers (through the
/// same law) everything the write depends on, and is the answer as it is.
fn observed(metadata: &VClock, version: &VersionRef<'_>) -> VClock {
    let (origin, seq) = (version.origin(), version.seq());
    if metadata.get(origin) >= seq {
        return metadata.clone();
    }
    // One allocation: the entries the version does not depend on, and its dot.
    VClock::from_pairs(
        metadata
            .iter()
            .filter(|(o, n)| version.dep(o) < **n)
            .map(|(o, n)| (o.clone(), *n))
            .chain(std::iter::once((origin.clone(), seq))),
    )
}

mod persist;
pub use persist::{DurableState, Recovering};

#[cfg(test)]
mod tests;
