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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::format::{self, FileKind, Frame, Item, Kind};
use crate::core::{DurableState, Key, Version};

/// Records decoded per parallel step (bounded memory between steps).
const WINDOW: usize = 32 * 1024;
/// Below this many records one thread decodes them all.
pub(super) const PARALLEL_FROM: usize = 4096;

/// A data file: its kind, generation and path.
pub type DataFile = (FileKind, u64, PathBuf);

/// What a directory's files held.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The state of the last batch that counts.
    pub state: Option<DurableState>,
    /// One version per key.
    pub versions: HashMap<Key, Version>,
    /// Records dropped as damaged.
    pub damaged: usize,
    /// The files read, in order.
    pub files: Vec<DataFile>,
    /// Where the last file's last complete batch ends (anything after it is
    /// a batch cut short), if it has bytes past that.
    pub torn_at: Option<u64>,
    /// Bytes in the files read.
    pub bytes: u64,
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

/// Reads and replays every file of `dir` that holds data.
pub fn replay(dir: &Path) -> Result<Replayed, ReplayError> {
    let (files, _) = list(dir)?;
    let mut out = Replayed::default();
    let last = files.len().saturating_sub(1);
    for (index, (_, _, path)) in files.iter().enumerate() {
        let bytes = std::fs::read(path)?;
        out.bytes += bytes.len() as u64;
        let tail = replay_file(&bytes, &mut out)?;
        if let Some(tail) = tail {
            if index == last {
                out.torn_at = Some(tail.complete_end as u64);
            } else {
                // An older file never ends in a cut batch (the tail of the
                // last one is cut off at start, and files are sealed only
                // between batches): its records are damage.
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

/// Records after a file's last state record.
struct Tail {
    /// Where the last complete batch ends.
    complete_end: usize,
    /// Records (intact or not) after it, or 1 if only unparseable bytes.
    records: usize,
    /// One of them claimed to be a state record.
    damaged_state: bool,
}

/// Replays one file into `out`; returns what follows its last complete
/// batch, if anything does.
fn replay_file(bytes: &[u8], out: &mut Replayed) -> Result<Option<Tail>, ReplayError> {
    let (frames, parsed_to) = format::frames(bytes);
    let mut pending: Vec<Item> = Vec::new();
    let mut pending_damaged = 0usize;
    let mut damaged_state = false;
    let mut complete_end = 0usize;
    for window in frames.chunks(WINDOW) {
        let items = decode_all(bytes, window);
        for (item, frame) in items.into_iter().zip(window) {
            match item {
                Item::State(state) => {
                    if damaged_state {
                        return Err(ReplayError::DamagedState);
                    }
                    for earlier in pending.drain(..) {
                        match earlier {
                            Item::Version(v) => {
                                out.versions.insert(v.key.clone(), v);
                            }
                            Item::Removal(key) => {
                                out.versions.remove(&key);
                            }
                            Item::State(_) | Item::Damaged { .. } => {}
                        }
                    }
                    out.damaged += pending_damaged;
                    pending_damaged = 0;
                    out.state = Some(state);
                    complete_end = frame.end;
                }
                Item::Damaged { claimed } => {
                    pending_damaged += 1;
                    if claimed != Some(Kind::Version) && claimed != Some(Kind::Removal) {
                        damaged_state = true;
                    }
                }
                other => pending.push(other),
            }
        }
    }
    if complete_end == bytes.len() {
        return Ok(None);
    }
    let unparsed = usize::from(parsed_to < bytes.len());
    Ok(Some(Tail {
        complete_end,
        records: pending.len() + pending_damaged + unparsed,
        damaged_state,
    }))
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
