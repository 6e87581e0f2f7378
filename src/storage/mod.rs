//! The optional data directory (`data_dir`): one replica's versions, clock,
//! horizon and identity on disk, and their recovery at start.
//!
//! This module owns the disk format and nothing else: the replica decides
//! what to write ([`crate::core::Replica::changes_since`],
//! [`crate::core::Replica::removals_since`],
//! [`crate::core::Replica::durable_state`]) and the node's storage loop
//! decides when (`crate::node`, group commit).
//!
//! The format is an append-only log of checksummed records with
//! compaction into snapshots ([`format`], [`replay`], [`compact`]). Every
//! commit appends one batch — the versions the disk lacks, the keys the
//! store dropped, and the state that vouches for them — with one `write`,
//! so a process crash loses nothing the OS was handed. When the log
//! outgrows the last snapshot it is sealed, a new one is started, and a
//! thread rewrites the sealed files as a snapshot holding each key once.
//! Recovery replays the newest snapshot and the logs after it. Why a log
//! and not an embedded engine: ARCHITECTURE.md, "Durability".
//!
//! A record that fails its digest is dropped and counted (the replica then
//! claims no clock for what it recovered, see
//! [`crate::core::Replica::adopt_state`]) and the directory is rewritten
//! without it before the replica serves; a damaged state record, or a
//! directory that cannot be read, refuses the start with an error that
//! names the directory. Corrupt data is never served.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::config::SyncPolicy;
use crate::core::{DurableState, Key, Version};

mod compact;
mod format;
mod replay;

use format::FileKind;

/// A log is sealed and compacted once it holds this many bytes, or as many
/// as the last snapshot if that is more (so the directory stays within
/// about twice the data).
const MIN_LOG_BYTES: u64 = 64 << 20;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing the directory failed.
    #[error("data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process has the directory open.
    #[error("data directory {dir} is in use by another process")]
    InUse { dir: PathBuf },
    /// An earlier commit failed, or the storage task ended.
    #[error("the data directory failed earlier; writes are no longer made durable")]
    Failed,
    /// The stored state (identity, clock) is damaged: the replica cannot
    /// know which lives it had, so it refuses to start.
    #[error(
        "data directory {dir}: the stored state is damaged ({why}); move the directory \
         away to start empty and copy from peers"
    )]
    DamagedState { dir: PathBuf, why: String },
}

pub use replay::{Change, Changes, SnapshotSink};

/// What a data directory held besides its snapshot's versions (which
/// [`Disk::open`] hands out as it reads them).
#[derive(Debug, Default)]
pub struct Recovered {
    /// The state of the last complete batch; `None` for a new directory.
    pub state: Option<DurableState>,
    /// What the logs after the snapshot did, per key: applied on top of
    /// the snapshot's versions.
    pub changes: Changes,
    /// Records dropped because their digest or encoding was wrong.
    pub dropped: usize,
}

/// Everything a data directory held, one version per key (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Collected {
    pub state: Option<DurableState>,
    pub versions: hashbrown::HashMap<Key, Version>,
    pub dropped: usize,
}

/// An open data directory.
pub struct Disk {
    dir: PathBuf,
    /// Held locked while the directory is open.
    _lock: File,
    /// The log being appended to, its generation and length.
    active: File,
    generation: u64,
    active_len: u64,
    /// Size of the newest snapshot (0: none).
    snapshot_len: u64,
    /// Files sealed since the newest snapshot, in reading order, with it.
    sealed: Vec<PathBuf>,
    /// The compaction running, if any: its thread, inputs and generation.
    compaction: Option<Compaction>,
    /// The directory held damage: [`Disk::begin_life`] rewrites it.
    rewrite: bool,
    /// One batch, encoded (kept to reuse its allocation).
    buffer: Vec<u8>,
    /// The least log size that is sealed and compacted.
    seal_at: u64,
}

/// A compaction running on its own thread.
struct Compaction {
    thread: JoinHandle<Result<u64, compact::CompactError>>,
    inputs: Vec<PathBuf>,
    generation: u64,
}

impl Disk {
    /// [`Disk::open`], with the snapshot and the changes after it made into
    /// one version per key (tests).
    #[cfg(test)]
    pub fn open_collected(dir: &Path) -> Result<(Disk, Collected), StorageError> {
        struct Collect(hashbrown::HashMap<Key, Version>);
        impl SnapshotSink for Collect {
            fn expect(&mut self, _: usize) {}
            fn version(&mut self, v: Version) {
                self.0.insert(v.key.clone(), v);
            }
        }
        let mut collect = Collect(hashbrown::HashMap::new());
        let (disk, recovered) = Disk::open(dir, &mut collect)?;
        let mut versions = collect.0;
        for (key, change) in recovered.changes {
            match change {
                Some(version) => versions.insert(key, version),
                None => versions.remove(&key),
            };
        }
        let collected = Collected {
            state: recovered.state,
            versions,
            dropped: recovered.dropped,
        };
        Ok((disk, collected))
    }

    /// Opens (creating if need be) `dir`, reads back everything it holds —
    /// the snapshot's versions handed to `snapshot` one by one as they are
    /// decoded, the logs' changes after it returned — and cuts off a batch
    /// a crash left incomplete.
    pub fn open(
        dir: &Path,
        snapshot: &mut dyn SnapshotSink,
    ) -> Result<(Disk, Recovered), StorageError> {
        let io = |source| StorageError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(StorageError::InUse {
                dir: dir.to_path_buf(),
            });
        }
        let (files, leftovers) = replay::list(dir).map_err(io)?;
        for leftover in leftovers {
            std::fs::remove_file(leftover).map_err(io)?;
        }
        let replayed = replay::replay(files, snapshot).map_err(|error| match error {
            replay::ReplayError::Io(source) => io(source),
            replay::ReplayError::DamagedState => StorageError::DamagedState {
                dir: dir.to_path_buf(),
                why: "a state record fails its digest or encoding".into(),
            },
        })?;
        let snapshot_len = match replayed.files.first() {
            Some((FileKind::Snapshot, _, path)) => std::fs::metadata(path).map_err(io)?.len(),
            _ => 0,
        };
        // Append to the newest log, or start one above everything read.
        let (generation, active_path) = match replayed.files.last() {
            Some((FileKind::Log, generation, path)) => (*generation, path.clone()),
            Some((FileKind::Snapshot, generation, _)) => (
                *generation,
                format::path_of(dir, FileKind::Log, *generation),
            ),
            None => (1, format::path_of(dir, FileKind::Log, 1)),
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io)?;
        if let Some(cut) = replayed.torn_at {
            active.set_len(cut).map_err(io)?;
            active.sync_all().map_err(io)?;
        }
        let active_len = active.metadata().map_err(io)?.len();
        compact::sync_dir(dir).map_err(io)?;
        let sealed = replayed
            .files
            .iter()
            .map(|(_, _, path)| path.clone())
            .filter(|path| *path != active_path)
            .collect();
        let disk = Disk {
            dir: dir.to_path_buf(),
            _lock: lock,
            active,
            generation,
            active_len,
            snapshot_len,
            sealed,
            compaction: None,
            rewrite: replayed.damaged > 0,
            buffer: Vec::new(),
            seal_at: MIN_LOG_BYTES,
        };
        let recovered = Recovered {
            state: replayed.state,
            changes: replayed.changes,
            dropped: replayed.damaged,
        };
        Ok((disk, recovered))
    }

    fn io(&self, source: std::io::Error) -> StorageError {
        StorageError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes the state of the life that starts on this directory, fsynced
    /// before it returns (a crash right after cannot start the same life
    /// again). If the directory held damaged records, it is first rewritten
    /// without them, as a snapshot of what was recovered ending with this
    /// state, so that the damage is not met again at the next start.
    pub fn begin_life(&mut self, state: &DurableState) -> Result<(), StorageError> {
        if self.rewrite {
            self.wait_for_compaction();
            let mut inputs = std::mem::take(&mut self.sealed);
            let active = format::path_of(&self.dir, FileKind::Log, self.generation);
            inputs.push(active);
            let generation = self.generation + 1;
            let snapshot_len = compact::compact(
                &self.dir,
                compact::Plan {
                    inputs: &inputs,
                    generation,
                    state: Some(state),
                    skip_damage: true,
                },
            )
            .map_err(|error| self.io(std::io::Error::other(error)))?;
            self.start_log(generation)?;
            self.snapshot_len = snapshot_len;
            self.rewrite = false;
            return Ok(());
        }
        self.commit(&[], &[], state, SyncPolicy::Always)
    }

    /// Seals and compacts logs from `bytes` on (tests: many generations
    /// from little data).
    #[cfg(test)]
    pub fn set_seal_at(&mut self, bytes: u64) {
        self.seal_at = bytes;
    }

    /// Waits for a compaction still running (tests).
    #[cfg(test)]
    pub fn settle(&mut self) {
        self.wait_for_compaction();
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one batch — `versions`, the removal of each key in `removed`
    /// (keys the store dropped: collected tombstones, versions a snapshot's
    /// sender had deleted; none of them is also in `versions`), and `state`
    /// last — with one write, and persists it as `sync` says: `Always`
    /// returns once it is on disk (fsync), the others once the operating
    /// system holds it (a process crash loses nothing). The state may claim
    /// the deletes only because the keys they removed leave in the same
    /// batch.
    pub fn commit(
        &mut self,
        versions: &[Version],
        removed: &[Key],
        state: &DurableState,
        sync: SyncPolicy,
    ) -> Result<(), StorageError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        for version in versions {
            format::append_version(&mut buffer, version);
        }
        for key in removed {
            format::append_removal(&mut buffer, key);
        }
        format::append_state(&mut buffer, state);
        let written = self.active.write_all(&buffer);
        let len = buffer.len() as u64;
        // A large batch (a snapshot arriving) does not keep its memory.
        if buffer.capacity() <= 4 << 20 {
            self.buffer = buffer;
        }
        written.map_err(|e| self.io(e))?;
        self.active_len += len;
        if sync == SyncPolicy::Always {
            self.active.sync_data().map_err(|e| self.io(e))?;
        }
        if self.active_len >= self.seal_at.max(self.snapshot_len) {
            self.seal_and_compact()?;
        }
        Ok(())
    }

    /// Seals the active log (fsynced, so a later log never vouches for a
    /// batch whose versions a power loss took), starts the next one and
    /// compacts what is sealed on a thread of its own — unless a compaction
    /// is still running (the log then grows until it has finished).
    fn seal_and_compact(&mut self) -> Result<(), StorageError> {
        if let Some(running) = &self.compaction {
            if !running.thread.is_finished() {
                return Ok(());
            }
        }
        self.wait_for_compaction();
        self.active.sync_all().map_err(|e| self.io(e))?;
        self.sealed
            .push(format::path_of(&self.dir, FileKind::Log, self.generation));
        let generation = self.generation + 1;
        self.start_log(generation)?;
        let inputs = std::mem::take(&mut self.sealed);
        let dir = self.dir.clone();
        let given = inputs.clone();
        let thread = std::thread::spawn(move || {
            compact::compact(
                &dir,
                compact::Plan {
                    inputs: &given,
                    generation,
                    state: None,
                    skip_damage: false,
                },
            )
        });
        self.compaction = Some(Compaction {
            thread,
            inputs,
            generation,
        });
        Ok(())
    }

    /// Joins a finished or running compaction and takes in its outcome.
    fn wait_for_compaction(&mut self) {
        let Some(running) = self.compaction.take() else {
            return;
        };
        let outcome = running.thread.join();
        // Nothing is sealed while a compaction runs: what is sealed next
        // starts with its output, or with its inputs if it failed.
        let first = match outcome {
            Ok(Ok(snapshot_len)) => {
                self.snapshot_len = snapshot_len;
                vec![format::path_of(
                    &self.dir,
                    FileKind::Snapshot,
                    running.generation,
                )]
            }
            Ok(Err(error)) => {
                tracing::warn!(dir = %self.dir.display(), %error, "compaction of the data directory failed; its files are kept");
                running.inputs
            }
            Err(_) => {
                tracing::warn!(dir = %self.dir.display(), "compaction of the data directory panicked; its files are kept");
                running.inputs
            }
        };
        self.sealed.splice(0..0, first);
    }

    /// Makes log `generation` the active one (created empty; the directory
    /// fsynced so that the new file survives a power loss).
    fn start_log(&mut self, generation: u64) -> Result<(), StorageError> {
        let path = format::path_of(&self.dir, FileKind::Log, generation);
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| self.io(e))?;
        self.active_len = self.active.metadata().map_err(|e| self.io(e))?.len();
        self.generation = generation;
        compact::sync_dir(&self.dir).map_err(|e| self.io(e))
    }

    /// Forces everything committed onto the disk (fsync).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.active.sync_data().map_err(|e| self.io(e))
    }

    /// A handle on the active log for an fsync that does not hold up
    /// commits (`sync = "interval"`): an fsync covers every write of the
    /// file, whichever handle made it. A log sealed meanwhile was fsynced
    /// when it was sealed.
    pub fn sync_handle(&self) -> Result<File, StorageError> {
        self.active.try_clone().map_err(|e| self.io(e))
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // A compaction still running finishes first (its inputs would
        // otherwise be read by the next open while it removes them).
        self.wait_for_compaction();
    }
}

mod persister;
pub use persister::{Batch, Persister};

#[cfg(test)]
mod tests;
