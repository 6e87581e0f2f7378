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

use fjall::{
    Config as EngineConfig, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode,
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

/// What a data directory held.
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
}

impl Disk {
    /// Opens (creating if need be) `dir` and reads back what it holds.
    pub fn open(dir: &Path) -> Result<(Disk, Recovered), StorageError> {
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
        let mut recovered = Recovered::default();
        let mut keys = 0;
        for entry in versions.iter() {
            let (key, record) = entry.map_err(engine)?;
            keys += 1;
            match decode::<Version>(&record) {
                Some(version) if version.key.as_bytes() == &key[..] => {
                    recovered.versions.push(version)
                }
                _ => recovered.dropped += 1,
            }
        }
        if let Some(record) = meta.get(STATE_KEY).map_err(engine)? {
            let state = decode::<DurableState>(&record).ok_or(StorageError::DamagedState {
                dir: dir.to_path_buf(),
                why: "digest or encoding wrong".into(),
            })?;
            recovered.state = Some(state);
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            keyspace,
            versions,
            meta,
            keys,
        };
        Ok((disk, recovered))
    }

    fn engine(&self, source: fjall::Error) -> StorageError {
        StorageError::Engine {
            dir: self.dir.clone(),
            source,
        }
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
