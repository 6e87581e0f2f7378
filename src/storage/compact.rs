//! Compaction: the files of older generations rewritten as one snapshot
//! holding each key's newest record once, so the directory stays about the
//! size of the data instead of growing with every write.
//!
//! It reads only sealed files (the storage loop appends to a newer log
//! meanwhile), so it needs no lock and runs on a thread of its own. The
//! output is written as `snap-G.partial`, fsynced, renamed to `snap-G` and
//! the directory fsynced; only then are the inputs removed. A crash at any
//! point leaves either the inputs or the snapshot (the reader takes the
//! newest snapshot and ignores what it replaced).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, FileKind, Kind};
use crate::core::DurableState;

/// Where one record lies.
#[derive(Clone, Copy)]
struct Location {
    file: usize,
    start: u64,
    len: usize,
}

/// Why a compaction stopped (the inputs are then left as they are).
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a damaged record in {0}")]
    Damaged(PathBuf),
    #[error("no state record in the files compacted")]
    NoState,
}

/// How a compaction treats what it finds.
pub struct Plan<'a> {
    /// The files, in reading order (a snapshot first, then logs).
    pub inputs: &'a [PathBuf],
    /// The generation of the snapshot written.
    pub generation: u64,
    /// The state the snapshot ends with; `None`: that of the last batch
    /// read. Given when the inputs held damage: the caller's state then
    /// claims no clock for what was read.
    pub state: Option<&'a DurableState>,
    /// Skip damaged records (the caller already dropped them) instead of
    /// stopping.
    pub skip_damage: bool,
}

/// Writes the snapshot and removes the inputs; returns its size in bytes.
pub fn compact(dir: &Path, plan: Plan<'_>) -> Result<u64, CompactError> {
    let mut newest: HashMap<Box<str>, Location> = HashMap::new();
    let mut state: Option<Vec<u8>> = None;
    let mut buffer = Vec::with_capacity(format::READ_CHUNK);
    for (file, path) in plan.inputs.iter().enumerate() {
        // A snapshot's versions count as read (it was complete when it was
        // named, as the reader takes it); a log's once their batch's state
        // is read.
        let snapshot = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(format::parse_name)
            .is_some_and(|(kind, _)| kind == FileKind::Snapshot);
        let mut pending: Vec<(Box<str>, Option<Location>)> = Vec::new();
        let damaged = || CompactError::Damaged(path.clone());
        format::read_framed(path, &mut buffer, |bytes, frames, base| {
            for frame in frames {
                let record = &bytes[frame.start..frame.end];
                if !format::intact(record) {
                    if plan.skip_damage {
                        continue;
                    }
                    return Err(damaged());
                }
                let body = format::body(record);
                let location = Location {
                    file,
                    start: base + frame.start as u64,
                    len: record.len(),
                };
                match format::kind_of(record) {
                    Some(Kind::Version) => match format::version_key(body) {
                        Some(key) if snapshot => {
                            newest.insert(key.into(), location);
                        }
                        Some(key) => pending.push((key.into(), Some(location))),
                        None if plan.skip_damage => {}
                        None => return Err(damaged()),
                    },
                    Some(Kind::Removal) => match std::str::from_utf8(body) {
                        Ok(key) => pending.push((key.into(), None)),
                        Err(_) if plan.skip_damage => {}
                        Err(_) => return Err(damaged()),
                    },
                    Some(Kind::State) => {
                        for (key, location) in pending.drain(..) {
                            match location {
                                Some(location) => newest.insert(key, location),
                                None => newest.remove(&key),
                            };
                        }
                        state = Some(record.to_vec());
                    }
                    None if plan.skip_damage => {}
                    None => return Err(damaged()),
                }
            }
            Ok(())
        })?;
        // Records after the last state: a batch cut short, never vouched for.
    }
    let state = match plan.state {
        Some(given) => {
            let mut record = Vec::new();
            format::append_state(&mut record, given);
            record
        }
        None => state.ok_or(CompactError::NoState)?,
    };

    let partial = format::partial_path(dir, plan.generation);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
    let mut locations: Vec<Location> = newest.into_values().collect();
    locations.sort_unstable_by_key(|l| (l.file, l.start));
    let mut written = 0u64;
    let mut record = Vec::new();
    let mut open: Option<(usize, File)> = None;
    for location in locations {
        if open.as_ref().is_none_or(|(file, _)| *file != location.file) {
            open = Some((location.file, File::open(&plan.inputs[location.file])?));
        }
        let (_, file) = open.as_ref().expect("opened above");
        record.resize(location.len, 0);
        file.read_exact_at(&mut record, location.start)?;
        out.write_all(&record)?;
        written += record.len() as u64;
    }
    out.write_all(&state)?;
    written += state.len() as u64;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(
        &partial,
        format::path_of(dir, FileKind::Snapshot, plan.generation),
    )?;
    sync_dir(dir)?;
    // The snapshot stands now; an input that cannot be removed here is
    // removed at the next start (the reader ignores what a snapshot
    // replaced).
    for input in plan.inputs {
        if let Err(error) = std::fs::remove_file(input) {
            tracing::warn!(file = %input.display(), %error, "a compacted file could not be removed");
        }
    }
    let _ = sync_dir(dir);
    Ok(written)
}

/// fsyncs a directory, so that files created, renamed or removed in it stay
/// so after a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
