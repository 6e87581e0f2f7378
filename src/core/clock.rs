//! Vector clocks and the identifiers they are keyed by.
//!
//! An [`Origin`] names one *life* of a replica: its address plus the
//! incarnation number it chose at start-up (`"10.10.0.2:8090@1764000000123"`).
//! Keying clocks by life rather than by bare address is what makes sequence
//! numbers unique across restarts without any coordination: a restarted
//! replica is a new origin whose counter starts at 1, so it can never reissue a
//! `(origin, seq)` pair its earlier life handed out, and a clock entry never
//! claims writes of an earlier life that were lost or are still in flight.
//!
//! A [`VClock`] entry `o ↦ n` means "every write that origin `o` made with
//! sequence number `≤ n`". Entries equal to zero are never stored, so equality
//! of maps is equality of clocks.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most entries a clock may have when decoded (from a peer's message or a
/// client's metadata). A clock has one entry per replica life that wrote, so
/// this is far beyond any real cluster; a larger one is refused while it is
/// being read, before the rest of it is.
pub const MAX_CLOCK_ENTRIES: usize = 4096;

/// One life of one replica, rendered `"<address>@<incarnation>"`.
///
/// Cheap to clone (shared string); ordered by its text so that every replica
/// breaks ties identically.
#[derive(Clone, Eq, Serialize)]
#[serde(transparent)]
pub struct Origin(Arc<str>);

/// Origins from the network are checked as they are read: anything that is
/// not `"<address>@<u64>"` fails the message that carries it.
impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OriginVisitor;
        impl Visitor<'_> for OriginVisitor {
            type Value = Origin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an origin \"<address>@<incarnation>\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Origin, E> {
                Origin::parse(text).ok_or_else(|| {
                    E::custom(format!(
                        "{text:?} is not an origin \"<address>@<incarnation>\""
                    ))
                })
            }
        }
        deserializer.deserialize_str(OriginVisitor)
    }
}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

// Origins are compared constantly (clock lookups, stamp order) and are mostly
// clones of one another: the pointer check settles most comparisons without
// reading the text. Consistent with `Hash`, which hashes the text.
impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Ord for Origin {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for Origin {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Origin {
    /// The origin of `address` in its life `incarnation`.
    pub fn new(address: &str, incarnation: u64) -> Self {
        Origin(Arc::from(format!("{address}@{incarnation}")))
    }

    /// Parses the textual form, accepting only `"<non-empty>@<u64>"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, incarnation) = text.rsplit_once('@')?;
        if address.is_empty() || incarnation.parse::<u64>().is_err() {
            return None;
        }
        Some(Origin(Arc::from(text)))
    }

    /// The textual form, `"<address>@<incarnation>"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The replica address part.
    pub fn address(&self) -> &str {
        self.0.rsplit_once('@').map_or(&self.0, |(a, _)| a)
    }

    /// The incarnation part (0 for a range bound that names no real origin).
    pub fn incarnation(&self) -> u64 {
        self.0
            .rsplit_once('@')
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one write: the origin that took it and its sequence number
/// there (1, 2, 3, … per origin).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Dot {
    /// The life that took the write.
    pub origin: Origin,
    /// Its position among that life's writes, from 1.
    pub seq: u64,
}

/// A vector clock: per origin, the highest sequence number covered.
///
/// Stored as a vector sorted by origin, without zero entries and without
/// duplicates (so equality of vectors is equality of clocks). Clocks are
/// small — one entry per replica life — and every stored version carries
/// one (its dependencies), so a flat vector, binary-searched, is as fast as
/// a tree and several times smaller: a `BTreeMap` allocates a node for
/// eleven entries even when it holds three.
///
/// On the wire it is a map `{origin: seq}` (JSON object, MessagePack map).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct VClock(Vec<(Origin, u64)>);

impl VClock {
    /// The empty clock (covers no write).
    pub fn new() -> Self {
        VClock(Vec::new())
    }

    fn position(&self, origin: &Origin) -> Result<usize, usize> {
        self.0.binary_search_by(|(o, _)| o.cmp(origin))
    }

    /// The highest sequence number covered for `origin` (0: none).
    pub fn get(&self, origin: &Origin) -> u64 {
        self.position(origin).map_or(0, |i| self.0[i].1)
    }

    /// Raises the entry for `origin` to at least `seq`.
    pub fn raise(&mut self, origin: &Origin, seq: u64) {
        if seq == 0 {
            return;
        }
        match self.position(origin) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(seq),
            Err(i) => self.0.insert(i, (origin.clone(), seq)),
        }
    }

    /// Whether the write `dot` is covered.
    pub fn covers_dot(&self, dot: &Dot) -> bool {
        self.get(&dot.origin) >= dot.seq
    }

    /// `self ≥ other` componentwise: every write `other` covers, `self` covers.
    pub fn covers(&self, other: &VClock) -> bool {
        other.0.iter().all(|(origin, seq)| self.get(origin) >= *seq)
    }

    /// Least upper bound, in place.
    pub fn merge(&mut self, other: &VClock) {
        for (origin, seq) in &other.0 {
            self.raise(origin, *seq);
        }
    }

    /// Least upper bound.
    pub fn joined(&self, other: &VClock) -> VClock {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Greatest lower bound, in place (entries missing on either side are 0).
    pub fn meet(&mut self, other: &VClock) {
        self.0.retain_mut(|(origin, seq)| {
            *seq = (*seq).min(other.get(origin));
            *seq > 0
        });
    }

    /// Causal comparison; `None` when the clocks are concurrent.
    pub fn partial_cmp_causal(&self, other: &VClock) -> Option<Ordering> {
        match (self.covers(other), other.covers(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    /// Whether the clock covers no write at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many origins have a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Entries in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (&Origin, &u64)> {
        self.0.iter().map(|(origin, seq)| (origin, seq))
    }

    /// Builds a clock from pairs in any order: the greatest count per origin,
    /// zero entries dropped. `O(n log n)`: sorted once, not inserted one by
    /// one into the sorted vector.
    pub fn from_pairs<I: IntoIterator<Item = (Origin, u64)>>(pairs: I) -> Self {
        let mut entries: Vec<(Origin, u64)> =
            pairs.into_iter().filter(|(_, seq)| *seq > 0).collect();
        // Greatest count first within an origin, so dedup keeps it.
        entries.sort_unstable_by(|(a, m), (b, n)| a.cmp(b).then(n.cmp(m)));
        entries.dedup_by(|later, kept| later.0 == kept.0);
        VClock(entries)
    }
}

impl Serialize for VClock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for VClock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClockVisitor;
        impl<'de> Visitor<'de> for ClockVisitor {
            type Value = VClock;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from origin to sequence number")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VClock, A::Error> {
                VClock::read_entries(map)
            }
        }
        deserializer.deserialize_map(ClockVisitor)
    }
}

impl VClock {
    /// Reads a clock's entries from a map being decoded, refusing it (before
    /// reading further) as soon as it has more than [`MAX_CLOCK_ENTRIES`],
    /// and any entry whose origin is malformed.
    pub(crate) fn read_entries<'de, A: MapAccess<'de>>(mut map: A) -> Result<VClock, A::Error> {
        // Sized from the hint only up to a small cap so a lying hint cannot
        // reserve much.
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(pair) = map.next_entry::<Origin, u64>()? {
            if pairs.len() == MAX_CLOCK_ENTRIES {
                return Err(serde::de::Error::custom(format!(
                    "a clock has more than {MAX_CLOCK_ENTRIES} entries"
                )));
            }
            pairs.push(pair);
        }
        Ok(VClock::from_pairs(pairs))
    }
}

impl fmt::Debug for VClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str) -> Origin {
        Origin::new(name, 1)
    }

    #[test]
    fn origin_round_trips_and_rejects_garbage() {
        let origin = Origin::new("10.0.0.1:8090", 42);
        assert_eq!(origin.as_str(), "10.0.0.1:8090@42");
        assert_eq!(origin.address(), "10.0.0.1:8090");
        assert_eq!(Origin::parse("10.0.0.1:8090@42"), Some(origin));
        for bad in ["", "@1", "a@", "a@x", "noat", "a@-1"] {
            assert_eq!(Origin::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zero_entries_are_not_stored() {
        let mut clock = VClock::new();
        clock.raise(&o("a"), 0);
        assert!(clock.is_empty());
        assert_eq!(clock, VClock::from_pairs([(o("a"), 0)]));
    }

    #[test]
    fn covers_and_compare() {
        let a = VClock::from_pairs([(o("a"), 2), (o("b"), 1)]);
        let b = VClock::from_pairs([(o("a"), 1)]);
        let c = VClock::from_pairs([(o("b"), 3)]);
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert_eq!(a.partial_cmp_causal(&b), Some(Ordering::Greater));
        assert_eq!(a.partial_cmp_causal(&c), None);
        assert!(a.covers(&VClock::new()));
        assert!(a.covers_dot(&Dot {
            origin: o("a"),
            seq: 2
        }));
        assert!(!a.covers_dot(&Dot {
            origin: o("a"),
            seq: 3
        }));
    }

    #[test]
    fn clocks_are_maps_on_the_wire_and_normalised_when_read() {
        let clock = VClock::from_pairs([(o("b"), 2), (o("a"), 1), (o("b"), 5), (o("c"), 0)]);
        assert_eq!(clock, VClock::from_pairs([(o("a"), 1), (o("b"), 5)]));
        let json = serde_json::to_string(&clock).unwrap();
        assert_eq!(json, r#"{"a@1":1,"b@1":5}"#);
        let read: VClock = serde_json::from_str(r#"{"b@1":5,"a@1":1,"z@1":0}"#).unwrap();
        assert_eq!(read, clock);
        let packed = rmp_serde::to_vec_named(&clock).unwrap();
        assert_eq!(rmp_serde::from_slice::<VClock>(&packed).unwrap(), clock);
        assert!(serde_json::from_str::<VClock>("[1]").is_err());
    }

    /// A MessagePack map of `entries` exactly as given (duplicates, zeros
    /// and all), as a peer could send it.
    fn packed_map(entries: &[(String, u64)]) -> Vec<u8> {
        struct Map<'a>(&'a [(String, u64)]);
        impl Serialize for Map<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(o, n)| (o, n)))
            }
        }
        rmp_serde::to_vec(&Map(entries)).unwrap()
    }

    #[test]
    fn a_clock_over_the_entry_cap_is_a_decode_error() {
        let at_cap: Vec<(String, u64)> = (0..MAX_CLOCK_ENTRIES)
            .map(|i| (format!("10.0.0.1:{i}@1"), 1))
            .collect();
        let clock: VClock = rmp_serde::from_slice(&packed_map(&at_cap)).unwrap();
        assert_eq!(clock.len(), MAX_CLOCK_ENTRIES);
        let mut over = at_cap;
        over.push(("10.0.0.2:1@1".into(), 1));
        let error = rmp_serde::from_slice::<VClock>(&packed_map(&over)).unwrap_err();
        assert!(error.to_string().contains("entries"), "{error}");
    }

    #[test]
    fn malformed_origins_are_a_decode_error() {
        for bad in ["", "noat", "a@", "@1", "a@x"] {
            let bytes = packed_map(&[("a@1".into(), 1), (bad.into(), 2)]);
            assert!(rmp_serde::from_slice::<VClock>(&bytes).is_err(), "{bad:?}");
            let json = format!(r#"{{"{bad}": 2}}"#);
            assert!(serde_json::from_str::<VClock>(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn building_a_clock_from_many_unsorted_entries_is_not_quadratic() {
        // Descending order is the worst case for inserting one by one into a
        // sorted vector; 100,000 entries took seconds that way.
        let pairs: Vec<(Origin, u64)> = (0..100_000u64)
            .rev()
            .map(|i| (Origin::new("10.0.0.1:8090", i), i % 7))
            .collect();
        let clock = VClock::from_pairs(pairs);
        assert_eq!(clock.len(), (0..100_000u64).filter(|i| i % 7 > 0).count());
        assert!(clock.0.windows(2).all(|w| w[0].0 < w[1].0));
        // Decoding that many is refused at the cap, before reading the rest.
        let entries: Vec<(String, u64)> = (0..100_000u64)
            .map(|i| (format!("10.0.0.1:8090@{i}"), 1))
            .collect();
        assert!(rmp_serde::from_slice::<VClock>(&packed_map(&entries)).is_err());
    }

    #[test]
    fn merge_interleaves_sorted_entries() {
        let mut a = VClock::from_pairs([(o("a"), 1), (o("c"), 3)]);
        a.merge(&VClock::from_pairs([(o("b"), 2), (o("c"), 1), (o("d"), 4)]));
        assert_eq!(
            a,
            VClock::from_pairs([(o("a"), 1), (o("b"), 2), (o("c"), 3), (o("d"), 4)])
        );
        let before = a.clone();
        a.merge(&VClock::from_pairs([(o("b"), 1)]));
        assert_eq!(a, before, "merging a covered clock changes nothing");
    }

    #[test]
    fn meet_drops_entries_that_fall_to_zero() {
        let mut a = VClock::from_pairs([(o("a"), 2), (o("b"), 1)]);
        a.meet(&VClock::from_pairs([(o("a"), 5)]));
        assert_eq!(a, VClock::from_pairs([(o("a"), 2)]));
    }
}
