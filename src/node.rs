//! The I/O shell around one [`Replica`]: timers, peer choice, message moving.
//!
//! A [`Node`] owns the replica behind a `std::sync::Mutex` that is only ever
//! held for a short synchronous step — never across an `.await`. Every
//! exchange is: lock, compute what to send, unlock, send (bounded by a
//! timeout), lock, apply the answer, unlock.
//!
//! Background tasks (started by [`Node::start`]):
//! * **heartbeats** — every `heartbeat_interval` to each peer in the view, and
//!   every `probe_interval` to admitted peers out of it; each carries a digest
//!   (incarnation, clock, admissions). A peer whose clock is ahead of ours is
//!   pulled from at once. The failure detector advances on the same tick.
//! * **gossip** — every `gossip_interval` (±10 % jitter) a random peer from the
//!   view: pull what we lack, then push what it lacks (push-pull anti-entropy).
//! * **gc** — tombstone collection below the stability frontier.
//!
//! Client requests whose causal metadata is ahead of this replica trigger an
//! immediate pull and wait on a change notification for at most
//! `causal_wait`.
//!
//! Randomness comes from one seeded RNG and time from tokio's clock, so under
//! a paused clock with the in-memory transport a seed replays a run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::core::membership::LivenessChange;
use crate::core::{
    ApplyReport, Covers, Heard, JsonText, Key, Liveness, ReadOutcome, Replica, Timing, VClock,
    ViewChange, WriteError, WriteOutcome,
};
use crate::proto::{Hello, Request, Response};
use crate::telemetry::names;
use crate::transport::{Transport, TransportError};

/// Upper bound on chunks in one transfer (with the default 1 MiB chunks this
/// is far beyond any store this process can hold).
const MAX_CHUNKS_PER_TRANSFER: usize = 100_000;

/// Why a client request could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The missing writes did not arrive within `causal_wait`.
    CausalTimeout,
    /// The replica is shutting down.
    Draining,
    /// This replica's life has no counter left for a new write (see
    /// [`crate::core::WriteError::CountersExhausted`]).
    CountersExhausted,
}

/// A snapshot of one member for operators.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberInfo {
    pub address: String,
    pub state: &'static str,
    pub admitted: bool,
    pub in_view: bool,
    pub incarnation: Option<u64>,
    pub last_heard_ms_ago: Option<u64>,
    pub is_self: bool,
}

pub struct Node {
    config: Arc<Config>,
    address: String,
    incarnation: u64,
    replica: Mutex<Replica>,
    transport: Arc<dyn Transport>,
    rng: Mutex<StdRng>,
    epoch: Instant,
    /// Bumped whenever the clock grows or readiness changes.
    changes: watch::Sender<u64>,
    ready: AtomicBool,
    draining: AtomicBool,
    pulls_in_flight: Mutex<HashSet<String>>,
    heartbeats_in_flight: Mutex<HashSet<String>>,
    last_probe_ms: Mutex<HashMap<String, u64>>,
    /// When the last pull from each peer completed.
    last_pull_ms: Mutex<HashMap<String, u64>>,
    shutdown: CancellationToken,
}

/// Removes a peer from an in-flight set when the exchange ends, however it ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    peer: String,
}

impl<'a> InFlight<'a> {
    fn claim(set: &'a Mutex<HashSet<String>>, peer: &str) -> Option<Self> {
        lock(set).insert(peer.to_string()).then(|| InFlight {
            set,
            peer: peer.to_string(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.peer);
    }
}

/// Locks a mutex, recovering from poisoning: every critical section leaves the
/// data consistent before any step that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Node {
    /// A node for `config`, in life `incarnation`, talking through `transport`.
    pub fn new(
        config: Config,
        transport: Arc<dyn Transport>,
        incarnation: u64,
        seed: u64,
    ) -> Arc<Node> {
        let timing = Timing {
            suspect_after_ms: config.suspect_after_ms,
            dead_after_ms: config.dead_after_ms,
            dead_member_grace_ms: config.dead_member_grace_ms,
        };
        let replica = Replica::new(&config.socket_address, incarnation, &config.view, timing, 0);
        let (changes, _) = watch::channel(0);
        Arc::new(Node {
            address: config.socket_address.clone(),
            config: Arc::new(config),
            incarnation,
            replica: Mutex::new(replica),
            transport,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            epoch: Instant::now(),
            changes,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            pulls_in_flight: Mutex::new(HashSet::new()),
            heartbeats_in_flight: Mutex::new(HashSet::new()),
            last_probe_ms: Mutex::new(HashMap::new()),
            last_pull_ms: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.replica)
    }

    /// Runs `f` on the replica under the lock (tests and metrics).
    pub fn inspect<T>(&self, f: impl FnOnce(&Replica) -> T) -> T {
        f(&self.replica())
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.notify();
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.rpc_timeout_ms)
    }

    /// Heartbeats time out sooner than other requests so that one lost
    /// message does not hide a live peer for long.
    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(
            self.config
                .rpc_timeout_ms
                .min(self.config.dead_after_ms / 4)
                .max(1),
        )
    }

    fn hello(&self) -> Hello {
        let replica = self.replica();
        Hello {
            address: self.address.clone(),
            incarnation: self.incarnation,
            clock: replica.clock().clone(),
            admin: replica.members.admin_records(),
        }
    }

    // ----------------------------------------------------------------------
    // Client operations
    // ----------------------------------------------------------------------

    /// Reads `key` for a client that has seen `metadata`.
    pub async fn read(
        self: &Arc<Self>,
        key: &str,
        metadata: &VClock,
    ) -> Result<ReadOutcome, Unavailable> {
        self.when_caught_up(metadata, |replica| replica.read(key, metadata))
            .await
    }

    /// Writes (`Some`) or deletes (`None`) `key` for a client that has seen `metadata`.
    pub async fn write(
        self: &Arc<Self>,
        key: &str,
        value: Option<JsonText>,
        metadata: &VClock,
    ) -> Result<WriteOutcome, Unavailable> {
        self.when_caught_up(metadata, move |replica| {
            match replica.write(key, value.clone(), metadata) {
                Ok(outcome) => Ok(Ok(outcome)),
                Err(WriteError::NotYet) => Err(crate::core::NotYet),
                Err(WriteError::CountersExhausted) => Ok(Err(Unavailable::CountersExhausted)),
            }
        })
        .await?
    }

    /// Runs `op` once this replica is ready and covers `metadata`; until then
    /// pulls the missing writes and waits, at most `causal_wait`.
    async fn when_caught_up<T>(
        self: &Arc<Self>,
        metadata: &VClock,
        mut op: impl FnMut(&mut Replica) -> Result<T, crate::core::NotYet>,
    ) -> Result<T, Unavailable> {
        let deadline = Instant::now() + Duration::from_millis(self.config.causal_wait_ms);
        let mut changes = self.changes.subscribe();
        let mut waited = false;
        loop {
            if self.is_draining() {
                return Err(Unavailable::Draining);
            }
            if self.is_ready() {
                if let Ok(outcome) = op(&mut self.replica()) {
                    if waited {
                        metrics::counter!(names::CAUSAL_WAITS_SATISFIED).increment(1);
                    }
                    return Ok(outcome);
                }
            }
            if !waited {
                metrics::counter!(names::CAUSAL_WAITS).increment(1);
                waited = true;
            }
            self.pull_for(metadata);
            let retry = (Instant::now() + Duration::from_millis(200)).min(deadline);
            match tokio::time::timeout_at(retry, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Unavailable::CausalTimeout),
                Err(_) if Instant::now() >= deadline => {
                    metrics::counter!(names::CAUSAL_UNAVAILABLE).increment(1);
                    return Err(Unavailable::CausalTimeout);
                }
                Err(_) => continue,
            }
        }
    }

    /// Starts pulls from peers that can supply `metadata` (or from every live
    /// peer when none is known to).
    fn pull_for(self: &Arc<Self>, metadata: &VClock) {
        let candidates: Vec<String> = {
            let replica = self.replica();
            let peers = replica.members.live_peers();
            let covering: Vec<String> = peers
                .iter()
                .filter(|p| {
                    replica
                        .members
                        .member(p)
                        .is_some_and(|m| m.known_clock.covers(metadata))
                })
                .cloned()
                .collect();
            if covering.is_empty() {
                peers
            } else {
                covering
            }
        };
        for peer in candidates {
            self.spawn_pull(peer);
        }
    }

    fn spawn_pull(self: &Arc<Self>, peer: String) {
        if lock(&self.pulls_in_flight).contains(&peer) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(error) = node.pull_from(&peer, false).await {
                debug!(%peer, %error, "pull failed");
            }
        });
    }

    // ----------------------------------------------------------------------
    // View operations
    // ----------------------------------------------------------------------

    pub fn view(&self) -> Vec<String> {
        self.replica().members.view()
    }

    pub fn view_add(self: &Arc<Self>, address: &str) -> ViewChange {
        let now = self.now_ms();
        let change = self.replica().members.admin_add(address, now);
        if change == ViewChange::Added {
            info!(member = address, "view change: added by request");
            metrics::counter!(names::VIEW_CHANGES, "change" => "added").increment(1);
            self.spawn_heartbeats_to_all();
        }
        change
    }

    pub fn view_remove(self: &Arc<Self>, address: &str) -> ViewChange {
        let change = self.replica().members.admin_remove(address);
        if change == ViewChange::Deleted {
            info!(member = address, "view change: deleted by request");
            metrics::counter!(names::VIEW_CHANGES, "change" => "deleted").increment(1);
            self.spawn_heartbeats_to_all();
        }
        change
    }

    /// Every known member with its state, for operators.
    pub fn members(&self) -> Vec<MemberInfo> {
        let now = self.now_ms();
        let replica = self.replica();
        let view: HashSet<String> = replica.members.view().into_iter().collect();
        let mut out = vec![MemberInfo {
            address: self.address.clone(),
            state: "alive",
            admitted: true,
            in_view: true,
            incarnation: Some(self.incarnation),
            last_heard_ms_ago: Some(0),
            is_self: true,
        }];
        out.extend(
            replica
                .members
                .members()
                .filter(|m| m.address != self.address)
                .map(|m| MemberInfo {
                    address: m.address.clone(),
                    state: m.liveness.as_str(),
                    admitted: m.admission.admitted,
                    in_view: view.contains(&m.address),
                    incarnation: m.incarnation,
                    last_heard_ms_ago: m.incarnation.map(|_| now.saturating_sub(m.last_heard_ms)),
                    is_self: false,
                }),
        );
        out
    }

    // ----------------------------------------------------------------------
    // Internal requests from peers
    // ----------------------------------------------------------------------

    /// Answers one replica-to-replica request. Synchronous: it only touches
    /// the replica under the lock and may spawn follow-up work.
    pub fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Heartbeat(hello) => {
                self.observe(&hello);
                Response::Hello(self.hello())
            }
            Request::Join(hello) => {
                let now = self.now_ms();
                let change = self.replica().members.admin_add(&hello.address, now);
                if change == ViewChange::Added {
                    info!(member = %hello.address, "view change: replica announced itself");
                    metrics::counter!(names::VIEW_CHANGES, "change" => "joined").increment(1);
                }
                self.observe(&hello);
                if change == ViewChange::Added {
                    self.spawn_heartbeats_to_all();
                }
                Response::Hello(self.hello())
            }
            Request::Pull {
                address,
                incarnation,
                clock,
                snapshot,
                cursor,
            } => {
                let now = self.now_ms();
                let mut replica = self.replica();
                if replica.members.heard_from(&address, incarnation, now) != Heard::Stale
                    && !snapshot
                {
                    replica.members.record_clock(&address, &clock);
                }
                let chunk = replica.pull_chunk(
                    &clock,
                    snapshot,
                    cursor.as_ref(),
                    self.config.max_message_bytes,
                );
                drop(replica);
                metrics::counter!(names::DELTA_VERSIONS_SENT).increment(chunk.entries.len() as u64);
                Response::Chunk(chunk)
            }
            Request::Push {
                address,
                incarnation,
                entries,
                covers,
            } => {
                let now = self.now_ms();
                let received = entries.len() as u64;
                let mut replica = self.replica();
                replica.members.heard_from(&address, incarnation, now);
                let applied = replica.apply_versions(entries);
                if let Some(covers) = &covers {
                    replica.complete_transfer(covers);
                }
                drop(replica);
                metrics::counter!(names::DELTA_VERSIONS_RECEIVED).increment(received);
                count_refused_versions(applied);
                self.notify();
                Response::Ack
            }
            Request::Leave {
                address,
                incarnation,
            } => {
                let change = self.replica().members.mark_left(&address, incarnation);
                if let Some(change) = change {
                    log_liveness(&change);
                }
                Response::Ack
            }
        }
    }

    /// Takes in a peer's digest: liveness, admissions, clock.
    fn observe(self: &Arc<Self>, hello: &Hello) {
        let now = self.now_ms();
        let (behind, heard, admissions) = {
            let mut replica = self.replica();
            let heard = replica
                .members
                .heard_from(&hello.address, hello.incarnation, now);
            if heard == Heard::Stale {
                return;
            }
            let merged = replica.members.merge_admin(&hello.admin, now);
            if merged.refused > 0 {
                metrics::counter!(names::PEER_DATA_REFUSED, "what" => "admission")
                    .increment(merged.refused as u64);
            }
            let admissions = merged.changed;
            replica.members.record_clock(&hello.address, &hello.clock);
            (!replica.clock().covers(&hello.clock), heard, admissions)
        };
        match heard {
            Heard::Refreshed { revived: true } => {
                info!(member = %hello.address, "view change: member is reachable again");
                metrics::counter!(names::VIEW_CHANGES, "change" => "revived").increment(1);
            }
            Heard::NewIncarnation => {
                debug!(member = %hello.address, incarnation = hello.incarnation, "new incarnation")
            }
            _ => {}
        }
        for record in admissions {
            info!(
                member = %record.address,
                admitted = record.admitted,
                "view change: admission learned from {}",
                hello.address
            );
        }
        // Before the start-up snapshot completes, a delta pull would only
        // race with it. Under steady writes every heartbeat shows the peer
        // ahead; one pull per gossip interval per peer is enough to keep up.
        if behind && self.is_ready() && !self.pulled_recently(&hello.address) {
            self.spawn_pull(hello.address.clone());
        }
    }

    // ----------------------------------------------------------------------
    // Exchanges
    // ----------------------------------------------------------------------

    fn pulled_recently(&self, peer: &str) -> bool {
        let now = self.now_ms();
        lock(&self.last_pull_ms)
            .get(peer)
            .is_some_and(|&at| now.saturating_sub(at) < self.config.gossip_interval_ms)
    }

    /// Pulls what this replica lacks from `peer` (everything, for a
    /// snapshot), chunk by chunk, and adopts the peer's clock when done.
    ///
    /// At most one pull per peer runs at a time. A delta pull that finds one
    /// under way is redundant and returns at once; a snapshot (state
    /// transfer) waits for it, because the caller relies on the snapshot
    /// having completed when this returns `Ok`.
    pub async fn pull_from(
        self: &Arc<Self>,
        peer: &str,
        mut snapshot: bool,
    ) -> Result<(), TransportError> {
        let _claim = if snapshot {
            let deadline = Instant::now() + self.timeout() * 2;
            loop {
                if let Some(claim) = InFlight::claim(&self.pulls_in_flight, peer) {
                    break claim;
                }
                if Instant::now() >= deadline {
                    return Err(TransportError::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            match InFlight::claim(&self.pulls_in_flight, peer) {
                Some(claim) => claim,
                None => return Ok(()),
            }
        };
        let mut cursor = None;
        let mut covers: Option<Covers> = None;
        let mut snapshot_keys: HashSet<Key> = HashSet::new();
        for _ in 0..MAX_CHUNKS_PER_TRANSFER {
            let request = Request::Pull {
                address: self.address.clone(),
                incarnation: self.incarnation,
                clock: self.replica().clock().clone(),
                snapshot,
                cursor: cursor.clone(),
            };
            let chunk = match self.transport.call(peer, request, self.timeout()).await? {
                Response::Chunk(chunk) => chunk,
                other => {
                    return Err(TransportError::Codec(format!(
                        "unexpected answer {other:?}"
                    )))
                }
            };
            if chunk.snapshot_required && !snapshot {
                info!(%peer, "state transfer: we are below the peer's horizon; taking a snapshot");
                snapshot = true;
                continue;
            }
            metrics::counter!(names::DELTA_VERSIONS_RECEIVED).increment(chunk.entries.len() as u64);
            let first = covers.get_or_insert_with(|| chunk.covers.clone()).clone();
            if snapshot {
                snapshot_keys.extend(chunk.entries.iter().map(|v| v.key.clone()));
            }
            let done = chunk.next.is_none();
            {
                let mut replica = self.replica();
                replica.members.record_clock(peer, &chunk.covers.clock);
                let applied = replica.apply_versions(chunk.entries);
                count_refused_versions(applied);
                if done {
                    if snapshot {
                        let dropped = replica.complete_snapshot(&first, &snapshot_keys);
                        info!(%peer, keys = snapshot_keys.len(), dropped, "state transfer: snapshot applied");
                        metrics::counter!(names::STATE_TRANSFERS).increment(1);
                    } else {
                        replica.complete_transfer(&first);
                    }
                }
            }
            self.notify();
            match chunk.next {
                Some(next) => cursor = Some(next),
                None => {
                    lock(&self.last_pull_ms).insert(peer.to_string(), self.now_ms());
                    return Ok(());
                }
            }
        }
        Err(TransportError::Codec(
            "transfer exceeded the chunk limit".into(),
        ))
    }

    /// Pushes to `peer` everything it lacks relative to `their` clock.
    pub async fn push_to(&self, peer: &str, their: &VClock) -> Result<(), TransportError> {
        let covers = {
            let replica = self.replica();
            if their.covers(replica.clock()) {
                return Ok(());
            }
            replica.covers()
        };
        let mut cursor = None;
        for _ in 0..MAX_CHUNKS_PER_TRANSFER {
            let (entries, next, may_cover) =
                self.replica()
                    .push_chunk(their, cursor.as_ref(), self.config.max_message_bytes);
            let last = next.is_none();
            metrics::counter!(names::DELTA_VERSIONS_SENT).increment(entries.len() as u64);
            let request = Request::Push {
                address: self.address.clone(),
                incarnation: self.incarnation,
                entries,
                covers: (last && may_cover).then(|| covers.clone()),
            };
            self.transport.call(peer, request, self.timeout()).await?;
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        Err(TransportError::Codec(
            "transfer exceeded the chunk limit".into(),
        ))
    }

    /// One anti-entropy round with a random peer from the view.
    pub async fn gossip_round(self: &Arc<Self>) {
        let peer = {
            let peers = self.replica().members.live_peers();
            let mut rng = lock(&self.rng);
            peers.choose(&mut *rng).cloned()
        };
        let Some(peer) = peer else { return };
        metrics::counter!(names::GOSSIP_ROUNDS).increment(1);
        let span = tracing::debug_span!("gossip", %peer);
        async {
            if let Err(error) = self.pull_from(&peer, false).await {
                debug!(%error, "gossip pull failed");
                return;
            }
            let their = self
                .replica()
                .members
                .member(&peer)
                .map(|m| m.known_clock.clone())
                .unwrap_or_default();
            if let Err(error) = self.push_to(&peer, &their).await {
                debug!(%error, "gossip push failed");
            }
        }
        .instrument(span)
        .await
    }

    async fn heartbeat(self: &Arc<Self>, peer: String) {
        let Some(_claim) = InFlight::claim(&self.heartbeats_in_flight, &peer) else {
            return;
        };
        let request = Request::Heartbeat(self.hello());
        if let Ok(Response::Hello(hello)) = self
            .transport
            .call(&peer, request, self.heartbeat_timeout())
            .await
        {
            if hello.address == peer {
                self.observe(&hello);
            }
        }
    }

    fn spawn_heartbeats_to_all(self: &Arc<Self>) {
        let peers: Vec<String> = {
            let replica = self.replica();
            let mut peers = replica.members.live_peers();
            peers.extend(replica.members.absent_peers());
            peers
        };
        for peer in peers {
            let node = self.clone();
            tokio::spawn(async move { node.heartbeat(peer).await });
        }
    }

    /// One failure-detector step: advance liveness, heartbeat the view, probe
    /// the rest now and then.
    pub fn heartbeat_tick(self: &Arc<Self>) {
        let now = self.now_ms();
        let (changes, live, absent) = {
            let mut replica = self.replica();
            let changes = replica.members.tick(now);
            (
                changes,
                replica.members.live_peers(),
                replica.members.absent_peers(),
            )
        };
        for change in &changes {
            log_liveness(change);
        }
        let mut targets = live;
        {
            let mut probes = lock(&self.last_probe_ms);
            for peer in absent {
                let last = probes.get(&peer).copied().unwrap_or(0);
                if now.saturating_sub(last) >= self.config.probe_interval_ms {
                    probes.insert(peer.clone(), now);
                    targets.push(peer);
                }
            }
        }
        for peer in targets {
            let node = self.clone();
            tokio::spawn(async move { node.heartbeat(peer).await });
        }
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

    // ----------------------------------------------------------------------
    // Life cycle
    // ----------------------------------------------------------------------

    /// Announces this replica, starts the background tasks, and transfers
    /// state from a live peer; returns when the replica is ready to serve.
    pub async fn start(self: &Arc<Self>) {
        self.spawn_loops();
        let peers: Vec<String> = {
            let replica = self.replica();
            let mut peers = replica.members.live_peers();
            let mut rng = lock(&self.rng);
            rand::seq::SliceRandom::shuffle(&mut peers[..], &mut *rng);
            peers
        };
        let hello = self.hello();
        let answers = futures::future::join_all(peers.iter().map(|peer| {
            let request = Request::Join(hello.clone());
            let call = self.transport.call(peer, request, self.timeout());
            async move { (peer.clone(), call.await) }
        }))
        .await;
        let mut live = Vec::new();
        for (peer, answer) in answers {
            if let Ok(Response::Hello(hello)) = answer {
                self.observe(&hello);
                live.push(peer);
            }
        }
        for peer in &live {
            match self.pull_from(peer, true).await {
                Ok(()) => break,
                Err(error) => warn!(%peer, %error, "state transfer failed; trying another peer"),
            }
        }
        if live.is_empty() && !peers.is_empty() {
            info!("no peer answered; starting empty and will keep trying");
        }
        self.set_ready();
        info!(address = %self.address, incarnation = self.incarnation, "ready");
        // Other peers may hold writes the snapshot's sender had not seen yet:
        // fetch them now rather than at the next heartbeat.
        let ahead: Vec<String> = {
            let replica = self.replica();
            live.into_iter()
                .filter(|peer| {
                    replica
                        .members
                        .member(peer)
                        .is_some_and(|m| !replica.clock().covers(&m.known_clock))
                })
                .collect()
        };
        for peer in ahead {
            self.spawn_pull(peer);
        }
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

    /// Graceful leave: refuse new client requests, hand every write a peer
    /// may lack to the live peers, tell them we are leaving, stop the tasks.
    pub async fn leave(self: &Arc<Self>) {
        self.draining.store(true, Ordering::Release);
        self.notify();
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let peers: Vec<(String, VClock)> = {
            let replica = self.replica();
            replica
                .members
                .live_peers()
                .into_iter()
                .map(|p| {
                    let clock = replica
                        .members
                        .member(&p)
                        .map(|m| m.known_clock.clone())
                        .unwrap_or_default();
                    (p, clock)
                })
                .collect()
        };
        let handoff = futures::future::join_all(
            peers
                .iter()
                .map(|(peer, clock)| async move { (peer, self.push_to(peer, clock).await) }),
        );
        match tokio::time::timeout(grace.mul_f32(0.7), handoff).await {
            Ok(results) => {
                let delivered = results.iter().filter(|(_, r)| r.is_ok()).count();
                info!(delivered, peers = results.len(), "hand-off before leaving");
            }
            Err(_) => warn!("hand-off timed out"),
        }
        let leave = futures::future::join_all(peers.iter().map(|(peer, _)| {
            let request = Request::Leave {
                address: self.address.clone(),
                incarnation: self.incarnation,
            };
            self.transport.call(peer, request, grace.mul_f32(0.2))
        }));
        let _ = tokio::time::timeout(grace.mul_f32(0.25), leave).await;
        self.shutdown.cancel();
    }

    /// Stops the background tasks without telling anyone (a crash, in tests).
    pub fn halt(&self) {
        self.shutdown.cancel();
    }
}

/// Counts the versions a peer sent that the core refused (malformed, or
/// beyond the counter bounds), so that a misbehaving peer shows in `/metrics`.
fn count_refused_versions(applied: ApplyReport) {
    if applied.refused > 0 {
        metrics::counter!(names::PEER_DATA_REFUSED, "what" => "version")
            .increment(applied.refused as u64);
    }
}

fn log_liveness(change: &LivenessChange) {
    metrics::counter!(names::LIVENESS_CHANGES, "to" => change.to.as_str()).increment(1);
    match change.to {
        Liveness::Dead => info!(member = %change.address, "view change: member is dead"),
        Liveness::Left => info!(member = %change.address, "view change: member left"),
        Liveness::Suspect => info!(member = %change.address, "member is suspect"),
        Liveness::Alive => debug!(member = %change.address, "member alive"),
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
    Fut: std::future::Future<Output = ()> + Send + 'static,
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
