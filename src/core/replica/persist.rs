//! What a replica with a data directory hands to its storage, and how it is
//! rebuilt from what storage recovered. Pure: no I/O here (the shell's
//! `crate::storage` writes and reads the disk).
//!
//! The disk is treated like a peer: what it lacks is the delta against the
//! clock last persisted ([`Replica::changes_since`]), found through the
//! store's per-origin index in `O(origins · log n)` plus the versions
//! returned. Keys that leave the store (collected tombstones, versions a
//! snapshot's sender had deleted) are not in any delta: the store lists
//! them ([`Replica::track_removed_keys`]) and each batch removes them from
//! the disk ([`Replica::removals_since`]).

use serde::{Deserialize, Serialize};

use super::Replica;
use crate::core::clock::VClock;
#[cfg(test)]
use crate::core::membership::Timing;
use crate::core::store::{Key, Store, Version};

/// Everything besides the versions that a recovered replica needs: written
/// with the versions it covers, in one atomic batch, so that the clock on
/// disk never claims a write the disk lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// The life that wrote this state; a recovered replica starts above it.
    pub incarnation: u64,
    /// Lamport time (at least that of every version on disk).
    pub lamport: u64,
    /// Every write the disk holds (or holds something that beats).
    pub clock: VClock,
    /// The stability horizon (tombstones below it may be gone).
    pub horizon: VClock,
    /// The cluster whose data this is.
    pub cluster: u64,
}

/// A store filled by a recovery before its replica exists (the new life's
/// incarnation depends on what the disk holds): the versions as they are
/// read, each key at most once, in any order.
pub struct Recovering {
    store: Store,
    lamport: u64,
    /// `"<address>@"`: versions of this address's earlier lives.
    own_prefix: String,
    own_life: Option<u64>,
}

impl Recovering {
    /// For the replica at `address`.
    pub fn new(address: &str) -> Recovering {
        Recovering {
            store: Store::new(),
            lamport: 0,
            own_prefix: format!("{address}@"),
            own_life: None,
        }
    }

    /// Makes room for about `versions` more at once (growing a
    /// million-key table by doubling was most of a recovery's page
    /// zeroing).
    pub fn reserve(&mut self, versions: usize) {
        self.store.reserve(versions);
    }

    /// Takes in one version read back.
    pub fn take(&mut self, version: Version) {
        self.lamport = self.lamport.max(version.lamport);
        self.note_life(&version);
        self.store.load(version);
    }

    /// Notes the life of `version` if it is one of this address's.
    pub fn note_life(&mut self, version: &Version) {
        if let Some(life) = version
            .dot
            .origin
            .as_str()
            .strip_prefix(&self.own_prefix)
            .and_then(|i| i.parse::<u64>().ok())
        {
            self.own_life = self.own_life.max(Some(life));
        }
    }

    /// The newest life of this address that a version read names (the new
    /// life goes above it, even if the stored state was lost).
    pub fn own_life(&self) -> Option<u64> {
        self.own_life
    }
}

impl Replica {
    /// The current versions whose dots `persisted` does not cover: what the
    /// disk lacks if it last took a state whose clock was `persisted`.
    /// (Versions taken in by a transfer still under way are not covered by
    /// the clock yet, so they are handed out again until it is; writing a
    /// version twice is harmless.)
    pub fn changes_since(&self, persisted: &VClock) -> Vec<Version> {
        self.store.delta(persisted, None, usize::MAX / 2).0
    }

    /// The state to write with [`Replica::changes_since`].
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            incarnation: self.incarnation,
            lamport: self.lamport,
            clock: self.clock.clone(),
            horizon: self.horizon.clone(),
            cluster: self.cluster,
        }
    }

    /// From now on, the store lists the keys it removes, for
    /// [`Replica::removals_since`] (a replica with a data directory; the
    /// storage loop must take them regularly).
    pub fn track_removed_keys(&mut self) {
        self.store.track_removed_keys();
    }

    /// The keys removed from the store since the last call, for a disk
    /// that last took a state whose clock was `persisted`: the keys it must
    /// remove, and the versions it must write again — a removed key whose
    /// store holds a version again keeps that version on disk instead (one
    /// [`Replica::changes_since`] already hands out unless `persisted`
    /// covers it). Removing such a key would leave the clock on disk
    /// claiming a version the disk lacks.
    pub fn removals_since(&mut self, persisted: &VClock) -> (Vec<Key>, Vec<Version>) {
        let mut removed = self.store.take_removed_keys();
        removed.sort_unstable();
        removed.dedup();
        let mut rewrite = Vec::new();
        removed.retain(|key| match self.store.get(key) {
            None => true,
            Some(current) => {
                if current.covered_by(persisted) {
                    rewrite.push(current.to_version());
                }
                false
            }
        });
        (removed, rewrite)
    }

    /// A replica rebuilt from what its data directory held, in a new life
    /// `incarnation` (which the caller chose above `state.incarnation`: no
    /// dot of an earlier life is ever issued again).
    ///
    /// `state` is `None` when storage could not vouch for every version (a
    /// record was dropped as corrupt, or the state itself was): the versions
    /// are kept but no clock is claimed for them, so peers send everything
    /// again (a snapshot, if their horizon has moved) and a client whose
    /// metadata names a lost write waits for it instead of being served
    /// without it.
    ///
    /// For tests, with every version at hand: the node streams them from
    /// disk through the same steps ([`Recovering`],
    /// [`Replica::adopt_recovered`], then [`Replica::adopt_state`] when
    /// nothing was dropped).
    #[cfg(test)]
    pub fn recover(
        address: &str,
        incarnation: u64,
        view: &[String],
        timing: Timing,
        now_ms: u64,
        state: Option<&DurableState>,
        versions: Vec<Version>,
    ) -> Replica {
        let mut recovering = Recovering::new(address);
        for version in versions {
            recovering.take(version);
        }
        let mut replica = Replica::new(address, incarnation, view, timing, now_ms);
        replica.adopt_recovered(recovering);
        if let Some(state) = state {
            replica.adopt_state(state);
        }
        replica
    }

    /// Takes in the store a recovery filled ([`Recovering`]); must come
    /// before anything else is written to this replica.
    pub fn adopt_recovered(&mut self, recovering: Recovering) {
        debug_assert_eq!(
            self.store.live_len() + self.store.tombstone_len(),
            0,
            "a recovery fills an empty replica"
        );
        let Recovering {
            mut store, lamport, ..
        } = recovering;
        store.finish_loading();
        self.store = store;
        self.lamport = self.lamport.max(lamport);
    }

    /// After [`Replica::adopt_recovered`]: what the logs after the snapshot
    /// left, per key — its version, or `None` if it was removed. What the
    /// snapshot held for those keys goes first (the logs are newer, and a
    /// removal in them decides even over a version that would beat the one
    /// written after it); the versions are then loaded in any order and
    /// each origin's log sorted once (inserting them one by one in seq
    /// order shifted the logs: quadratic).
    pub fn recover_changes(&mut self, changes: impl IntoIterator<Item = (Key, Option<Version>)>) {
        let changes: Vec<(Key, Option<Version>)> = changes.into_iter().collect();
        for (key, _) in &changes {
            self.store.remove_key(key);
        }
        for version in changes.into_iter().filter_map(|(_, v)| v) {
            self.lamport = self.lamport.max(version.lamport);
            self.store.load(version);
        }
        self.store.finish_loading();
    }

    /// Adopts the stored state once every version it covers is back (see
    /// [`Replica::recover`] for when storage cannot vouch for them).
    pub fn adopt_state(&mut self, state: &DurableState) {
        self.lamport = self.lamport.max(state.lamport);
        self.clock = state.clock.clone();
        self.horizon = state.horizon.clone();
        self.cluster = state.cluster;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ReadOutcome, WriteOutcome};

    const T: Timing = Timing {
        suspect_after_ms: 700,
        dead_after_ms: 1500,
        dead_member_grace_ms: 300_000,
    };
    const A: &str = "10.0.0.1:8090";

    fn view() -> Vec<String> {
        vec![A.to_string()]
    }

    #[test]
    fn the_disk_gets_only_what_it_lacks_and_a_recovered_replica_holds_it_in_a_new_life() {
        let mut replica = Replica::new(A, 5, &view(), T, 0).with_cluster(9);
        let none = VClock::new();
        for key in ["a", "b", "c"] {
            replica.write(key, Some("1".into()), &none).unwrap();
        }
        let first = replica.changes_since(&VClock::new());
        assert_eq!(first.len(), 3);
        let persisted = replica.durable_state();
        assert!(replica.changes_since(&persisted.clock).is_empty());

        let Ok(WriteOutcome::Replaced { metadata }) = replica.write("b", Some("2".into()), &none)
        else {
            panic!("an overwrite")
        };
        let second = replica.changes_since(&persisted.clock);
        assert_eq!(second.len(), 1, "only the overwrite");
        assert_eq!(second[0].value.as_deref(), Some("2"));

        // What the disk then holds: the first batch overwritten by the second.
        let mut on_disk: Vec<Version> = first.into_iter().filter(|v| &*v.key != "b").collect();
        on_disk.extend(second);
        let state = replica.durable_state();
        let recovered = Replica::recover(A, 6, &view(), T, 0, Some(&state), on_disk);
        recovered.check_invariants().unwrap();
        assert_eq!(recovered.clock(), replica.clock());
        assert_eq!(recovered.cluster(), 9);
        assert_eq!(recovered.lamport(), replica.lamport());
        assert!(recovered.origin() != replica.origin(), "a new life");
        let Ok(ReadOutcome::Found { value, .. }) = recovered.read("b", &metadata) else {
            panic!("the client's own write is served")
        };
        assert_eq!(&*value, "2");
    }

    #[test]
    fn without_a_vouched_state_no_clock_is_claimed() {
        let mut replica = Replica::new(A, 5, &view(), T, 0);
        let Ok(WriteOutcome::Created { metadata }) =
            replica.write("a", Some("1".into()), &VClock::new())
        else {
            panic!("a create")
        };
        let versions = replica.changes_since(&VClock::new());
        let recovered = Replica::recover(A, 6, &view(), T, 0, None, versions);
        assert!(recovered.clock().is_empty());
        assert!(
            recovered.read("a", &metadata).is_err(),
            "a client that saw the write waits for peers to vouch for it"
        );
        assert!(recovered.read("a", &VClock::new()).is_ok());
    }

    #[test]
    fn keys_the_store_drops_are_handed_to_the_disk_once_unless_written_again() {
        let none = VClock::new();
        let mut untracked = Replica::new(A, 5, &view(), T, 0);
        untracked.write("a", Some("1".into()), &none).unwrap();
        untracked.write("a", None, &none).unwrap();
        assert_eq!(untracked.collect_garbage(1), 1);
        assert_eq!(
            untracked.removals_since(&VClock::new()),
            (vec![], vec![]),
            "in memory nothing is kept"
        );

        let mut replica = Replica::new(A, 5, &view(), T, 0);
        replica.track_removed_keys();
        for key in ["a", "b"] {
            replica.write(key, Some("1".into()), &none).unwrap();
            replica.write(key, None, &none).unwrap();
        }
        let persisted = replica.durable_state().clock;
        assert_eq!(replica.collect_garbage(1), 2);
        // `b` is written again before the next batch: its new version is
        // in the delta, and the key stays on disk.
        replica.write("b", Some("2".into()), &none).unwrap();
        let (removed, rewrite) = replica.removals_since(&persisted);
        assert_eq!(removed, vec![Key::from("a")]);
        assert!(rewrite.is_empty());
        let delta = replica.changes_since(&persisted);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].value.as_deref(), Some("2"));
        assert_eq!(
            replica.removals_since(&persisted),
            (vec![], vec![]),
            "handed out once"
        );
    }
}
