//! A node's life cycle: opening (with a data directory: recovery), start-up
//! (join, state transfer or catch-up), the background loops (storage among
//! them), garbage collection, graceful leave.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{lock, Node};
use crate::config::{Config, SyncPolicy};
use crate::core::{Recovering, Refusal, Replica, Version};
use crate::proto::{Request, Response};
use crate::storage::{Batch, Disk, Persister, Recovered, SnapshotSink, StorageError};
use crate::telemetry::names;
use crate::transport::Transport;

/// Join rounds at start before serving with whatever life we have: each
/// refused round moves our incarnation above every life the refusers know.
const JOIN_ATTEMPTS: usize = 4;

/// Rounds over the peers that answered the join before a replica gives up
/// on a state transfer and serves what it has (and catches up by gossip).
const TRANSFER_ROUNDS: usize = 3;

impl Node {
    /// Announces this replica, starts the background tasks, and transfers
    /// state from a live peer; returns when the replica is ready to serve.
    /// A node for `config`: in memory when `data_dir` is unset (a new life
    /// at the wall clock's ms), otherwise recovered from the directory.
    ///
    /// A recovered replica always starts a new life, above both the wall
    /// clock and the stored life: writes of the stored life that never
    /// reached the disk may still have reached peers, so its sequence
    /// numbers are never issued again. The new life is on disk (fsync)
    /// before this returns, so a crash right after start cannot reuse it.
    pub fn open(
        config: Config,
        transport: Arc<dyn Transport>,
        seed: u64,
    ) -> Result<Arc<Node>, StorageError> {
        let wall = super::wall_ms().max(1);
        let Some(dir) = config.data_dir.clone() else {
            return Ok(Node::new(config, transport, wall, seed));
        };
        let started = std::time::Instant::now();
        // The snapshot's versions go straight into a store as they are
        // decoded; the replica around it is built once the state is known
        // (its incarnation depends on it).
        let mut recovering = Recovering::new(&config.socket_address);
        let (mut disk, recovered) = Disk::open(&dir, &mut Sink(&mut recovering))?;
        let replayed = started.elapsed();
        let Recovered {
            state: stored,
            changes,
            dropped,
        } = recovered;
        for version in changes.values().flatten() {
            recovering.note_life(version);
        }
        // Above every life this address had that the disk remembers: the
        // stored state's, and that of any version written in one.
        let own_lives = recovering
            .own_life()
            .into_iter()
            .chain(stored.as_ref().map(|s| s.incarnation))
            .max();
        let incarnation = own_lives.map_or(wall, |stored| wall.max(stored.saturating_add(1)));
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let random_cluster: u64 = rng.random();
        let cluster = stored.as_ref().map_or(random_cluster, |s| s.cluster);
        let mut replica = Replica::new(
            &config.socket_address,
            incarnation,
            &config.view,
            Node::timing(&config),
            0,
        )
        .with_cluster(cluster);
        replica.adopt_recovered(recovering);
        replica.recover_changes(changes);
        let kept = replica.store().live_len() + replica.store().tombstone_len();
        let read = started.elapsed();
        // A dropped record leaves the stored clock claiming a write the
        // disk lacks: keep what is intact but claim nothing for it.
        if dropped > 0 {
            metrics::counter!(names::STORAGE_DROPPED).increment(dropped as u64);
            warn!(
                dir = %dir.display(),
                dropped,
                kept,
                "damaged records dropped from the data directory; the rest is kept and \
                 everything is copied again from peers"
            );
        } else if let Some(state) = &stored {
            replica.adopt_state(state);
        }
        // The disk must hear of every key the store drops from now on.
        replica.track_removed_keys();
        let state = replica.durable_state();
        disk.begin_life(&state)?;
        // Phase times, so that a slow start says where its time went.
        info!(dir = %dir.display(), keys = kept, incarnation,
            previous = stored.map(|s| s.incarnation), sync = ?config.sync,
            replay_ms = replayed.as_millis() as u64,
            read_ms = read.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "data directory opened");
        let storage = Arc::new(Persister::new(disk, config.sync, state, kept > 0));
        Ok(Node::assemble(
            config,
            transport,
            replica,
            rng,
            Some(storage),
        ))
    }

    /// Writes what the disk lacks in one batch (see [`Persister`]); with
    /// `sync_too`, fsyncs afterwards (`sync = "interval"`).
    async fn persist(&self, storage: &Persister, sync_too: bool) {
        let batch = {
            let mut replica = self.replica();
            let persisted = storage.persisted();
            let mut versions = replica.changes_since(&persisted);
            let (removed, rewrite) = replica.removals_since(&persisted);
            versions.extend(rewrite);
            Batch {
                ticket: storage.issued(),
                versions,
                removed,
                state: replica.durable_state(),
            }
        };
        let mut outcome = storage.commit(batch).await;
        if outcome.is_ok() && sync_too {
            outcome = storage.sync_now().await;
        }
        if let Err(error) = outcome {
            tracing::error!(%error, "the data directory failed; writes are refused from now on");
        }
    }

    /// The storage loop: a batch whenever a write waits (group commit: the
    /// writes that arrive during one fsync share the next), and every
    /// `sync_interval_ms` for what came from peers (plus the fsync of
    /// `sync = "interval"`). A last batch when the node stops.
    fn spawn_storage(self: &Arc<Self>) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let cancel = self.shutdown.clone();
        let period = Duration::from_millis(self.config.sync_interval_ms);
        let interval = storage.sync_policy() == SyncPolicy::Interval;
        // At most one periodic fsync at a time; it runs beside this loop,
        // which keeps committing (and acknowledging) while the disk works.
        let syncing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let timer = tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = storage.woken() => false,
                    _ = tick.tick() => true,
                };
                if !timer {
                    // Let the requests already running on this thread take
                    // their tickets first: they join this batch instead of
                    // each waiting for one of their own (fewer writes and
                    // fsyncs for the same load).
                    tokio::task::yield_now().await;
                }
                let Some(node) = weak.upgrade() else { return };
                node.persist(&storage, false).await;
                drop(node);
                // After the batch, so the fsync covers everything acknowledged
                // before this tick.
                if timer && interval && !syncing.swap(true, Ordering::AcqRel) {
                    let (storage, syncing) = (storage.clone(), syncing.clone());
                    tokio::spawn(async move {
                        if let Err(error) = storage.sync_beside().await {
                            tracing::error!(%error, "the periodic fsync of the data directory failed");
                        }
                        syncing.store(false, Ordering::Release);
                    });
                }
            }
            if let Some(node) = weak.upgrade() {
                node.persist(&storage, true).await;
            }
            storage.close();
        });
    }

    pub async fn start(self: &Arc<Self>) {
        self.spawn_loops();
        self.spawn_storage();
        let peers: Vec<String> = {
            let replica = self.replica();
            let mut peers = replica.members.admitted_peers();
            let mut rng = lock(&self.rng);
            rand::seq::SliceRandom::shuffle(&mut peers[..], &mut *rng);
            peers
        };
        let live = self.join(&peers).await;
        if self.storage.as_ref().is_some_and(|s| s.recovered()) {
            // Recovered from a data directory: serve what is on disk at
            // once and catch up by delta (a peer whose horizon has passed
            // our clock — away past the grace period — answers that a
            // snapshot is required, and the pull becomes one).
            self.set_ready();
            info!(address = %self.address, incarnation = self.incarnation(), "ready (recovered)");
            for peer in live {
                self.spawn_pull(peer);
            }
            return;
        }
        // A peer that answered the join is up: keep trying the transfer (a
        // chunk can time out under load) rather than serve without it.
        'transfer: for _ in 0..TRANSFER_ROUNDS {
            for peer in &live {
                match self.pull_from(peer, true).await {
                    Ok(()) => break 'transfer,
                    Err(error) => {
                        warn!(%peer, %error, "state transfer failed; trying another peer")
                    }
                }
            }
        }
        if live.is_empty() && !peers.is_empty() {
            info!("no peer answered; starting empty and will keep trying");
        }
        self.set_ready();
        info!(address = %self.address, incarnation = self.incarnation(), "ready");
        // Other peers may hold writes the snapshot's sender had not seen yet:
        // fetch them now rather than at the next heartbeat.
        let ahead: Vec<String> = {
            let replica = self.replica();
            live.into_iter()
                .filter(|peer| {
                    replica
                        .members
                        .known_clock(peer)
                        .is_some_and(|(_, clock)| !replica.clock().covers(clock))
                })
                .collect()
        };
        for peer in ahead {
            self.spawn_pull(peer);
        }
    }

    /// Announces this life to `peers`; returns those that took it. A peer
    /// that knows a life of this address at least as new refuses, and the
    /// announcement is repeated from above it (a wall clock that stepped
    /// back or stood still must not make two lives share an incarnation).
    async fn join(self: &Arc<Self>, peers: &[String]) -> Vec<String> {
        let mut live = Vec::new();
        for _ in 0..JOIN_ATTEMPTS {
            let hello = self.hello();
            let answers = futures::future::join_all(peers.iter().map(|peer| {
                let request = Request::Join(hello.clone());
                let call = self.transport.call(peer, request, self.timeout());
                async move { (peer.clone(), call.await) }
            }))
            .await;
            live.clear();
            let mut newest_known = None;
            for (peer, answer) in answers {
                match answer.ok().and_then(|answer| self.screen(answer)) {
                    Some(Response::Hello(hello))
                        if hello.address == peer && self.observe(&hello, true).is_ok() =>
                    {
                        live.push(peer);
                    }
                    Some(Response::Refused(Refusal::StaleSender { known })) => {
                        newest_known = newest_known.max(Some(known));
                    }
                    _ => {}
                }
            }
            match newest_known {
                Some(known) => self.outlive(known),
                None => break,
            }
        }
        live
    }

    fn spawn_loops(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let cancel = self.shutdown.clone();
        let every = |period: u64| Duration::from_millis(period);
        spawn_periodic(
            weak.clone(),
            cancel.clone(),
            every(self.config.heartbeat_interval_ms),
            0.0,
            |node| async move { node.heartbeat_tick() },
        );
        spawn_periodic(
            weak.clone(),
            cancel.clone(),
            every(self.config.gossip_interval_ms),
            0.1,
            |node| async move { node.gossip_round().await },
        );
        spawn_periodic(
            weak,
            cancel,
            every(self.config.gc_interval_ms),
            0.0,
            |node| async move {
                node.collect_garbage();
            },
        );
    }

    pub fn collect_garbage(&self) -> usize {
        let now = self.now_ms();
        let collected = self.replica().collect_garbage(now);
        if collected > 0 {
            debug!(collected, "tombstones collected");
            metrics::counter!(names::TOMBSTONES_COLLECTED).increment(collected as u64);
        }
        collected
    }

    /// Graceful leave: refuse new client requests, hand every write a peer
    /// may lack to the live peers, tell them we are leaving, stop the tasks.
    pub async fn leave(self: &Arc<Self>) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify();
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let peers = self.replica().members.live_peers();
        let handoff = futures::future::join_all(
            peers
                .iter()
                .map(|peer| async move { (peer, self.push_to(peer).await) }),
        );
        match tokio::time::timeout(grace.mul_f32(0.7), handoff).await {
            Ok(results) => {
                let delivered = results.iter().filter(|(_, r)| r.is_ok()).count();
                info!(delivered, peers = results.len(), "hand-off before leaving");
            }
            Err(_) => warn!("hand-off timed out"),
        }
        let incarnation = self.incarnation();
        let leave = futures::future::join_all(peers.iter().map(|peer| {
            let request = Request::Leave {
                address: self.address.clone(),
                incarnation,
                process: Some(self.process),
            };
            self.transport.call(peer, request, grace.mul_f32(0.2))
        }));
        let _ = tokio::time::timeout(grace.mul_f32(0.25), leave).await;
        if let Some(storage) = &self.storage {
            // What came from peers since the last batch, before the process ends.
            self.persist(storage, true).await;
        }
        self.shutdown.cancel();
    }

    /// Stops the background tasks without telling anyone (a crash, in tests).
    pub fn halt(&self) {
        self.shutdown.cancel();
    }
}

/// Runs `step` every `period` (± `jitter` of it) until cancelled or the node
/// is gone. A slow step delays the next one rather than piling up.
fn spawn_periodic<F, Fut>(
    node: Weak<Node>,
    cancel: CancellationToken,
    period: Duration,
    jitter: f64,
    step: F,
) where
    F: Fn(Arc<Node>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let wait = {
                let Some(node) = node.upgrade() else { return };
                let factor = if jitter > 0.0 {
                    lock(&node.rng).random_range(1.0 - jitter..=1.0 + jitter)
                } else {
                    1.0
                };
                period.mul_f64(factor)
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let Some(node) = node.upgrade() else { return };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = step(node) => {}
            }
        }
    });
}

/// A recovery's snapshot versions, into the store being filled.
struct Sink<'a>(&'a mut Recovering);

impl SnapshotSink for Sink<'_> {
    fn expect(&mut self, versions: usize) {
        // Capped: a sizing hint from file sizes, never a count.
        self.0.reserve(versions.min(1 << 24));
    }

    fn version(&mut self, version: Version) {
        self.0.take(version);
    }
}
