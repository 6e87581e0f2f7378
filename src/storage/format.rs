//! The record format of the data directory's files, and their names.
//!
//! Every file is a sequence of records:
//!
//! ```text
//! [body length: u32 LE][kind: u8][digest: 8 bytes][body]
//! ```
//!
//! The digest is the first 8 bytes of SHA-256 over the length, the kind and
//! the body, so a flipped byte anywhere in a record — its length included —
//! fails it. Bodies: a [`Version`] (MessagePack, as [`VersionOnDisk`]: its
//! own dot is not repeated among its dependencies), a removed key (UTF-8),
//! or a [`DurableState`] (MessagePack). A *batch* is any number of version and
//! removal records followed by one state record; the state vouches for
//! exactly the records before it, and a reader applies a batch only once it
//! has read that state (a batch cut short by a crash is dropped whole).
//!
//! Files: `log-<generation>` (appended to; one is active) and
//! `snap-<generation>` (a compaction's output: everything in the older
//! generations, as one batch). Generations are 20-digit decimal numbers, so
//! names sort as numbers do. A snapshot is written as `*.partial` and
//! renamed once complete and fsynced; a `*.partial` found at start is an
//! interrupted compaction and is removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::{Dot, DurableState, JsonText, Key, Origin, VClock, Version};

/// A version as a record holds it: key, value, origin, seq, Lamport time,
/// and the dependencies other than its own dot (which every version's
/// dependencies include; repeating its origin text cost about 30 bytes a
/// record and a second origin to parse at recovery). The key comes first:
/// [`version_key`] reads it alone.
#[derive(Serialize)]
struct VersionOut<'a>(
    &'a str,
    Option<&'a str>,
    &'a Origin,
    u64,
    u64,
    Vec<(&'a Origin, u64)>,
);

#[derive(Deserialize)]
struct VersionIn(Key, Option<JsonText>, Origin, u64, u64, Vec<(Origin, u64)>);

impl From<VersionIn> for Version {
    fn from(VersionIn(key, value, origin, seq, lamport, others): VersionIn) -> Version {
        let mut deps = VClock::from_pairs(others);
        deps.raise(&origin, seq);
        Version {
            key,
            value,
            dot: Dot { origin, seq },
            lamport,
            deps,
        }
    }
}

/// Bytes before a record's body.
pub const HEADER: usize = 4 + 1 + DIGEST;
const DIGEST: usize = 8;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Version = 1,
    Removal = 2,
    State = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Version),
            2 => Some(Kind::Removal),
            3 => Some(Kind::State),
            _ => None,
        }
    }
}

/// One record decoded.
#[derive(Debug)]
pub enum Item {
    Version(Version),
    Removal(Key),
    State(DurableState),
    /// Its digest or encoding is wrong; `claimed` is the kind its header
    /// names (`None`: none we know), a hint only.
    Damaged {
        claimed: Option<Kind>,
    },
}

/// Where one record lies in a file: `start..end` is the whole record.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
}

/// Splits `bytes` into records by their lengths. Stops at the first length
/// that runs past the end (a torn write, or a damaged length); returns the
/// frames and where parsing stopped.
pub fn frames(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + HEADER).checked_add(len).filter(|&e| e <= bytes.len()) else {
            break;
        };
        out.push(Frame { start: at, end });
        at = end;
    }
    (out, at)
}

/// Bytes read from a file at a time (in tests, less than a record, so that
/// records cut across reads are the rule).
pub const READ_CHUNK: usize = if cfg!(test) { 61 } else { 16 << 20 };

/// Reads the file at `path` a chunk at a time into `buffer` (one buffer for
/// every file: fresh pages for a whole file, which the kernel zeroes, were a
/// tenth of a large recovery; and memory stays bounded by the chunk, not
/// the file) and hands `each` every run of whole records read: the bytes,
/// their frames, and the file offset of the bytes' start. Returns where
/// the file ends and whether bytes past the last whole record remain (a
/// record cut short, or a damaged length).
pub fn read_framed<E: From<std::io::Error>>(
    path: &Path,
    buffer: &mut Vec<u8>,
    mut each: impl FnMut(&[u8], &[Frame], u64) -> Result<(), E>,
) -> Result<(u64, bool), E> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    // The file offset of `buffer[0]`.
    let mut base = 0u64;
    buffer.clear();
    loop {
        let read = (&mut file).take(READ_CHUNK as u64).read_to_end(buffer)?;
        let (frames, parsed_to) = frames(buffer);
        if !frames.is_empty() {
            each(buffer, &frames, base)?;
        }
        buffer.drain(..parsed_to);
        base += parsed_to as u64;
        if read == 0 {
            return Ok((base + buffer.len() as u64, !buffer.is_empty()));
        }
    }
}

fn digest(len_and_kind: &[u8], body: &[u8]) -> [u8; DIGEST] {
    let mut hasher = Sha256::new();
    hasher.update(len_and_kind);
    hasher.update(body);
    let full = hasher.finalize();
    let mut out = [0; DIGEST];
    out.copy_from_slice(&full[..DIGEST]);
    out
}

/// Decodes the record `frame` of `bytes`: never panics, whatever the bytes.
pub fn decode(bytes: &[u8], frame: Frame) -> Item {
    let record = &bytes[frame.start..frame.end];
    let claimed = kind_of(record);
    if !intact(record) {
        return Item::Damaged { claimed };
    }
    let body = body(record);
    let decoded = match claimed {
        Some(Kind::Version) => rmp_serde::from_slice::<VersionIn>(body)
            .ok()
            .map(|v| Item::Version(v.into())),
        Some(Kind::Removal) => std::str::from_utf8(body)
            .ok()
            .map(|k| Item::Removal(Key::from(k))),
        Some(Kind::State) => rmp_serde::from_slice(body).ok().map(Item::State),
        None => None,
    };
    decoded.unwrap_or(Item::Damaged { claimed })
}

/// The key of a version record without decoding the rest (compaction keeps
/// the newest record of each key). `None` if the body is not a version.
pub fn version_key(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    // `Version` is encoded as an array whose first element is the key.
    rmp::decode::read_array_len(&mut rest).ok()?;
    let len = rmp::decode::read_str_len(&mut rest).ok()? as usize;
    std::str::from_utf8(rest.get(..len)?).ok()
}

/// Appends one record of `kind` to `out`, its body written by `body`.
fn append(out: &mut Vec<u8>, kind: Kind, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    body(out);
    let len = u32::try_from(out.len() - start - HEADER).expect("a record under 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4] = kind as u8;
    let (head, body) = out[start..].split_at_mut(HEADER);
    let sum = digest(&head[..5], body);
    head[5..].copy_from_slice(&sum);
}

pub fn append_version(out: &mut Vec<u8>, version: &Version) {
    let Dot { origin, seq } = &version.dot;
    let others = version
        .deps
        .iter()
        .filter(|&(o, n)| !(o == origin && n == seq))
        .map(|(o, &n)| (o, n))
        .collect();
    let record = VersionOut(
        &version.key,
        version.value.as_deref(),
        origin,
        *seq,
        version.lamport,
        others,
    );
    append(out, Kind::Version, |buf| {
        rmp_serde::encode::write(buf, &record).expect("versions always encode")
    });
}

pub fn append_removal(out: &mut Vec<u8>, key: &str) {
    append(out, Kind::Removal, |buf| {
        buf.extend_from_slice(key.as_bytes())
    });
}

pub fn append_state(out: &mut Vec<u8>, state: &DurableState) {
    append(out, Kind::State, |buf| {
        rmp_serde::encode::write(buf, state).expect("states always encode")
    });
}

/// The kind a well-formed record's header names.
pub fn kind_of(record: &[u8]) -> Option<Kind> {
    record.get(4).copied().and_then(Kind::from_byte)
}

/// Whether a framed record's digest holds.
pub fn intact(record: &[u8]) -> bool {
    record.len() >= HEADER && record[5..HEADER] == digest(&record[..5], &record[HEADER..])
}

/// The body of a framed record.
pub fn body(record: &[u8]) -> &[u8] {
    &record[HEADER..]
}

/// The two kinds of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// Sorted before a log of the same generation: a snapshot `G` holds
    /// every generation below `G`, read before log `G`.
    Snapshot,
    Log,
}

pub fn path_of(dir: &Path, kind: FileKind, generation: u64) -> PathBuf {
    let prefix = match kind {
        FileKind::Snapshot => "snap",
        FileKind::Log => "log",
    };
    dir.join(format!("{prefix}-{generation:020}"))
}

/// The kind and generation a file name stands for (`None`: not ours, or a
/// `.partial`).
pub fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    let (kind, digits) = if let Some(d) = name.strip_prefix("snap-") {
        (FileKind::Snapshot, d)
    } else {
        (FileKind::Log, name.strip_prefix("log-")?)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((kind, digits.parse().ok()?))
}

/// A compaction's output while it is written.
pub fn partial_path(dir: &Path, generation: u64) -> PathBuf {
    let mut path = path_of(dir, FileKind::Snapshot, generation).into_os_string();
    path.push(".partial");
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn origin(i: u8) -> Origin {
        Origin::new(&format!("10.0.0.{i}:8090"), 7 + u64::from(i))
    }

    proptest! {
        /// A version comes back exactly as written (its own dot restored
        /// among its dependencies), and so do removals and states.
        #[test]
        fn records_round_trip(
            key in "[a-z0-9]{1,50}",
            value in proptest::option::of("[ -~]{0,40}"),
            own in 0u8..4,
            seq in 1u64..u64::MAX,
            lamport in any::<u64>(),
            others in proptest::collection::vec((0u8..4, 1u64..1000), 0..4),
        ) {
            let origin = origin(own);
            let mut deps = VClock::from_pairs(others.iter().map(|&(o, n)| (self::origin(o), n)));
            deps.raise(&origin, seq);
            let version = Version {
                key: key.as_str().into(),
                value: value.map(|v| v.as_str().into()),
                dot: Dot { origin, seq },
                lamport,
                deps,
            };
            let mut bytes = Vec::new();
            append_version(&mut bytes, &version);
            append_removal(&mut bytes, &key);
            let (frames, end) = frames(&bytes);
            prop_assert_eq!(end, bytes.len());
            prop_assert_eq!(frames.len(), 2);
            prop_assert_eq!(version_key(body(&bytes[frames[0].start..frames[0].end])), Some(key.as_str()));
            match decode(&bytes, frames[0]) {
                Item::Version(back) => prop_assert_eq!(back, version),
                other => prop_assert!(false, "{:?}", other),
            }
            match decode(&bytes, frames[1]) {
                Item::Removal(back) => prop_assert_eq!(&*back, key.as_str()),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Whatever the bytes, reading them never panics, and nothing that
        /// fails its digest is taken as data.
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (frames, end) = frames(&bytes);
            prop_assert!(end <= bytes.len());
            for frame in frames {
                let record = &bytes[frame.start..frame.end];
                match decode(&bytes, frame) {
                    Item::Damaged { .. } => {}
                    _ => prop_assert!(intact(record)),
                }
                let _ = version_key(body(record));
            }
        }
    }
}
