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
//! One index serves deltas: per origin (one life of a replica), the seqs,
//! Lamport times and slots of its current versions, in seq order. A life's
//! Lamport time rises with each of its writes, so that order is also stamp
//! order within the origin: the first version a peer lacks is found by a
//! binary search per origin (`O(origins · log n)`, so idle exchanges cost
//! `O(origins)`, not `O(keys)`), and a merge of the origins' logs yields
//! deltas in stamp order, cut into bounded chunks with a resumable cursor.
//! (A version breaking that monotonicity can only come from a broken peer;
//! it is kept, and at worst sent out of stamp order.)
//!
//! Memory is what bounds a fully replicated store, so versions are stored
//! compacted (`Entry`, 40 bytes): key and value text and the dependencies
//! beyond the version's own dot in one allocation, origins interned in a
//! per-store table, entries in fixed chunks that never move.
//! [`Store::get`] hands out a borrowed [`VersionRef`]; [`Version`] stays the
//! owned form that is applied and sent.
//!
//! Why chunks are cut in stamp order: a receiver may only raise its clock to
//! the sender's clock once it holds, for every write that clock covers, that
//! write or a version that beats it. A version that replaces another while a
//! chunked transfer is under way has a greater stamp than the one it replaces,
//! so if the replaced one was not sent yet, neither was its replacement, and
//! the replacement comes in a later chunk. Cutting by any order other than the
//! one that decides overwrites would lose that guarantee.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

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

/// A slot of the store's entry array, or `DEAD` in an origin's log.
type Slot = u32;
/// An index into the store's origin table.
type OriginId = u32;

/// Marks a removed version in an origin's log (its seq stays, so the log
/// remains searchable by seq until it is compacted; searches by stamp step
/// over it, see [`live_partition_point`]).
const DEAD: Slot = Slot::MAX;

/// `Entry::meta`: the version is a tombstone.
const TOMBSTONE: u32 = 1 << 31;
/// `Entry::meta`: the version's dependencies name its own dot (always so
/// for well-formed versions); the dot itself is then not stored twice.
const OWN_DOT_IN_DEPS: u32 = 1 << 30;
/// `Entry::meta`: dependencies beyond the own dot follow the text in
/// `Entry::data`.
const HAS_DEPS: u32 = 1 << 29;
/// `Entry::meta`: the key's length in bytes. Keys are bounded far below
/// this by the API (50 characters) and by `max_message_bytes` (≤ 64 MiB).
const KEY_LEN: u32 = (1 << 29) - 1;

/// Bytes per stored dependency in `Entry::data`: origin id (u32) and seq
/// (u64), little-endian.
const DEP_BYTES: usize = 12;
/// Bytes of the dependency count that ends `Entry::data` when `HAS_DEPS`
/// is set (a clock has at most `MAX_CLOCK_ENTRIES` = 4096 entries).
const DEP_COUNT_BYTES: usize = 2;

/// One stored version, compacted into 40 bytes plus one allocation: key
/// and value text and the dependencies share that allocation, the origin
/// is an index into the store's table, and of the dependencies only what
/// the dot does not already say is kept (a write with null metadata stores
/// none).
///
/// `data` is the key's UTF-8 text, then the value's (nothing for a
/// tombstone); when `HAS_DEPS` is set, then the dependencies other than
/// `(origin, seq)` sorted by origin text, `DEP_BYTES` each, and last their
/// count as a little-endian u16. One allocation instead of a text and a
/// dependency list saves the list's pointer in every entry (48 → 40
/// bytes) and, for versions with dependencies, an allocation.
// Size checked in a test.
#[derive(Debug)]
struct Entry {
    data: Box<[u8]>,
    seq: u64,
    lamport: u64,
    origin: OriginId,
    /// The key's length and the flags above, in one word.
    meta: u32,
}

impl Entry {
    fn key_len(&self) -> usize {
        (self.meta & KEY_LEN) as usize
    }

    fn deps_len(&self) -> usize {
        if !self.is(HAS_DEPS) {
            return 0;
        }
        let end = self.data.len();
        let count = &self.data[end - DEP_COUNT_BYTES..];
        u16::from_le_bytes([count[0], count[1]]) as usize
    }

    /// Where the text ends in `data`.
    fn text_len(&self) -> usize {
        if self.is(HAS_DEPS) {
            self.data.len() - DEP_COUNT_BYTES - self.deps_len() * DEP_BYTES
        } else {
            self.data.len()
        }
    }

    /// The key's text followed by the value's.
    fn text(&self) -> &str {
        let text = &self.data[..self.text_len()];
        debug_assert!(std::str::from_utf8(text).is_ok());
        // SAFETY: `Store::compact` is the only writer of `data`, and it
        // copies the text part from a key and a value that are `str`s;
        // `text_len` ends it where they end, so it is their UTF-8 bytes.
        unsafe { std::str::from_utf8_unchecked(text) }
    }

    fn key(&self) -> &str {
        &self.text()[..self.key_len()]
    }

    /// Dependencies other than `(origin, seq)`, sorted by origin text.
    fn deps(&self) -> impl Iterator<Item = (OriginId, u64)> + '_ {
        let start = self.text_len();
        self.data[start..start + self.deps_len() * DEP_BYTES]
            .chunks_exact(DEP_BYTES)
            .map(|dep| {
                let (id, seq) = dep.split_at(4);
                (
                    OriginId::from_le_bytes(id.try_into().expect("4 bytes")),
                    u64::from_le_bytes(seq.try_into().expect("8 bytes")),
                )
            })
    }

    fn is(&self, flag: u32) -> bool {
        self.meta & flag != 0
    }
}

/// Entries per chunk of [`Entries`]: 4096 × 40 B = 160 KiB.
const CHUNK: usize = 4096;

/// The entry array, in fixed chunks of [`CHUNK`] entries: growing adds a
/// chunk and never moves or frees one. A doubling `Vec` would copy every
/// entry under the replica's lock at each doubling (10 MiB at 262,144 keys),
/// keep up to half of its capacity unused, and free the old block, which
/// the allocator may keep resident for a while (measured in
/// `bench/RESULTS.md`, "40-byte entries in chunks": with a doubling array,
/// resident size per key varied by up to 30 B between identical runs).
#[derive(Debug, Default)]
struct Entries {
    /// Every chunk but the last is full; each was allocated with exactly
    /// `CHUNK` capacity, so pushing never reallocates it.
    chunks: Vec<Vec<Option<Entry>>>,
}

impl Entries {
    fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    /// Entries allocated room for (touched or not).
    fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn push(&mut self, entry: Option<Entry>) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Entry>> {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for Entries {
    type Output = Option<Entry>;

    fn index(&self, at: usize) -> &Option<Entry> {
        &self.chunks[at / CHUNK][at % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Entries {
    fn index_mut(&mut self, at: usize) -> &mut Option<Entry> {
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }
}

/// One origin in the store's table: its name, what refers to it, and its
/// log — the seq and slot of every current version it wrote, in seq order
/// (which is also Lamport order: a life's Lamport time rises with every write
/// it makes). A version's Lamport time is read from its entry, not stored
/// twice. Removed versions stay as `DEAD` until more than half the log is
/// dead, so removal is `O(log n)` and searches stay binary.
#[derive(Debug, Default)]
struct OriginRecord {
    /// `None` while the id is free for reuse.
    origin: Option<Origin>,
    /// Entries whose dot names it, plus dependency lists that name it.
    refs: usize,
    seqs: Vec<u64>,
    slots: Vec<Slot>,
    dead: usize,
    /// Versions were appended out of seq order by [`Store::load`]; sorted
    /// by [`Store::finish_loading`] (or by the next insert or removal)
    /// before anything searches the log.
    unsorted: bool,
}

impl OriginRecord {
    fn origin(&self) -> &Origin {
        self.origin
            .as_ref()
            .expect("a referenced origin id is in use")
    }

    /// Appends a version whatever its seq, leaving the log unsorted if it
    /// is out of order: `O(1)`, for loading many versions at once.
    fn append(&mut self, seq: u64, slot: Slot) {
        if self.seqs.last().is_some_and(|&last| last > seq) {
            self.unsorted = true;
        }
        self.seqs.push(seq);
        self.slots.push(slot);
    }

    /// Puts the log back in seq order (stable: equal seqs keep their
    /// order) after [`OriginRecord::append`]: `O(n log n)` once, where
    /// inserting each out-of-order version in place costs a shift of the
    /// log — quadratic for a recovery, which reads versions in key order.
    fn sort(&mut self) {
        if !self.unsorted {
            return;
        }
        let mut order: Vec<usize> = (0..self.seqs.len()).collect();
        order.sort_by_key(|&i| self.seqs[i]);
        self.seqs = order.iter().map(|&i| self.seqs[i]).collect();
        self.slots = order.iter().map(|&i| self.slots[i]).collect();
        self.unsorted = false;
    }

    /// Where a version with `seq` belongs (after any equal seqs).
    fn insert(&mut self, seq: u64, slot: Slot) {
        self.sort();
        let at = self.seqs.partition_point(|&s| s <= seq);
        if at == self.seqs.len() {
            // The usual case: a life's writes arrive in order.
            self.seqs.push(seq);
            self.slots.push(slot);
        } else {
            // Out of order (versions of one life relayed by different
            // peers): a shift, bounded by this origin's log.
            self.seqs.insert(at, seq);
            self.slots.insert(at, slot);
        }
    }

    fn remove(&mut self, seq: u64, slot: Slot) {
        self.sort();
        let from = self.seqs.partition_point(|&s| s < seq);
        let found = (from..self.seqs.len())
            .take_while(|&i| self.seqs[i] == seq)
            .find(|&i| self.slots[i] == slot);
        let Some(i) = found else {
            debug_assert!(false, "a stored version is in its origin's log");
            return;
        };
        self.slots[i] = DEAD;
        self.dead += 1;
        if self.dead * 2 > self.slots.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut keep = 0;
        for i in 0..self.slots.len() {
            if self.slots[i] != DEAD {
                self.seqs[keep] = self.seqs[i];
                self.slots[keep] = self.slots[i];
                keep += 1;
            }
        }
        self.seqs.truncate(keep);
        self.slots.truncate(keep);
        if self.seqs.capacity() > 2 * self.seqs.len() + 16 {
            self.seqs.shrink_to_fit();
        }
        if self.slots.capacity() > 2 * self.slots.len() + 16 {
            self.slots.shrink_to_fit();
        }
        self.dead = 0;
    }

    fn is_empty(&self) -> bool {
        self.slots.len() == self.dead
    }
}

/// A stored version, read in place. Everything a [`Version`] holds, without
/// building one: a GET copies only what it returns.
#[derive(Clone, Copy)]
pub struct VersionRef<'a> {
    store: &'a Store,
    entry: &'a Entry,
}

impl<'a> VersionRef<'a> {
    /// The key.
    pub fn key(&self) -> &'a str {
        self.entry.key()
    }

    /// The value's JSON text; `None` for a tombstone.
    pub fn value(&self) -> Option<&'a str> {
        (!self.is_tombstone()).then(|| &self.entry.text()[self.entry.key_len()..])
    }

    /// Whether this version is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.entry.is(TOMBSTONE)
    }

    /// The life that wrote it.
    pub fn origin(&self) -> &'a Origin {
        self.store.origin(self.entry.origin)
    }

    /// The write's identity.
    pub fn dot(&self) -> Dot {
        Dot {
            origin: self.origin().clone(),
            seq: self.entry.seq,
        }
    }

    /// Whether `clock` covers this write.
    pub fn covered_by(&self, clock: &VClock) -> bool {
        clock.get(self.origin()) >= self.entry.seq
    }

    /// Its Lamport time.
    pub fn lamport(&self) -> u64 {
        self.entry.lamport
    }

    /// Its position in the total order of writes.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            lamport: self.entry.lamport,
            origin: self.origin().clone(),
            seq: self.entry.seq,
        }
    }

    /// Its dependencies, in origin order, as stored in the [`Version`].
    pub fn deps_iter(&self) -> impl Iterator<Item = (&'a Origin, u64)> + 'a {
        let store = self.store;
        let own = self
            .entry
            .is(OWN_DOT_IN_DEPS)
            .then(|| (self.origin(), self.entry.seq));
        let rest = self
            .entry
            .deps()
            .map(move |(id, seq)| (store.origin(id), seq));
        // Both parts are sorted by origin text; merge them.
        let mut own = own;
        let mut rest = rest.peekable();
        std::iter::from_fn(move || match (own, rest.peek()) {
            (Some(o), Some(r)) if o.0 < r.0 => own.take(),
            (Some(_), Some(_)) | (None, Some(_)) => rest.next(),
            (Some(_), None) => own.take(),
            (None, None) => None,
        })
    }

    /// Its dependencies as a clock.
    pub fn deps(&self) -> VClock {
        VClock::from_pairs(self.deps_iter().map(|(o, n)| (o.clone(), n)))
    }

    /// Its sequence number within its origin.
    pub fn seq(&self) -> u64 {
        self.entry.seq
    }

    /// Its dependency on `origin` (0: none).
    pub fn dep(&self, origin: &Origin) -> u64 {
        self.deps_iter()
            .find(|(o, _)| *o == origin)
            .map_or(0, |(_, seq)| seq)
    }

    /// Whether this version depends on everything `clock` covers.
    pub fn deps_cover(&self, clock: &VClock) -> bool {
        self.deps().covers(clock)
    }

    /// An owned copy.
    pub fn to_version(&self) -> Version {
        Version {
            key: Key::from(self.key()),
            value: self.value().map(JsonText::from),
            dot: self.dot(),
            lamport: self.entry.lamport,
            deps: self.deps(),
        }
    }

    fn encoded_size_hint(&self) -> usize {
        24 + self.entry.text_len() + 12 * (self.entry.deps_len() + 1)
    }
}

impl std::fmt::Debug for VersionRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_version().fmt(f)
    }
}

impl PartialEq<Version> for VersionRef<'_> {
    fn eq(&self, other: &Version) -> bool {
        self.key() == &*other.key
            && self.value() == other.value.as_deref()
            && self.entry.seq == other.dot.seq
            && *self.origin() == other.dot.origin
            && self.entry.lamport == other.lamport
            && self.deps_iter().eq(other.deps.iter().map(|(o, n)| (o, *n)))
    }
}

/// The key-value map with its delta index. Pure data structure: no clocks of
/// its own, no I/O.
///
/// Layout (see `bench/RESULTS.md`, "Memory per key", for the measured bytes):
/// versions live in `slots` (chunks of [`Entries`]), one compact [`Entry`]
/// each; `table` finds a key's slot by hashing the key text stored in the
/// entry (the key is not stored a second time); each origin's log orders
/// its versions by seq, which within one origin is also Lamport order, so
/// it serves both the first version a peer lacks and the stamp order of
/// deltas (a merge of the logs), and no other index exists.
#[derive(Default, Debug)]
pub struct Store {
    table: HashTable<Slot>,
    hasher: DefaultHashBuilder,
    /// `None`: a free slot, listed in `free`.
    slots: Entries,
    free: Vec<Slot>,
    origins: Vec<OriginRecord>,
    /// hashbrown's default hasher: looked up for every version applied.
    origin_ids: hashbrown::HashMap<Origin, OriginId>,
    free_origins: Vec<OriginId>,
    live: usize,
    /// Keys removed since [`Store::take_removed_keys`] last ran, when
    /// tracked ([`Store::track_removed_keys`]): a store with a data
    /// directory behind it tells the disk which keys to remove instead of
    /// the disk looking each written key up to count them. `None` (in
    /// memory): nothing is kept.
    removed_keys: Option<Vec<Key>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `additional` more keys at once, so that loading a
    /// known number of versions (a recovery from disk) does not grow the
    /// key table by doubling, rehashing every key each time.
    pub fn reserve(&mut self, additional: usize) {
        let Store {
            table,
            hasher,
            slots,
            ..
        } = self;
        let key_of = |slot: &Slot| {
            slots[*slot as usize]
                .as_ref()
                .expect("an indexed slot holds an entry")
                .key()
        };
        table.reserve(additional, |s| hasher.hash_one(key_of(s)));
    }

    fn origin(&self, id: OriginId) -> &Origin {
        self.origins[id as usize].origin()
    }

    fn entry(&self, slot: Slot) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("an indexed slot holds an entry")
    }

    fn view(&self, slot: Slot) -> VersionRef<'_> {
        VersionRef {
            store: self,
            entry: self.entry(slot),
        }
    }

    fn find(&self, key: &str) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&slot| self.entry(slot).key() == key)
            .copied()
    }

    /// The current version of `key`, tombstones included.
    pub fn get(&self, key: &str) -> Option<VersionRef<'_>> {
        self.find(key).map(|slot| self.view(slot))
    }

    /// From now on, remembers every key removed (collected tombstones,
    /// versions a snapshot's sender had deleted) until
    /// [`Store::take_removed_keys`] hands them out. The caller must take
    /// them regularly: they are kept until then.
    pub fn track_removed_keys(&mut self) {
        self.removed_keys.get_or_insert_with(Vec::new);
    }

    /// The keys removed since the last call (each at most once per
    /// removal; a key removed and written again is still listed). Empty
    /// unless [`Store::track_removed_keys`] was called.
    pub fn take_removed_keys(&mut self) -> Vec<Key> {
        self.removed_keys
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Keys holding a value (not tombstones).
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Keys holding a tombstone.
    pub fn tombstone_len(&self) -> usize {
        self.table.len() - self.live
    }

    /// Every current version, in stamp order.
    pub fn versions(&self) -> impl Iterator<Item = VersionRef<'_>> {
        StampOrder::new(self, &VClock::new(), None).map(|slot| self.view(slot))
    }

    /// Keeps `version` if it beats the current version of its key.
    pub fn apply(&mut self, version: Version) -> Applied {
        self.apply_ordered(version, true)
    }

    /// [`Store::apply`] for loading many versions in any order (a recovery
    /// reads them in key order, not in each origin's seq order): the
    /// origins' logs are sorted once by [`Store::finish_loading`], which
    /// must run before the store is read in stamp order (deltas, listings).
    pub fn load(&mut self, version: Version) -> Applied {
        self.apply_ordered(version, false)
    }

    /// Removes `key`'s version, if any (a recovery replaying a removal on
    /// top of a snapshot, after [`Store::finish_loading`]; a snapshot
    /// dropping a version that was never covered). Returns its dot.
    pub fn remove_key(&mut self, key: &str) -> Option<Dot> {
        let slot = self.find(key)?;
        self.remove_slot(slot)
    }

    /// Ends a [`Store::load`] sequence: sorts what it left unsorted.
    pub fn finish_loading(&mut self) {
        for record in &mut self.origins {
            record.sort();
        }
    }

    fn apply_ordered(&mut self, version: Version, ordered: bool) -> Applied {
        let current = self.find(&version.key);
        let previous_was_live = match current {
            Some(slot) => {
                let current = self.view(slot);
                let current_stamp = (current.lamport(), current.origin(), current.entry.seq);
                let new_stamp = (version.lamport, &version.dot.origin, version.dot.seq);
                if current_stamp >= new_stamp {
                    return Applied::Ignored;
                }
                !current.is_tombstone()
            }
            None => false,
        };
        let entry = self.compact(version);
        let live = !entry.is(TOMBSTONE);
        let slot = match current {
            Some(slot) => {
                let old = self.slots[slot as usize].replace(entry);
                self.forget(slot, old.expect("an indexed slot holds an entry"));
                slot
            }
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = Some(entry);
                        slot
                    }
                    None => {
                        let slot = Slot::try_from(self.slots.len())
                            .ok()
                            .filter(|&s| s != DEAD)
                            .expect("fewer than 2^32 - 1 versions in memory");
                        self.slots.push(Some(entry));
                        slot
                    }
                };
                let Store {
                    table,
                    hasher,
                    slots,
                    ..
                } = self;
                let entry_of = |slot: &Slot| {
                    slots[*slot as usize]
                        .as_ref()
                        .expect("an indexed slot holds an entry")
                };
                let hash = hasher.hash_one(entry_of(&slot).key());
                table.insert_unique(hash, slot, |s| hasher.hash_one(entry_of(s).key()));
                slot
            }
        };
        let entry = self.entry(slot);
        let (origin, seq) = (entry.origin, entry.seq);
        let log = &mut self.origins[origin as usize];
        if ordered {
            log.insert(seq, slot);
        } else {
            log.append(seq, slot);
        }
        if live {
            self.live += 1;
        }
        Applied::Replaced { previous_was_live }
    }

    /// The id of `origin`, taking a reference to it (interned on first use).
    fn hold_origin(&mut self, origin: &Origin) -> OriginId {
        let id = match self.origin_ids.get(origin) {
            Some(&id) => id,
            None => {
                let record = OriginRecord {
                    origin: Some(origin.clone()),
                    ..OriginRecord::default()
                };
                let id = match self.free_origins.pop() {
                    Some(id) => {
                        self.origins[id as usize] = record;
                        id
                    }
                    None => {
                        self.origins.push(record);
                        OriginId::try_from(self.origins.len() - 1)
                            .expect("fewer than 2^32 origins in memory")
                    }
                };
                self.origin_ids.insert(origin.clone(), id);
                id
            }
        };
        self.origins[id as usize].refs += 1;
        id
    }

    /// Drops a reference to `id`; an origin nothing refers to any more is
    /// forgotten and its id reused, so the table is bounded by what is stored.
    fn release_origin(&mut self, id: OriginId) {
        let record = &mut self.origins[id as usize];
        record.refs -= 1;
        if record.refs == 0 {
            debug_assert!(record.is_empty());
            if let Some(origin) = record.origin.take() {
                self.origin_ids.remove(&origin);
            }
            *record = OriginRecord::default();
            self.free_origins.push(id);
        }
    }

    fn compact(&mut self, version: Version) -> Entry {
        let Version {
            key,
            value,
            dot,
            lamport,
            deps,
        } = version;
        let origin = self.hold_origin(&dot.origin);
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|&n| n <= KEY_LEN)
            .expect("keys are bounded by the message size, far below 512 MiB");
        let mut meta = key_len | if value.is_none() { TOMBSTONE } else { 0 };
        let mut rest = Vec::new();
        for (o, &n) in deps.iter() {
            if *o == dot.origin && n == dot.seq {
                meta |= OWN_DOT_IN_DEPS;
            } else {
                rest.push((self.hold_origin(o), n));
            }
        }
        let text_len = key.len() + value.as_ref().map_or(0, |v| v.len());
        let deps_bytes = if rest.is_empty() {
            0
        } else {
            meta |= HAS_DEPS;
            rest.len() * DEP_BYTES + DEP_COUNT_BYTES
        };
        let mut data = Vec::with_capacity(text_len + deps_bytes);
        data.extend_from_slice(key.as_bytes());
        if let Some(value) = &value {
            data.extend_from_slice(value.as_bytes());
        }
        if !rest.is_empty() {
            for (id, n) in &rest {
                data.extend_from_slice(&id.to_le_bytes());
                data.extend_from_slice(&n.to_le_bytes());
            }
            let count = u16::try_from(rest.len())
                .expect("a clock has at most MAX_CLOCK_ENTRIES (4096) entries");
            data.extend_from_slice(&count.to_le_bytes());
        }
        Entry {
            data: data.into_boxed_slice(),
            seq: dot.seq,
            lamport,
            origin,
            meta,
        }
    }

    /// Undoes everything `entry` held in the indexes other than the table.
    fn forget(&mut self, slot: Slot, entry: Entry) {
        self.origins[entry.origin as usize].remove(entry.seq, slot);
        self.release_origin(entry.origin);
        for (id, _) in entry.deps() {
            self.release_origin(id);
        }
        if !entry.is(TOMBSTONE) {
            self.live -= 1;
        }
    }

    fn remove_slot(&mut self, slot: Slot) -> Option<Dot> {
        let dot = self.view(slot).dot();
        let hash = self.hasher.hash_one(self.entry(slot).key());
        match self.table.find_entry(hash, |&s| s == slot) {
            Ok(found) => {
                found.remove();
            }
            Err(_) => {
                debug_assert!(false, "a stored slot is in the table");
                return None;
            }
        }
        let entry = self.slots[slot as usize].take()?;
        if let Some(removed) = &mut self.removed_keys {
            removed.push(Key::from(entry.key()));
        }
        self.forget(slot, entry);
        self.free.push(slot);
        Some(dot)
    }

    /// The next chunk of versions a peer whose clock is `their` lacks, in
    /// stamp order, strictly after `after`, of at most about `max_bytes`
    /// (always at least one version when any remain, so a huge value cannot
    /// stall the transfer). Returns the chunk and, if more remain, the cursor
    /// to pass as `after` next time.
    ///
    /// Cost: `O(origins · log n)` to find where each origin's log starts,
    /// then `O(log origins)` per version sent; versions the peer has are
    /// never visited.
    pub fn delta(
        &self,
        their: &VClock,
        after: Option<&Stamp>,
        max_bytes: usize,
    ) -> (Vec<Version>, Option<Stamp>) {
        let mut chunk: Vec<Version> = Vec::new();
        let mut bytes = 0usize;
        for slot in StampOrder::new(self, their, after) {
            let version = self.view(slot);
            let size = version.encoded_size_hint();
            if !chunk.is_empty() && bytes + size > max_bytes {
                let resume_after = chunk.last().map(Version::stamp);
                return (chunk, resume_after);
            }
            bytes += size;
            chunk.push(version.to_version());
        }
        (chunk, None)
    }

    /// Drops tombstones whose write every replica that matters has applied
    /// (`stable` is the meet of their clocks). Returns the dots collected.
    pub fn collect_tombstones(&mut self, stable: &VClock) -> Vec<Dot> {
        let doomed = self.slots_where(|v| v.is_tombstone() && v.covered_by(stable));
        doomed
            .into_iter()
            .filter_map(|slot| self.remove_slot(slot))
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
        let doomed = self.slots_where(|v| v.covered_by(covers) && !snapshot_keys.contains(v.key()));
        for &slot in &doomed {
            self.remove_slot(slot);
        }
        doomed.len()
    }

    fn slots_where(&self, mut doomed: impl FnMut(VersionRef<'_>) -> bool) -> Vec<Slot> {
        (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .as_ref()
                    .is_some_and(|entry| doomed(VersionRef { store: self, entry }))
            })
            .map(|i| i as Slot)
            .collect()
    }
}

/// The heap a [`Store`] holds, by structure, in bytes requested from the
/// allocator (its size classes come on top). See `tests/store_memory.rs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The hash table of slots: one slot id and one control byte per bucket.
    pub table: usize,
    /// The entry array, at its capacity.
    pub entries: usize,
    /// Key and value text (in one allocation per version, with the deps).
    pub text: usize,
    /// Dependencies beyond each version's own dot, stored after the text.
    pub deps: usize,
    /// The origins' logs (seq and slot per version) and the origin table.
    pub logs: usize,
}

impl Footprint {
    /// Everything.
    pub fn total(&self) -> usize {
        self.table + self.entries + self.text + self.deps + self.logs
    }
}

impl Store {
    /// What this store holds on the heap, by structure (walks every entry).
    pub fn footprint(&self) -> Footprint {
        let buckets = if self.table.capacity() == 0 {
            0
        } else {
            (self.table.capacity() * 8 / 7).next_power_of_two()
        };
        let mut f = Footprint {
            table: buckets * (std::mem::size_of::<Slot>() + 1),
            entries: self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
                + self.slots.chunks.capacity() * std::mem::size_of::<Vec<Option<Entry>>>()
                + self.free.capacity() * std::mem::size_of::<Slot>(),
            ..Footprint::default()
        };
        for entry in self.slots.iter().flatten() {
            let text = entry.text_len();
            f.text += text;
            f.deps += entry.data.len() - text;
        }
        f.logs = self.origins.capacity() * std::mem::size_of::<OriginRecord>()
            + self
                .origins
                .iter()
                .map(|r| {
                    r.seqs.capacity() * 8
                        + r.slots.capacity() * std::mem::size_of::<Slot>()
                        + r.origin.as_ref().map_or(0, |o| o.as_str().len() + 16)
                })
                .sum::<usize>();
        f
    }
}

/// The slots of the versions a clock does not cover, strictly after a
/// cursor, in stamp order: a merge of the origins' logs (each already in
/// Lamport order), smallest `(lamport, origin text, seq)` first.
struct StampOrder<'a> {
    store: &'a Store,
    /// Per origin with something left: (lamport, rank of its text, id, position).
    heap: BinaryHeap<Reverse<(u64, usize, OriginId, usize)>>,
}

impl<'a> StampOrder<'a> {
    fn new(store: &'a Store, their: &VClock, after: Option<&Stamp>) -> Self {
        debug_assert!(
            store.origins.iter().all(|record| !record.unsorted),
            "Store::load without Store::finish_loading"
        );
        let mut ids: Vec<OriginId> = (0..store.origins.len() as OriginId)
            .filter(|&id| !store.origins[id as usize].is_empty())
            .collect();
        ids.sort_by(|a, b| store.origin(*a).cmp(store.origin(*b)));
        let mut heap = BinaryHeap::with_capacity(ids.len());
        for (rank, id) in ids.into_iter().enumerate() {
            let record = &store.origins[id as usize];
            let origin = record.origin();
            let seen = their.get(origin);
            let mut start = record.seqs.partition_point(|&s| s <= seen);
            if let Some(cursor) = after {
                // The first live entry whose stamp is above the cursor: logs
                // are in Lamport order, and seq order among equal Lamport
                // times.
                let past = live_partition_point(record, |i, slot| {
                    (store.entry(slot).lamport, origin, record.seqs[i])
                        <= (cursor.lamport, &cursor.origin, cursor.seq)
                });
                start = start.max(past);
            }
            if let Some(next) = Self::next_live(record, start) {
                heap.push(Reverse((store.lamport_at(record, next), rank, id, next)));
            }
        }
        StampOrder { store, heap }
    }

    fn next_live(record: &OriginRecord, from: usize) -> Option<usize> {
        (from..record.slots.len()).find(|&i| record.slots[i] != DEAD)
    }
}

impl Iterator for StampOrder<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        let Reverse((_, rank, id, at)) = self.heap.pop()?;
        let record = &self.store.origins[id as usize];
        if let Some(next) = Self::next_live(record, at + 1) {
            let lamport = self.store.lamport_at(record, next);
            self.heap.push(Reverse((lamport, rank, id, next)));
        }
        Some(record.slots[at])
    }
}

impl Store {
    /// The Lamport time of the live version at position `at` of `record`'s log.
    fn lamport_at(&self, record: &OriginRecord, at: usize) -> u64 {
        self.entry(record.slots[at]).lamport
    }
}

/// A position in `record`'s log such that every live entry before it
/// satisfies `below` (given the position and slot) and no live entry from
/// it on does; `below` must hold for a prefix of the live entries. Removed
/// entries (`DEAD`) have no entry to ask, so each probe moves to the first
/// live entry at or after the middle; the scan is bounded by the part of
/// the range still open, so a search costs `O(log n)` probes plus at most
/// the length of the removed runs it meets (removed entries are at most
/// half of a log: see [`OriginRecord::remove`]).
fn live_partition_point(
    record: &OriginRecord,
    mut below: impl FnMut(usize, Slot) -> bool,
) -> usize {
    let (mut low, mut high) = (0, record.slots.len());
    while low < high {
        let mid = low + (high - low) / 2;
        match (mid..high).find(|&i| record.slots[i] != DEAD) {
            // Only removed entries from the middle on: nothing to decide there.
            None => high = mid,
            Some(live) if below(live, record.slots[live]) => low = live + 1,
            // The entries between `mid` and `live` are removed: any of
            // those positions leads to `live` next.
            Some(_) => high = mid,
        }
    }
    low
}

#[cfg(test)]
mod tests;
