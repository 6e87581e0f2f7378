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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

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
    /// The writes waiting, and the newest ticket released.
    waiting: Mutex<Waiting>,
    /// Wakes the storage loop for a waiting write.
    wake: Notify,
    /// The clock of the state last committed: what the disk holds.
    persisted: Mutex<VClock>,
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

/// Writes waiting for the disk, by ticket: a commit wakes exactly the
/// writes it made durable (one channel per write; a shared "newest ticket
/// done" signal woke every waiting write at every commit, and half of them
/// only to wait again).
#[derive(Default)]
struct Waiting {
    /// The newest ticket whose write is as durable as `sync` promises.
    done: u64,
    /// A commit failed, or the storage loop ended: every wait ends with an
    /// error from then on (the disk no longer matches what the replica
    /// would claim after a restart).
    failed: bool,
    by_ticket: BTreeMap<u64, oneshot::Sender<bool>>,
}

impl Waiting {
    /// Releases every write up to `ticket`; returns how many tickets that
    /// made durable.
    fn release(&mut self, ticket: u64) -> u64 {
        let released = ticket.saturating_sub(self.done);
        self.done = self.done.max(ticket);
        let later = self.by_ticket.split_off(&ticket.saturating_add(1));
        for waiter in std::mem::replace(&mut self.by_ticket, later).into_values() {
            let _ = waiter.send(true);
        }
        released
    }

    fn fail(&mut self) {
        self.failed = true;
        for waiter in std::mem::take(&mut self.by_ticket).into_values() {
            let _ = waiter.send(false);
        }
    }
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
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            persisted: Mutex::new(state.clock.clone()),
            last: Mutex::new(state),
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
        let released = {
            let mut waiting = lock(&self.waiting);
            if waiting.done >= ticket {
                return Ok(());
            }
            if waiting.failed {
                return Err(StorageError::Failed);
            }
            let (tell, released) = oneshot::channel();
            waiting.by_ticket.insert(ticket, tell);
            released
        };
        self.wake.notify_one();
        match released.await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(StorageError::Failed),
        }
    }

    /// Resolves when a write waits for the disk.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Writes a batch taken under the replica lock (nothing if nothing
    /// changed) off the async threads (an fsync blocks), then releases every write up to `ticket`.
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
        if unchanged && ticket <= lock(&self.waiting).done {
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
                let released = lock(&self.waiting).release(ticket);
                metrics::counter!(names::STORAGE_COMMITS).increment(1);
                metrics::counter!(names::STORAGE_WRITES_RELEASED).increment(released);
                Ok(())
            }
            Err(error) => {
                lock(&self.waiting).fail();
                Err(error)
            }
        }
    }

    /// The storage loop has ended (the node stopped): a write still waiting,
    /// or made later, is told its durability is unknown instead of waiting
    /// for ever.
    pub fn close(&self) {
        lock(&self.waiting).fail();
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
