//! Reading a data directory back: which files count, and replaying their
//! batches in order into one version per key.
//!
//! Rules (see [`super::format`] for batches):
//!
//! * The newest complete snapshot `G` is read, then every log of generation
//!   `G` or above, in order. Older files are what that snapshot replaced
//!   (a compaction that had not removed them yet).
//! * A batch counts once its state record is read; then its versions
//!   replace, and its removals remove, each key's record.
//! * What follows the last state of the *last* file is a batch cut short
//!   by a crash: dropped, and cut off the file before anything is appended.
//! * A record that fails its digest or encoding before a state that counts
//!   (or anywhere in an older file) is *damage*: the version is dropped and
//!   counted, and the caller must then not claim the stored clock. A damaged
//!   state record refuses the start: which lives this directory had is then
//!   unknown.

use std::path::{Path, PathBuf};

use super::format::{self, FileKind, Frame, Item, Kind};
use crate::core::{DurableState, Key, Version};

/// Records decoded per parallel step (bounded memory between steps).
const WINDOW: usize = 16 * 1024;
/// Below this many records one thread decodes them all.
pub(super) const PARALLEL_FROM: usize = 4096;

/// A data file: its kind, generation and path.
pub type DataFile = (FileKind, u64, PathBuf);

/// What the logs left for one key on top of the snapshot read before
/// them: its version (`None`: removed). Either way, what the snapshot held
/// for the key goes.
pub type Change = Option<Version>;

/// Changes by key, in no order (hashbrown's default hasher: a recovery can
/// insert a million keys, and SipHash was a tenth of its time).
pub type Changes = hashbrown::HashMap<Key, Change>;

/// What a directory's files held besides the snapshot's versions (which
/// [`replay`] hands out as it reads them).
#[derive(Debug, Default)]
pub struct Replayed {
    /// The state of the last batch that counts.
    pub state: Option<DurableState>,
    /// What the logs did on top of the snapshot.
    pub changes: Changes,
    /// Records dropped as damaged.
    pub damaged: usize,
    /// The files read, in order.
    pub files: Vec<DataFile>,
    /// Where the last file's last complete batch ends (anything after it is
    /// a batch cut short), if it has bytes past that.
    pub torn_at: Option<u64>,
}

/// Why a directory cannot be read.
#[derive(Debug)]
pub enum ReplayError {
    Io(std::io::Error),
    /// A state record failed: the identity of earlier lives is unknown.
    DamagedState,
}

impl From<std::io::Error> for ReplayError {
    fn from(error: std::io::Error) -> Self {
        ReplayError::Io(error)
    }
}

/// The files of `dir` that hold its data, in reading order, and those that
/// are left-overs (older than the newest snapshot, or a `.partial`).
pub fn list(dir: &Path) -> std::io::Result<(Vec<DataFile>, Vec<PathBuf>)> {
    let mut ours = Vec::new();
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match format::parse_name(name) {
            Some((kind, generation)) => ours.push((kind, generation, entry.path())),
            None if name.ends_with(".partial") => leftovers.push(entry.path()),
            None => {}
        }
    }
    // Snapshot G sorts before log G: it holds everything below G.
    ours.sort_by_key(|(kind, generation, _)| (*generation, matches!(kind, FileKind::Log)));
    let newest_snapshot = ours
        .iter()
        .filter(|(kind, _, _)| *kind == FileKind::Snapshot)
        .map(|(_, generation, _)| *generation)
        .max();
    if let Some(snapshot) = newest_snapshot {
        let (old, keep): (Vec<_>, Vec<_>) = ours.into_iter().partition(|(kind, generation, _)| {
            *generation < snapshot || (*kind == FileKind::Snapshot && *generation != snapshot)
        });
        leftovers.extend(old.into_iter().map(|(_, _, path)| path));
        ours = keep;
    }
    Ok((ours, leftovers))
}

/// Reads and replays `files` (from [`list`], in its order). The snapshot's
/// versions (one per key, and no removals: a compaction's output) go to
/// `snapshot` as they are decoded, with no table in between; the logs'
/// batches become [`Replayed::changes`] on top of them.
pub fn replay(
    files: Vec<DataFile>,
    snapshot: &mut dyn SnapshotSink,
) -> Result<Replayed, ReplayError> {
    let mut out = Replayed::default();
    let last = files.len().saturating_sub(1);
    // One buffer for every file: fresh pages for a whole file (the kernel
    // zeroes each) were a tenth of a large recovery.
    let mut buffer = Vec::with_capacity(format::READ_CHUNK);
    for (index, (kind, _, path)) in files.iter().enumerate() {
        if *kind == FileKind::Snapshot {
            let bytes = std::fs::metadata(path)?.len();
            snapshot.expect(usize::try_from(bytes / SMALLEST_RECORD).unwrap_or(usize::MAX));
        }
        let mut reader = Reader {
            snapshot: (*kind == FileKind::Snapshot).then_some(&mut *snapshot),
            batch: Batch::default(),
            out: &mut out,
        };
        let tail = reader.file(path, &mut buffer)?;
        if let Some(tail) = tail {
            // Only the log being appended to can end in a batch cut short.
            if index == last && *kind == FileKind::Log {
                out.torn_at = Some(tail.complete_end);
            } else {
                // An older file never ends in a cut batch (the tail of the
                // last one is cut off at start, files are sealed only
                // between batches, and a snapshot is complete before it is
                // named): its records are damage.
                if tail.damaged_state {
                    return Err(ReplayError::DamagedState);
                }
                out.damaged += tail.records;
            }
        }
    }
    out.files = files;
    Ok(out)
}

/// Where a snapshot's versions go as they are read.
pub trait SnapshotSink {
    /// At most about this many versions follow (a sizing hint).
    fn expect(&mut self, versions: usize);
    /// One version (each key at most once).
    fn version(&mut self, version: Version);
}

/// About the smallest version record (header, a short key and value, an
/// origin): snapshot bytes over it bound the versions it holds.
const SMALLEST_RECORD: u64 = 64;

/// Records after a file's last state record.
struct Tail {
    /// Where the last complete batch ends.
    complete_end: u64,
    /// Records (intact or not) after it, or 1 if only unparseable bytes.
    records: usize,
    /// One of them claimed to be a state record.
    damaged_state: bool,
}

/// The batch being read.
#[derive(Default)]
struct Batch {
    pending: Vec<Item>,
    damaged: usize,
    damaged_state: bool,
    /// Where the last complete batch ended.
    complete_end: u64,
}

/// Reading one file.
struct Reader<'a> {
    /// Where a snapshot's versions go (`None`: a log).
    snapshot: Option<&'a mut dyn SnapshotSink>,
    batch: Batch,
    out: &'a mut Replayed,
}

impl Reader<'_> {
    /// Replays the file at `path`, reading it a chunk at a time into
    /// `buffer`; returns what follows its last complete batch, if anything
    /// does. Decoding (digests, MessagePack: on every core) of one window
    /// of records runs while the previous window is applied on this thread.
    fn file(&mut self, path: &Path, buffer: &mut Vec<u8>) -> Result<Option<Tail>, ReplayError> {
        let (end, unparsed) = format::read_framed(path, buffer, |bytes, frames, base| {
            let mut windows = frames.chunks(WINDOW);
            let mut decoded = windows.next().map(|w| (decode_all(bytes, w), w));
            while let Some((items, window)) = decoded.take() {
                let next = windows.next();
                let applied = std::thread::scope(|scope| {
                    let ahead = next.map(|w| scope.spawn(move || (decode_all(bytes, w), w)));
                    let applied = items
                        .into_iter()
                        .zip(window)
                        .try_for_each(|(item, frame)| self.apply(item, base + frame.end as u64));
                    decoded = ahead.map(|thread| {
                        thread
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    });
                    applied
                });
                applied?;
            }
            Ok::<(), ReplayError>(())
        })?;
        let batch = &self.batch;
        if batch.complete_end == end {
            return Ok(None);
        }
        Ok(Some(Tail {
            complete_end: batch.complete_end,
            records: batch.pending.len() + batch.damaged + usize::from(unparsed),
            damaged_state: batch.damaged_state,
        }))
    }

    /// Takes in one record that ends at `end` in its file.
    fn apply(&mut self, item: Item, end: u64) -> Result<(), ReplayError> {
        let batch = &mut self.batch;
        match item {
            Item::State(state) => {
                if batch.damaged_state {
                    return Err(ReplayError::DamagedState);
                }
                let changes = &mut self.out.changes;
                for earlier in batch.pending.drain(..) {
                    match earlier {
                        Item::Version(version) => {
                            changes.insert(version.key.clone(), Some(version));
                        }
                        Item::Removal(key) => {
                            changes.insert(key, None);
                        }
                        Item::State(_) | Item::Damaged { .. } => {}
                    }
                }
                self.out.damaged += batch.damaged;
                batch.damaged = 0;
                self.out.state = Some(state);
                batch.complete_end = end;
            }
            Item::Damaged { claimed } => {
                batch.damaged += 1;
                if claimed != Some(Kind::Version) && claimed != Some(Kind::Removal) {
                    batch.damaged_state = true;
                }
            }
            Item::Version(version) if self.snapshot.is_some() => {
                if let Some(snapshot) = self.snapshot.as_mut() {
                    snapshot.version(version);
                }
            }
            // A snapshot holds no removals: this one is not a compaction's.
            Item::Removal(_) if self.snapshot.is_some() => batch.damaged += 1,
            other => batch.pending.push(other),
        }
        Ok(())
    }
}

/// Checks and decodes `frames`, on one thread per core when there are many.
fn decode_all(bytes: &[u8], frames: &[Frame]) -> Vec<Item> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if workers == 1 || frames.len() < PARALLEL_FROM {
        return frames.iter().map(|&f| format::decode(bytes, f)).collect();
    }
    let per = frames.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let parts: Vec<_> = frames
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&f| format::decode(bytes, f))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
