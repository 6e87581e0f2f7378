//! What a replica with a data directory hands to its storage, and how it is
//! rebuilt from what storage recovered. Pure: no I/O here (the shell's
//! `crate::storage` writes and reads the disk).
//!
//! The disk is treated like a peer: what it lacks is the delta against the
//! clock last persisted ([`Replica::changes_since`]), found through the
//! store's per-origin index in `O(origins · log n)` plus the versions
//! returned. Keys that leave the store (collected tombstones, versions a
//! snapshot's sender had deleted) are not in any delta; the shell notices
//! them because the disk then holds more keys than the store
//! ([`Replica::key_count`]) and removes them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::Replica;
use crate::core::clock::VClock;
use crate::core::membership::Timing;
use crate::core::store::{Key, Version};

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

    /// Keys the store holds, tombstones included.
    pub fn key_count(&self) -> usize {
        self.store.live_len() + self.store.tombstone_len()
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
    pub fn recover(
        address: &str,
        incarnation: u64,
        view: &[String],
        timing: Timing,
        now_ms: u64,
        state: Option<&DurableState>,
        versions: Vec<Version>,
    ) -> Replica {
        let mut replica = Replica::new(address, incarnation, view, timing, now_ms);
        for version in versions {
            replica.lamport = replica.lamport.max(version.lamport);
            replica.store.apply(version);
        }
        if let Some(state) = state {
            replica.lamport = replica.lamport.max(state.lamport);
            replica.clock = state.clock.clone();
            replica.horizon = state.horizon.clone();
            replica.cluster = state.cluster;
        }
        replica
    }

    /// The keys of every version held (for removing the others from disk).
    pub fn keys(&self) -> HashSet<Key> {
        self.store.versions().map(|v| v.key.clone()).collect()
    }
}
