//! The link between a node's write path and its [`Disk`]: write tickets,
//! group commit, and the record of what the disk already holds.
//!
//! A write takes a ticket under the replica lock, right after it changed the
//! replica. The storage loop (`crate::node`) takes, under the same lock, the
//! changes since the clock last persisted together with the newest ticket
//! issued; every write with a ticket up to that one is in the batch. The
//! lock is released before the batch is written and fsynced, and then every
//! such write is released at once: one fsync for all writes that were
//! waiting (group commit).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use super::{Disk, StorageError};
use crate::config::SyncPolicy;
use crate::core::{Dot, DurableState, Key, VClock, Version};
use crate::telemetry::names;

/// One node's storage: the open directory and the tickets of writes
/// waiting for it.
pub struct Persister {
    disk: Arc<Mutex<Disk>>,
    sync: SyncPolicy,
    /// The newest ticket issued (taken under the replica lock).
    issued: AtomicU64,
    /// The newest ticket whose write is as durable as `sync` promises.
    done: watch::Sender<u64>,
    /// Wakes the storage loop for a waiting write.
    wake: Notify,
    /// The clock of the state last committed: what the disk holds.
    persisted: Mutex<VClock>,
    /// A commit failed: writes are refused from then on (the disk no longer
    /// matches what the replica would claim after a restart).
    failed: AtomicBool,
    /// The state last committed (an unchanged one is not written again).
    last: Mutex<DurableState>,
    /// The directory held data at start.
    recovered: bool,
    /// Versions written whose dots the persisted clock does not cover yet
    /// (taken in by a transfer still under way). The replica hands them
    /// out again until its clock covers them; a dot names one version, so
    /// they are not written again (a large snapshot would otherwise be
    /// rewritten at every batch while it arrives).
    written_uncovered: Mutex<HashSet<Dot>>,
}

/// What one commit writes, taken under the replica lock.
pub struct Batch {
    /// The newest write ticket issued when it was taken.
    pub ticket: u64,
    /// The versions the disk lacks.
    pub versions: Vec<Version>,
    /// Keys the store dropped since the last batch, which leave the disk
    /// (see [`crate::core::Replica::removals_since`]).
    pub removed: Vec<Key>,
    /// The state they belong to.
    pub state: DurableState,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Persister {
    /// Storage for `disk`, which holds everything `persisted` covers.
    /// `recovered`: the directory held data (the node then catches up by
    /// delta instead of taking a snapshot at start).
    pub fn new(disk: Disk, sync: SyncPolicy, state: DurableState, recovered: bool) -> Persister {
        Persister {
            disk: Arc::new(Mutex::new(disk)),
            sync,
            issued: AtomicU64::new(0),
            done: watch::channel(0).0,
            wake: Notify::new(),
            persisted: Mutex::new(state.clock.clone()),
            last: Mutex::new(state),
            failed: AtomicBool::new(false),
            recovered,
            written_uncovered: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the directory held data at start.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// A ticket for a write just made (call under the replica lock).
    pub fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The newest ticket issued (read under the replica lock, with the
    /// changes it covers).
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Acquire)
    }

    /// The clock the disk holds (to ask the replica for what it lacks).
    pub fn persisted(&self) -> VClock {
        lock(&self.persisted).clone()
    }

    /// Waits until the write with `ticket` is as durable as the policy
    /// promises (at once with `sync = "never"`); `Err` if storage failed.
    pub async fn wait(&self, ticket: u64) -> Result<(), StorageError> {
        if self.sync == SyncPolicy::Never {
            self.wake.notify_one();
            return Ok(());
        }
        let mut done = self.done.subscribe();
        self.wake.notify_one();
        loop {
            if *done.borrow_and_update() >= ticket {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(StorageError::Failed);
            }
            if done.changed().await.is_err() {
                return Err(StorageError::Failed);
            }
        }
    }

    /// Resolves when a write waits for the disk.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Writes a batch taken under the replica lock (nothing if nothing
    /// changed), then releases every write up to `ticket`. With `always`
    /// off the async threads (an fsync blocks); otherwise here: one
    /// `write` into the OS's cache, cheaper than the hand-off (the fsync
    /// that seals a full log, once per 64 MiB or more, is paid here too).
    pub async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let disk = self.disk.clone();
        let sync = self.sync;
        let Batch {
            ticket,
            mut versions,
            removed,
            state,
        } = batch;
        {
            let written = lock(&self.written_uncovered);
            if !written.is_empty() {
                versions.retain(|v| !written.contains(&v.dot));
            }
        }
        let unchanged = versions.is_empty() && removed.is_empty() && *lock(&self.last) == state;
        if unchanged && ticket <= *self.done.borrow() {
            return Ok(());
        }
        let clock = state.clock.clone();
        let written = state.clone();
        // Only dots the state does not cover need remembering (a transfer
        // still under way); usually there are none.
        let uncovered: Vec<Dot> = versions
            .iter()
            .filter(|v| !clock.covers_dot(&v.dot))
            .map(|v| v.dot.clone())
            .collect();
        let removing = !removed.is_empty();
        let outcome = if sync == SyncPolicy::Always {
            // An fsync blocks: off the async threads.
            tokio::task::spawn_blocking(move || {
                lock(&disk).commit(&versions, &removed, &state, sync)
            })
            .await
            .unwrap_or(Err(StorageError::Failed))
        } else {
            // One write the OS takes into its cache: cheaper here than the
            // hand-off to another thread and back.
            lock(&disk).commit(&versions, &removed, &state, sync)
        };
        if outcome.is_ok() {
            self.note_written(uncovered, removing, &clock);
        }
        match outcome {
            Ok(()) => {
                *lock(&self.persisted) = clock;
                *lock(&self.last) = written;
                let mut released = 0;
                self.done.send_if_modified(|done| {
                    released = ticket.saturating_sub(*done);
                    *done = (*done).max(ticket);
                    released > 0
                });
                metrics::counter!(names::STORAGE_COMMITS).increment(1);
                metrics::counter!(names::STORAGE_WRITES_RELEASED).increment(released);
                Ok(())
            }
            Err(error) => {
                self.failed.store(true, Ordering::Release);
                self.done.send_modify(|_| {});
                Err(error)
            }
        }
    }

    /// The storage loop has ended (the node stopped): a write still waiting,
    /// or made later, is told its durability is unknown instead of waiting
    /// for ever.
    pub fn close(&self) {
        self.failed.store(true, Ordering::Release);
        self.done.send_modify(|_| {});
    }

    /// Records the dots just written that `clock` (the state of the batch)
    /// does not cover, and forgets those it covers. A batch that removed
    /// keys may have removed such a version: then nothing is assumed.
    fn note_written(&self, uncovered: Vec<Dot>, removed_keys: bool, clock: &VClock) {
        let mut written = lock(&self.written_uncovered);
        if removed_keys {
            written.clear();
            return;
        }
        if !written.is_empty() {
            written.retain(|dot| !clock.covers_dot(dot));
        }
        written.extend(uncovered);
    }

    /// fsyncs everything committed so far without holding up the commits
    /// that follow (the periodic fsync of `sync = "interval"`, which runs
    /// beside the storage loop: writes keep being acknowledged once the OS
    /// holds them while it waits for the disk). See [`Disk::sync_handle`].
    pub async fn sync_beside(&self) -> Result<(), StorageError> {
        let disk = self.disk.clone();
        tokio::task::spawn_blocking(move || {
            let handle = lock(&disk).sync_handle()?;
            handle.sync_data().map_err(|source| StorageError::Io {
                dir: lock(&disk).dir().to_path_buf(),
                source,
            })
        })
        .await
        .unwrap_or(Err(StorageError::Failed))
    }

    /// fsyncs everything committed.
    pub async fn sync_now(&self) -> Result<(), StorageError> {
        let disk = self.disk.clone();
        tokio::task::spawn_blocking(move || lock(&disk).sync())
            .await
            .unwrap_or(Err(StorageError::Failed))
    }
}
