//! The versioned key-value map of one replica and the indexes that make
//! anti-entropy cheap.
//!
//! The store keeps, per key, exactly one [`Version`]: the greatest one it has
//! seen under the total order of [`Stamp`]s (Lamport time, then origin, then
//! sequence number). Because every write's Lamport time exceeds that of every
//! write it causally depends on, that order extends causality: a causally
//! later write always wins, and concurrent writes pick the same winner on every
//! replica (last-writer-wins). Deletes are versions without a value
//! (tombstones) so that they win and spread like any other write.
//!
//! Two indexes serve deltas. `by_stamp` orders all current versions by stamp so
//! a delta can be cut into bounded chunks with a resumable cursor; `by_origin`
//! maps each origin's sequence numbers to Lamport times so the first version a
//! peer lacks is found in `O(origins · log n)` without touching versions the
//! peer already has. Idle exchanges therefore cost `O(origins)`, not `O(keys)`.
//!
//! Why chunks are cut in stamp order: a receiver may only raise its clock to
//! the sender's clock once it holds, for every write that clock covers, that
//! write or a version that beats it. A version that replaces another while a
//! chunked transfer is under way has a greater stamp than the one it replaces,
//! so if the replaced one was not sent yet, neither was its replacement, and
//! the replacement comes in a later chunk. Cutting by any order other than the
//! one that decides overwrites would lose that guarantee.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::clock::{Dot, Origin, VClock};

/// A key: 1 to 50 Unicode scalar values (checked at the API edge).
pub type Key = Arc<str>;

/// A value: JSON text, validated when it entered the system and never parsed
/// again (replicas only store and forward it).
pub type JsonText = Arc<str>;

/// The position of a version in the total order that decides overwrites.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// Lamport time of the write.
    pub lamport: u64,
    /// The life that took it (breaks Lamport ties).
    pub origin: Origin,
    /// Its sequence number there (unique per origin).
    pub seq: u64,
}

/// One write of one key: a value, or a tombstone when `value` is `None`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The key.
    pub key: Key,
    /// The value's JSON text; `None` for a tombstone (a delete).
    pub value: Option<JsonText>,
    /// The write's identity.
    pub dot: Dot,
    /// Its Lamport time: above that of every dependency.
    pub lamport: u64,
    /// Everything the writing client had observed, plus this write's own dot.
    /// Readers inherit it, which is what makes returned metadata minimal.
    pub deps: VClock,
}

impl Version {
    /// Its position in the total order of writes.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            lamport: self.lamport,
            origin: self.dot.origin.clone(),
            seq: self.dot.seq,
        }
    }

    /// Whether this version is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// A conservative estimate of the size of this version in a
    /// [`packed`] batch, used to bound messages (the batch's origin table
    /// comes on top: one entry per replica life, not per version).
    pub fn encoded_size_hint(&self) -> usize {
        24 + self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + 12 * self.deps.len()
    }
}

/// The wire form of a batch of versions (a chunk of a delta or a push).
///
/// Every version names its origin, and its dependencies name several; as
/// text (`"10.10.0.2:8090@1764000000123"`) that was most of a replicated
/// write's bytes and one string allocation per name when decoding. A batch
/// therefore carries each origin's text once, in a table, and versions
/// refer to it by index:
///
/// ```text
/// { "origins": ["a@1", "b@7"],
///   "versions": [[key, value|nil, origin#, seq, lamport, [[origin#, seq], ...]], ...] }
/// ```
///
/// Decoding checks every index against the table; a bad one fails the
/// whole message (it is refused, never trusted in part).
pub mod packed {
    use std::collections::HashMap;

    use serde::de::Error as _;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Version;
    use crate::core::clock::{Dot, Origin, VClock, MAX_CLOCK_ENTRIES};

    #[derive(Serialize)]
    struct BatchOut<'a> {
        origins: Vec<&'a Origin>,
        versions: VersionsOut<'a>,
    }

    struct VersionsOut<'a> {
        versions: &'a [Version],
        index: HashMap<&'a Origin, u32>,
    }

    impl Serialize for VersionsOut<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let at = |origin: &Origin| self.index[origin];
            let mut seq = serializer.serialize_seq(Some(self.versions.len()))?;
            for v in self.versions {
                let deps: Vec<(u32, u64)> = v.deps.iter().map(|(o, n)| (at(o), *n)).collect();
                seq.serialize_element(&(
                    &v.key,
                    &v.value,
                    at(&v.dot.origin),
                    v.dot.seq,
                    v.lamport,
                    deps,
                ))?;
            }
            seq.end()
        }
    }

    /// Writes a batch as an origin table and tuples.
    pub fn serialize<S: Serializer>(
        versions: &[Version],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut origins: Vec<&Origin> = Vec::new();
        let mut index: HashMap<&Origin, u32> = HashMap::new();
        let named = versions
            .iter()
            .flat_map(|v| std::iter::once(&v.dot.origin).chain(v.deps.iter().map(|(o, _)| o)));
        for origin in named {
            index.entry(origin).or_insert_with(|| {
                origins.push(origin);
                (origins.len() - 1) as u32
            });
        }
        BatchOut {
            origins,
            versions: VersionsOut { versions, index },
        }
        .serialize(serializer)
    }

    /// A string read straight into shared storage: serde's own `Arc<str>`
    /// goes through a `Box<str>` first, copying every value twice.
    struct Shared(std::sync::Arc<str>);

    impl<'de> Deserialize<'de> for Shared {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct SharedVisitor;
            impl serde::de::Visitor<'_> for SharedVisitor {
                type Value = Shared;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Shared, E> {
                    Ok(Shared(text.into()))
                }
            }
            deserializer.deserialize_str(SharedVisitor)
        }
    }

    /// A version's dependencies as `(origin#, seq)` pairs, refused as soon as
    /// there are more than a clock may have.
    struct PackedDeps(Vec<(u32, u64)>);

    impl<'de> Deserialize<'de> for PackedDeps {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct DepsVisitor;
            impl<'de> serde::de::Visitor<'de> for DepsVisitor {
                type Value = PackedDeps;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a list of [origin#, seq] pairs")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<PackedDeps, A::Error> {
                    let mut deps = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                    while let Some(pair) = seq.next_element::<(u32, u64)>()? {
                        if deps.len() == MAX_CLOCK_ENTRIES {
                            return Err(A::Error::custom(format!(
                                "a version has more than {MAX_CLOCK_ENTRIES} dependencies"
                            )));
                        }
                        deps.push(pair);
                    }
                    Ok(PackedDeps(deps))
                }
            }
            deserializer.deserialize_seq(DepsVisitor)
        }
    }

    type PackedVersion = (Shared, Option<Shared>, u32, u64, u64, PackedDeps);

    #[derive(Deserialize)]
    struct BatchIn {
        origins: Vec<Origin>,
        versions: Vec<PackedVersion>,
    }

    /// Reads a batch written by [`serialize`], refusing bad origin indices and oversized dependency lists.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Version>, D::Error> {
        let batch = BatchIn::deserialize(deserializer)?;
        let origin =
            |i: u32| {
                batch.origins.get(i as usize).cloned().ok_or_else(|| {
                    D::Error::custom(format!("origin #{i} is not in the batch's table"))
                })
            };
        batch
            .versions
            .into_iter()
            .map(|(key, value, origin_index, seq, lamport, deps)| {
                let deps = deps
                    .0
                    .into_iter()
                    .map(|(i, n)| Ok((origin(i)?, n)))
                    .collect::<Result<Vec<_>, D::Error>>()?;
                Ok(Version {
                    key: key.0,
                    value: value.map(|v| v.0),
                    dot: Dot {
                        origin: origin(origin_index)?,
                        seq,
                    },
                    lamport,
                    deps: VClock::from_pairs(deps),
                })
            })
            .collect()
    }
}

/// What [`Store::apply`] did with a version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Applied {
    /// It beat the current version (or there was none) and is now current.
    /// The version replaced the key's current one (`previous_was_live`: that one held a value).
    Replaced {
        /// The replaced version held a value (it was not a tombstone).
        previous_was_live: bool,
    },
    /// The current version is equal or greater; nothing changed.
    Ignored,
}

/// The key-value map with its delta indexes. Pure data structure: no clocks of
/// its own, no I/O.
#[derive(Default, Debug)]
pub struct Store {
    versions: HashMap<Key, Version>,
    by_stamp: BTreeMap<Stamp, Key>,
    by_origin: BTreeMap<Origin, BTreeMap<u64, u64>>,
    live: usize,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current version of `key`, tombstones included.
    pub fn get(&self, key: &str) -> Option<&Version> {
        self.versions.get(key)
    }

    /// Keys holding a value (not tombstones).
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Keys holding a tombstone.
    pub fn tombstone_len(&self) -> usize {
        self.versions.len() - self.live
    }

    /// Every current version, in stamp order.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.by_stamp.values().map(|key| &self.versions[key])
    }

    /// Keeps `version` if it beats the current version of its key.
    pub fn apply(&mut self, version: Version) -> Applied {
        let previous_was_live = match self.versions.get(&version.key) {
            Some(current) if current.stamp() >= version.stamp() => return Applied::Ignored,
            Some(current) => !current.is_tombstone(),
            None => false,
        };
        if let Some(previous) = self.remove(&version.key.clone()) {
            debug_assert_eq!(previous_was_live, !previous.is_tombstone());
        }
        self.insert(version);
        Applied::Replaced { previous_was_live }
    }

    fn insert(&mut self, version: Version) {
        self.by_stamp.insert(version.stamp(), version.key.clone());
        self.by_origin
            .entry(version.dot.origin.clone())
            .or_default()
            .insert(version.dot.seq, version.lamport);
        if !version.is_tombstone() {
            self.live += 1;
        }
        self.versions.insert(version.key.clone(), version);
    }

    fn remove(&mut self, key: &str) -> Option<Version> {
        let version = self.versions.remove(key)?;
        self.by_stamp.remove(&version.stamp());
        if let Some(seqs) = self.by_origin.get_mut(&version.dot.origin) {
            seqs.remove(&version.dot.seq);
            if seqs.is_empty() {
                self.by_origin.remove(&version.dot.origin);
            }
        }
        if !version.is_tombstone() {
            self.live -= 1;
        }
        Some(version)
    }

    /// The next chunk of versions a peer whose clock is `their` lacks, in
    /// stamp order, strictly after `after`, of at most about `max_bytes`
    /// (always at least one version when any remain, so a huge value cannot
    /// stall the transfer). Returns the chunk and, if more remain, the cursor
    /// to pass as `after` next time.
    ///
    /// Cost: `O(origins · log n)` to find where to start, then the versions
    /// scanned from there (those sent plus those the peer already has that
    /// were written after its oldest gap).
    pub fn delta(
        &self,
        their: &VClock,
        after: Option<&Stamp>,
        max_bytes: usize,
    ) -> (Vec<Version>, Option<Stamp>) {
        let first_missing = self
            .by_origin
            .iter()
            .filter_map(|(origin, seqs)| {
                let seen = their.get(origin);
                seqs.range(seen.saturating_add(1)..)
                    .next()
                    .map(|(_, &lamport)| lamport)
            })
            .min();
        let Some(start_lamport) = first_missing else {
            return (Vec::new(), None);
        };
        let start = Stamp {
            lamport: start_lamport,
            origin: Origin::lowest(),
            seq: 0,
        };
        let lower = match after {
            Some(cursor) if *cursor >= start => Bound::Excluded(cursor.clone()),
            _ => Bound::Included(start),
        };
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for key in self
            .by_stamp
            .range((lower, Bound::Unbounded))
            .map(|(_, key)| key)
        {
            let version = &self.versions[key];
            if their.covers_dot(&version.dot) {
                continue;
            }
            let size = version.encoded_size_hint();
            if !chunk.is_empty() && bytes + size > max_bytes {
                let resume_after = chunk.last().map(Version::stamp);
                return (chunk, resume_after);
            }
            bytes += size;
            chunk.push(version.clone());
        }
        (chunk, None)
    }

    /// Drops tombstones whose write every replica that matters has applied
    /// (`stable` is the meet of their clocks). Returns the dots collected.
    pub fn collect_tombstones(&mut self, stable: &VClock) -> Vec<Dot> {
        let doomed: Vec<Key> = self
            .versions
            .values()
            .filter(|v| v.is_tombstone() && stable.covers_dot(&v.dot))
            .map(|v| v.key.clone())
            .collect();
        doomed
            .into_iter()
            .filter_map(|key| self.remove(&key).map(|v| v.dot))
            .collect()
    }

    /// After a complete snapshot from a peer whose clock was `covers`: a local
    /// version the peer's clock covers but whose key the snapshot did not
    /// contain was deleted there and its tombstone already collected, so it is
    /// dropped here too. Returns how many versions were dropped.
    pub fn drop_versions_deleted_elsewhere(
        &mut self,
        covers: &VClock,
        snapshot_keys: &HashSet<Key>,
    ) -> usize {
        let doomed: Vec<Key> = self
            .versions
            .values()
            .filter(|v| covers.covers_dot(&v.dot) && !snapshot_keys.contains(&v.key))
            .map(|v| v.key.clone())
            .collect();
        for key in &doomed {
            self.remove(key);
        }
        doomed.len()
    }
}

impl Origin {
    /// Sorts before every real origin; used only as a range bound.
    pub(crate) fn lowest() -> Origin {
        Origin::parse_unchecked("")
    }
}

#[cfg(test)]
mod tests;
