//! The optional data directory (`data_dir`): one replica's versions, clock,
//! horizon and identity on disk, in an embedded [fjall] keyspace, and their
//! recovery at start.
//!
//! This module owns the disk format and nothing else: the replica decides
//! what to write ([`crate::core::Replica::changes_since`],
//! [`crate::core::Replica::durable_state`]) and the node's storage loop
//! decides when (`crate::node`, group commit). Layout:
//!
//! * partition `versions`: key text → record of one [`Version`];
//! * partition `meta`: `state` → record of the [`DurableState`].
//!
//! A record is an 8-byte digest (the first bytes of SHA-256 of the rest)
//! followed by the MessagePack encoding. fjall checksums its journal and
//! drops a torn last batch; the digest also catches a flipped byte anywhere
//! else that the engine would hand back. A version record that fails is
//! dropped and counted (the replica then claims no clock for what it
//! recovered, see [`crate::core::Replica::recover`]); a damaged state, or an
//! engine that cannot open the directory, refuses the start with an error
//! that names the directory. Corrupt data is never served.
//!
//! Every commit is one fjall batch, atomic across both partitions: the
//! state on disk never covers a version the disk lacks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use fjall::{
    Config as EngineConfig, Keyspace, KvPair, PartitionCreateOptions, PartitionHandle, PersistMode,
    Slice,
};
use sha2::{Digest, Sha256};

use crate::config::SyncPolicy;
use crate::core::{DurableState, Key, Version};

const STATE_KEY: &[u8] = b"state";
const DIGEST_BYTES: usize = 8;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed (I/O, or a journal damaged before its last batch).
    #[error("data directory {dir}: {source}")]
    Engine {
        dir: PathBuf,
        #[source]
        source: fjall::Error,
    },
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

/// What a data directory held, read whole by [`Disk::open`] (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recovered {
    /// The stored state; `None` for a new directory.
    pub state: Option<DurableState>,
    /// Every intact version.
    pub versions: Vec<Version>,
    /// Version records dropped because their digest or encoding was wrong.
    pub dropped: usize,
}

/// An open data directory.
pub struct Disk {
    dir: PathBuf,
    keyspace: Keyspace,
    versions: PartitionHandle,
    meta: PartitionHandle,
    /// Keys on disk (kept here: counting fjall's partition costs a scan).
    keys: usize,
    /// Keys whose records were dropped at open (removed by
    /// [`Disk::begin_life`]).
    damaged: Vec<Slice>,
}

/// The most versions [`Disk::estimated_versions`] claims (a store that
/// really holds more grows as usual past it).
pub const MAX_PRESIZE: usize = 1 << 24;

impl Disk {
    /// Opens (creating if need be) `dir` and reads back everything it holds,
    /// for tests: the node reads the versions straight into its store
    /// instead (see [`Disk::open_state`]).
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<(Disk, Recovered), StorageError> {
        let (mut disk, state) = Disk::open_state(dir)?;
        let mut versions = Vec::new();
        let dropped = disk.read_versions(|version| versions.push(version))?;
        let recovered = Recovered {
            state,
            versions,
            dropped,
        };
        Ok((disk, recovered))
    }

    /// Opens (creating if need be) `dir` and reads the stored state; the
    /// versions come next, from [`Disk::read_versions`] (which must be
    /// called before anything is committed: it counts the keys on disk).
    pub fn open_state(dir: &Path) -> Result<(Disk, Option<DurableState>), StorageError> {
        let engine = |source| StorageError::Engine {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| engine(e.into()))?;
        // Commits are persisted by this module as the sync policy says, not
        // by fjall on its own.
        let keyspace = EngineConfig::new(dir)
            .manual_journal_persist(true)
            .open()
            .map_err(engine)?;
        let versions = keyspace
            .open_partition("versions", PartitionCreateOptions::default())
            .map_err(engine)?;
        let meta = keyspace
            .open_partition("meta", PartitionCreateOptions::default())
            .map_err(engine)?;
        let state = match meta.get(STATE_KEY).map_err(engine)? {
            Some(record) => Some(decode::<DurableState>(&record).ok_or(
                StorageError::DamagedState {
                    dir: dir.to_path_buf(),
                    why: "digest or encoding wrong".into(),
                },
            )?),
            None => None,
        };
        let disk = Disk {
            dir: dir.to_path_buf(),
            keyspace,
            versions,
            meta,
            keys: 0,
            damaged: Vec::new(),
        };
        Ok((disk, state))
    }

    /// About how many version records the disk holds (the engine's
    /// estimate, without a scan), capped at [`MAX_PRESIZE`] so that a
    /// damaged estimate cannot make the caller reserve absurd memory: a
    /// sizing hint, never a count.
    pub fn estimated_versions(&self) -> usize {
        self.versions.approximate_len().min(MAX_PRESIZE)
    }

    /// Reads every version record back and hands each intact one to `each`,
    /// on this thread; returns how many were dropped as damaged (a wrong
    /// digest or encoding, or a version of another key). Dropped records
    /// stay on disk until [`Disk::begin_life`] removes them.
    ///
    /// A pipeline, because at a million keys every stage costs seconds on
    /// one core: one thread walks the engine's records and hands chunks of
    /// them to one decoding thread per core (digest, MessagePack), which
    /// hand the versions back to `each` (the store's inserts) while the
    /// next chunks are read and decoded. The chunks in flight are bounded,
    /// so memory stays about what `each` keeps.
    pub fn read_versions(&mut self, mut each: impl FnMut(Version)) -> Result<usize, StorageError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let partition = &self.versions;
        let (keys, damaged, failure) = std::thread::scope(|scope| {
            let (to_decode, raw) = sync_channel::<Vec<KvPair>>(workers * 2);
            let raw = Arc::new(Mutex::new(raw));
            let (to_apply, decoded) = sync_channel::<Decoded>(workers * 2);
            let reader = scope.spawn(move || {
                let mut keys = 0;
                let mut chunk = Vec::with_capacity(DECODE_CHUNK);
                for entry in partition.iter() {
                    match entry {
                        Ok(record) => chunk.push(record),
                        Err(error) => return (keys, Some(error)),
                    }
                    keys += 1;
                    if chunk.len() == DECODE_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(DECODE_CHUNK));
                        if to_decode.send(full).is_err() {
                            // Every decoder has stopped: the caller is gone.
                            return (keys, None);
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = to_decode.send(chunk);
                }
                (keys, None)
            });
            for _ in 0..workers {
                // Each decoder owns a handle on the raw chunks, so that if
                // they all stop, the reader's next send fails instead of
                // blocking.
                let (raw, to_apply) = (raw.clone(), to_apply.clone());
                scope.spawn(move || loop {
                    let next = raw
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .recv();
                    let Ok(chunk) = next else { return };
                    if to_apply.send(decode_chunk(chunk)).is_err() {
                        return;
                    }
                });
            }
            drop((raw, to_apply));
            let mut damaged = Vec::new();
            for chunk in decoded {
                chunk.versions.into_iter().for_each(&mut each);
                damaged.extend(chunk.damaged);
            }
            let (keys, failure) = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (keys, damaged, failure)
        });
        if let Some(error) = failure {
            return Err(self.engine(error));
        }
        self.keys = keys;
        self.damaged = damaged;
        Ok(self.damaged.len())
    }

    fn engine(&self, source: fjall::Error) -> StorageError {
        StorageError::Engine {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Writes the state of the life that starts on this directory, and
    /// removes the records dropped as damaged at open, in one batch, fsynced
    /// before it returns (a crash right after cannot start the same life
    /// again). The replica then holds exactly the keys on disk: every
    /// intact record is one key's version, so nothing else is read or
    /// written again.
    pub fn begin_life(&mut self, state: &DurableState) -> Result<(), StorageError> {
        let mut batch = self.keyspace.batch();
        let damaged = std::mem::take(&mut self.damaged);
        let removed = damaged.len();
        for key in damaged {
            batch.remove(&self.versions, key);
        }
        batch.insert(&self.meta, STATE_KEY, encode(state));
        batch.commit().map_err(|e| self.engine(e))?;
        self.keys -= removed;
        self.sync()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keys on disk, tombstones included.
    pub fn key_count(&self) -> usize {
        self.keys
    }

    /// Writes `versions` and `state` in one atomic batch and persists it as
    /// `sync` says: `Always` returns once it is on disk (fsync), the others
    /// once the operating system holds it (a process crash loses nothing).
    ///
    /// `store_keys` is how many keys the store held when the batch was
    /// taken. If the disk would then hold more, the store dropped keys since
    /// the last commit (collected tombstones, versions a snapshot's sender
    /// had deleted); the state is then *not* written, because it may claim
    /// the deletes while the disk still holds what they deleted, and
    /// `Ok(false)` asks for the store's keys: with `held` given, every key
    /// outside it leaves the disk in the same batch.
    pub fn commit(
        &mut self,
        versions: &[Version],
        state: &DurableState,
        store_keys: usize,
        held: Option<&HashSet<Key>>,
        sync: SyncPolicy,
    ) -> Result<bool, StorageError> {
        let mut batch = self.keyspace.batch();
        let mut keys = self.keys;
        for version in versions {
            let key = version.key.as_bytes();
            if !self
                .versions
                .contains_key(key)
                .map_err(|e| self.engine(e))?
            {
                keys += 1;
            }
            batch.insert(&self.versions, key, encode(version));
        }
        if let Some(held) = held {
            for entry in self.versions.keys() {
                let key = entry.map_err(|e| self.engine(e))?;
                if std::str::from_utf8(&key).map_or(true, |k| !held.contains(k)) {
                    batch.remove(&self.versions, key);
                    keys -= 1;
                }
            }
        }
        let complete = keys <= store_keys;
        if complete {
            batch.insert(&self.meta, STATE_KEY, encode(state));
        }
        batch.commit().map_err(|e| self.engine(e))?;
        self.keys = keys;
        let mode = match sync {
            SyncPolicy::Always => PersistMode::SyncAll,
            SyncPolicy::Interval | SyncPolicy::Never => PersistMode::Buffer,
        };
        self.keyspace.persist(mode).map_err(|e| self.engine(e))?;
        Ok(complete)
    }

    /// Forces everything committed onto the disk (fsync).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.engine(e))
    }
}

/// Records handed to a decoding thread at a time.
const DECODE_CHUNK: usize = 4096;

/// One chunk of records, decoded.
struct Decoded {
    versions: Vec<Version>,
    /// Keys whose record failed its digest or encoding, or named another key.
    damaged: Vec<Slice>,
}

fn decode_chunk(chunk: Vec<KvPair>) -> Decoded {
    let mut out = Decoded {
        versions: Vec::with_capacity(chunk.len()),
        damaged: Vec::new(),
    };
    for (key, record) in chunk {
        match decode::<Version>(&record) {
            Some(version) if version.key.as_bytes() == &key[..] => out.versions.push(version),
            _ => out.damaged.push(key),
        }
    }
    out
}

/// fsyncs the journal the engine is writing in `dir`, through a file handle
/// of its own: an fsync covers every write of the file, whichever handle
/// made it, and the engine's own persist holds its journal lock while it
/// waits for the disk (tens to hundreds of milliseconds on a busy machine),
/// so every commit — and every write waiting for one — would wait too.
/// Journals the engine sealed were fsynced when it sealed them (fjall 2
/// rotates with `SyncAll`); the one it writes is the highest-numbered file
/// in `journals/`. Returns the file synced, `None` if there is none (the
/// caller then persists through the engine).
pub fn sync_journal(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir.join("journals"))? {
        let entry = entry?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(n, _)| id > *n) {
            newest = Some((id, entry.path()));
        }
    }
    let Some((_, path)) = newest else {
        return Ok(None);
    };
    std::fs::File::open(&path)?.sync_all()?;
    Ok(Some(path))
}

fn digest(payload: &[u8]) -> [u8; DIGEST_BYTES] {
    let full = Sha256::digest(payload);
    let mut out = [0; DIGEST_BYTES];
    out.copy_from_slice(&full[..DIGEST_BYTES]);
    out
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let payload = rmp_serde::to_vec(value).expect("versions and states always encode");
    let mut record = digest(&payload).to_vec();
    record.extend_from_slice(&payload);
    record
}

/// The value of a record, or `None` if its digest or encoding is wrong.
fn decode<T: serde::de::DeserializeOwned>(record: &[u8]) -> Option<T> {
    if record.len() < DIGEST_BYTES {
        return None;
    }
    let (stored, payload) = record.split_at(DIGEST_BYTES);
    if stored != digest(payload) {
        return None;
    }
    rmp_serde::from_slice(payload).ok()
}

mod persister;
pub use persister::{Batch, Persister};

#[cfg(test)]
mod tests;
