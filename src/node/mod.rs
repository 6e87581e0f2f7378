//! The I/O shell around one [`Replica`]: timers, peer choice, message moving.
//!
//! A [`Node`] owns the replica behind a `std::sync::Mutex` that is only ever
//! held for a short synchronous step — never across an `.await`. Every
//! exchange is: lock, compute what to send, unlock, send (bounded by a
//! timeout), lock, apply the answer, unlock. The protocol itself — what to
//! send, what an answer proves — lives in the pure core
//! ([`crate::core::exchange`], [`crate::core::membership`]); this module only
//! moves bytes and runs timers.
//!
//! * `mod.rs` (here) — the node, client operations with causal waits, view
//!   operations, and the dispatch of requests from peers: every request and
//!   every answer passes [`crate::proto::Request::check`] /
//!   [`crate::proto::Response::check`] first, and an address that is not a
//!   member is taken in only once it answers a call-back there.
//! * `peers` — per-peer records, heartbeats and the failure-detector tick.
//! * `exchange` — pulls, pushes and gossip rounds, driving the core's
//!   [`crate::core::Pull`] and [`crate::core::Push`] state machines.
//! * `lifecycle` — start-up (join, state transfer), background loops,
//!   graceful leave.
//!
//! Randomness comes from one seeded RNG and time from tokio's clock, so under
//! a paused clock with the in-memory transport a seed replays a run.

mod exchange;
mod lifecycle;
mod peers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::core::checks::{self, Invalid};
use crate::core::{
    Dot, JsonText, Origin, ReadOutcome, Refusal, Replica, Timing, VClock, ViewChange, WriteError,
    WriteOutcome,
};
use crate::proto::{Hello, Request, Response};
use crate::telemetry::names;
use crate::transport::Transport;

pub use exchange::TransferError;

/// Why a client request could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The missing writes did not arrive within `causal_wait`.
    CausalTimeout,
    /// The replica is shutting down.
    Draining,
    /// An operator removed this replica from the view: it takes no writes.
    Removed,
    /// This replica's life has no counter left for a new write (see
    /// [`crate::core::WriteError::CountersExhausted`]).
    CountersExhausted,
    /// With a data directory: the write could not be made durable.
    StorageFailed,
}

/// A write applied here that too few replicas acknowledged in time (see
/// [`Node::acknowledge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unacknowledged {
    /// Replicas known to hold it, this one included.
    pub holding: usize,
    /// Replicas `ack_replicas` asks for in the current view.
    pub needed: usize,
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
    replica: Mutex<Replica>,
    transport: Arc<dyn Transport>,
    rng: Mutex<StdRng>,
    epoch: Instant,
    /// Bumped whenever the clock grows or readiness changes.
    changes: watch::Sender<u64>,
    ready: AtomicBool,
    draining: AtomicBool,
    /// What the shell tracks per peer address (in-flight exchanges, timers).
    peers: Mutex<HashMap<String, peers::PeerRecord>>,
    /// A random number naming this process in its digests, so that a
    /// successor that picked the same incarnation is told apart.
    process: u64,
    /// Call-backs in flight to addresses that sent us a digest without being
    /// members (see `observe`): bounded by [`MAX_VERIFICATIONS`].
    verifying: AtomicUsize,
    shutdown: CancellationToken,
    /// The data directory's storage, when `data_dir` is set.
    storage: Option<Arc<crate::storage::Persister>>,
}

/// Most call-backs to unknown senders in flight at once; a flood of digests
/// naming junk addresses costs at most this many outgoing heartbeats.
const MAX_VERIFICATIONS: usize = 16;

/// Counts a message from a peer that failed the checks every message must
/// pass ([`crate::core::checks`]).
fn count_invalid(invalid: &Invalid) {
    debug!(%invalid, "invalid message from a peer");
    metrics::counter!(names::PEER_DATA_REFUSED, "what" => "message").increment(1);
}

/// Locks a mutex, recovering from poisoning: every critical section leaves the
/// data consistent before any step that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wall clock in milliseconds since the Unix epoch (0 before it). The
/// one reading of it in the shell: incarnations are start times (so this
/// bounds the ones a peer may name), and signatures carry timestamps that
/// are compared across machines, where tokio's monotonic clock would not do.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// A node for `config` whose first life has at least `incarnation` (the
    /// start time in ms is the usual choice; a peer that knows a newer life
    /// of this address makes it go higher), talking through `transport`.
    pub fn new(
        config: Config,
        transport: Arc<dyn Transport>,
        incarnation: u64,
        seed: u64,
    ) -> Arc<Node> {
        let timing = Node::timing(&config);
        let mut rng = StdRng::seed_from_u64(seed);
        let replica = Replica::new(&config.socket_address, incarnation, &config.view, timing, 0)
            .with_cluster(rand::Rng::random(&mut rng));
        Node::assemble(config, transport, replica, rng, None)
    }

    /// The timing parameters of the member table, from the configuration.
    fn timing(config: &Config) -> Timing {
        Timing {
            suspect_after_ms: config.suspect_after_ms,
            dead_after_ms: config.dead_after_ms,
            dead_member_grace_ms: config.dead_member_grace_ms,
        }
    }

    /// A node around `replica` (fresh or recovered), with its storage.
    fn assemble(
        config: Config,
        transport: Arc<dyn Transport>,
        replica: Replica,
        mut rng: StdRng,
        storage: Option<Arc<crate::storage::Persister>>,
    ) -> Arc<Node> {
        let process = rand::Rng::random(&mut rng);
        let (changes, _) = watch::channel(0);
        Arc::new(Node {
            address: config.socket_address.clone(),
            config: Arc::new(config),
            replica: Mutex::new(replica),
            transport,
            rng: Mutex::new(rng),
            epoch: Instant::now(),
            changes,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            peers: Mutex::new(HashMap::new()),
            process,
            verifying: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            storage,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The current life's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.replica().incarnation()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Checks an answer from a peer as every message is checked; an invalid
    /// one is counted and treated as no answer.
    fn screen(&self, response: Response) -> Option<Response> {
        match response.check(wall_ms()) {
            Ok(()) => Some(response),
            Err(invalid) => {
                count_invalid(&invalid);
                None
            }
        }
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

    /// Whether an operator removed this replica from the view.
    pub fn is_removed(&self) -> bool {
        self.replica().members.removed()
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

    fn hello(&self) -> Hello {
        let replica = self.replica();
        Hello {
            address: self.address.clone(),
            incarnation: replica.incarnation(),
            process: self.process,
            clock: replica.clock().clone(),
            cluster: replica.cluster(),
            admissions: replica.members.admissions(),
        }
    }

    /// A peer refused a message because it knows a life of this address at
    /// least as new as `known`: move to a newer life so that peers take our
    /// messages again (the wall clock that chose our incarnation stepped back
    /// or stood still, or an earlier life is still remembered).
    fn outlive(self: &Arc<Self>, known: u64) {
        if self.shutdown.is_cancelled() {
            // A halted or departed process must not start a life that would
            // compete with its successor's (a late answer can still arrive).
            return;
        }
        if !checks::plausible_incarnation(known, wall_ms()) {
            // Real incarnations are start times: following one far in the
            // future would leave this address no room for later lives.
            warn!(known, "a peer claims a life far in the future; ignored");
            return;
        }
        let renewed = {
            let mut replica = self.replica();
            if replica.incarnation() > known {
                return;
            }
            replica.open_new_life(known.saturating_add(1))
        };
        if renewed {
            let incarnation = self.incarnation();
            info!(
                incarnation,
                "a peer knows a newer life of this address; starting a newer one"
            );
            metrics::counter!(names::NEW_LIVES).increment(1);
            self.spawn_heartbeats_to_all();
        } else {
            warn!(
                known,
                "a peer claims the largest possible incarnation; cannot outlive it"
            );
        }
    }

    /// Takes in a refusal from `peer`.
    fn refused(self: &Arc<Self>, refusal: &Refusal) {
        match refusal {
            Refusal::StaleSender { known } => self.outlive(*known),
            Refusal::WrongReceiver { life } => {
                let now = self.now_ms();
                let _ = self.replica().hear_request(life, now);
            }
            // Our next pull from that peer is answered `snapshot_required`
            // and brings us up to its horizon; nothing to do now.
            Refusal::SenderBelowHorizon => {}
            Refusal::OtherCluster { cluster } => {
                debug!(
                    cluster = format!("{cluster:016x}"),
                    "a peer belongs to another cluster"
                );
            }
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
        let storage = self.storage.as_deref();
        let (outcome, ticket) = self
            .when_caught_up(metadata, move |replica| {
                if replica.members.removed() {
                    return Ok((Err(Unavailable::Removed), None));
                }
                match replica.write(key, value.clone(), metadata) {
                    // The ticket is taken under the replica lock, so the
                    // batch that carries this write carries the ticket too.
                    Ok(outcome) => Ok((Ok(outcome), storage.map(|s| s.ticket()))),
                    Err(WriteError::NotYet) => Err(crate::core::NotYet),
                    Err(WriteError::CountersExhausted) => {
                        Ok((Err(Unavailable::CountersExhausted), None))
                    }
                }
            })
            .await?;
        // With a data directory, acknowledged only once as durable as the
        // sync policy promises (the lock is not held while waiting).
        if let (Some(storage), Some(ticket)) = (storage, ticket) {
            if let Err(error) = storage.wait(ticket).await {
                warn!(%error, "a write could not be made durable");
                return Err(Unavailable::StorageFailed);
            }
        }
        outcome
    }

    /// Waits until `ack_replicas` of the current view (this one included)
    /// hold the write that produced `outcome`: pushes at once, in parallel,
    /// to every other member of the view, and waits at most
    /// `rpc_timeout_ms`. Returns how many hold it (this one included) and
    /// how many were needed when that is too few. The write stays applied
    /// here either way and spreads by gossip.
    pub async fn acknowledge(
        self: &Arc<Self>,
        outcome: &WriteOutcome,
    ) -> Result<(), Unacknowledged> {
        if matches!(outcome, WriteOutcome::NotFound { .. })
            || self.config.ack_replicas == crate::config::AckReplicas::One
        {
            // A delete of a missing key wrote nothing; with the default of
            // one, this replica holding the write is enough (and the write
            // path takes no further lock or allocation).
            return Ok(());
        }
        // Counted against the admitted members, dead ones included: counted
        // against the view, a write would need fewer replicas exactly when
        // replicas fail (the view shrinks to the live ones), which is when
        // the setting matters.
        let (peers, write) = {
            let replica = self.replica();
            let origin = replica.origin().clone();
            let seq = outcome.metadata().get(&origin);
            (replica.members.admitted_peers(), Dot { origin, seq })
        };
        let needed = self.config.ack_replicas.needed(peers.len() + 1);
        let mut holding = 1;
        if holding >= needed {
            return Ok(());
        }
        let mut pushes = tokio::task::JoinSet::new();
        for peer in peers {
            let (node, write) = (self.clone(), write.clone());
            pushes.spawn(async move {
                // Sequence 0 names no write: this replica opened a new life
                // since (it cannot tell which write to look for, so it
                // pushes everything the peer lacks).
                let held = if write.seq == 0 {
                    node.push_holding(&peer).await
                } else {
                    node.push_for_acknowledgement(&peer, &write).await
                };
                match held {
                    Ok(held) => held,
                    Err(error) => {
                        debug!(%peer, %error, "push for an acknowledgement failed");
                        false
                    }
                }
            });
        }
        let deadline = Instant::now() + self.timeout();
        // Dropping the set when done aborts pushes still under way: gossip
        // carries the write to those peers later.
        while holding < needed {
            match tokio::time::timeout_at(deadline, pushes.join_next()).await {
                Ok(Some(Ok(true))) => holding += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        debug!(holding, needed, "acknowledgement wait over");
        if holding >= needed {
            Ok(())
        } else {
            Err(Unacknowledged { holding, needed })
        }
    }

    /// The writes named by `metadata` that this replica lacks and that no
    /// live replica can supply any more, because the replica life that made
    /// them ended (a newer life of its address is known, or it has been
    /// dead past `dead_member_grace_ms`) and no live peer reported holding
    /// them. Empty unless *every* missing entry is such a write: a client
    /// told so has no reason to wait and should drop its metadata.
    pub fn lost_dependencies(&self, metadata: &VClock) -> Vec<Origin> {
        let now = self.now_ms();
        let grace = self.config.dead_member_grace_ms;
        let replica = self.replica();
        let mine = replica.clock();
        let mut lost = Vec::new();
        for (origin, &seq) in metadata.iter() {
            if mine.get(origin) >= seq {
                continue;
            }
            let incarnation = origin.incarnation();
            let ended = if origin.address() == self.address {
                incarnation < replica.incarnation()
            } else {
                replica.members.member(origin.address()).is_some_and(|m| {
                    m.incarnation.is_some_and(|known| known > incarnation)
                        || (m.liveness == crate::core::Liveness::Dead
                            && m.incarnation == Some(incarnation)
                            && now.saturating_sub(m.last_heard_ms) >= grace)
                })
            };
            let wanted = VClock::from_pairs([(origin.clone(), seq)]);
            if !ended || !replica.members.live_peers_covering(&wanted).is_empty() {
                return Vec::new();
            }
            lost.push(origin.clone());
        }
        lost
    }

    /// Runs `op` once this replica is ready and covers `metadata`; until then
    /// pulls the missing writes and waits, at most `causal_wait`.
    async fn when_caught_up<T>(
        self: &Arc<Self>,
        metadata: &VClock,
        mut op: impl FnMut(&mut Replica) -> Result<T, crate::core::NotYet>,
    ) -> Result<T, Unavailable> {
        // Created only once a first attempt fails: a request that is caught
        // up reads no clock and takes no subscription (whose reference count
        // is one cache line every request on every core would write twice).
        let mut waiting: Option<(Instant, tokio::sync::watch::Receiver<_>)> = None;
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
            let Some((deadline, changes)) = &mut waiting else {
                // Subscribe, then look again: a change between the attempt
                // above and the wait below is not missed.
                let deadline = Instant::now() + Duration::from_millis(self.config.causal_wait_ms);
                waiting = Some((deadline, self.changes.subscribe()));
                continue;
            };
            let deadline = *deadline;
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

    // ----------------------------------------------------------------------
    // View operations
    // ----------------------------------------------------------------------

    pub fn view(&self) -> Vec<String> {
        self.replica().members.view()
    }

    /// An operator adds `address`. A replica that answers is asked first:
    /// one that holds another cluster's data is refused
    /// ([`ViewChange::OtherCluster`]) rather than merged; one that does not
    /// answer is admitted and probed until it does.
    pub async fn view_add(self: &Arc<Self>, address: &str) -> ViewChange {
        if address == self.address {
            return self.view_add_self();
        }
        let request = Request::Heartbeat(self.hello());
        let answer = self
            .transport
            .call(address, request, self.heartbeat_timeout())
            .await
            .ok()
            .and_then(|answer| self.screen(answer));
        // The replica that answers names itself: an address that is another
        // name of a replica (another local IP) adds that replica, under the
        // one address it goes by, not a second member that never answers
        // as itself.
        let mut target = address.to_string();
        match answer {
            // Our own process answered: this replica, under another name.
            Some(Response::Hello(hello)) if hello.process == self.process => {
                return self.view_add_self();
            }
            Some(Response::Refused(Refusal::OtherCluster { .. })) => {
                return ViewChange::OtherCluster
            }
            Some(Response::Hello(hello)) => {
                let compatible = self
                    .replica()
                    .meet_cluster(hello.cluster, &hello.clock, true);
                if compatible.is_err() {
                    return ViewChange::OtherCluster;
                }
                target = hello.address;
            }
            _ => {}
        }
        let now = self.now_ms();
        let change = self.replica().members.admit(&target, now);
        if change == ViewChange::Added {
            info!(member = %target, "view change: added by request");
            metrics::counter!(names::VIEW_CHANGES, "change" => "added").increment(1);
            self.spawn_heartbeats_to_all();
        }
        change
    }

    /// An operator adds this replica (under any of its names): present
    /// unless it was removed, in which case it is added back.
    fn view_add_self(self: &Arc<Self>) -> ViewChange {
        let now = self.now_ms();
        let change = self.replica().members.admit(&self.address, now);
        if change == ViewChange::Added {
            info!("view change: this replica added back by request");
            metrics::counter!(names::VIEW_CHANGES, "change" => "added").increment(1);
            self.spawn_heartbeats_to_all();
        }
        change
    }

    pub fn view_remove(self: &Arc<Self>, address: &str) -> ViewChange {
        let change = self.replica().members.remove(address);
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
            admitted: !replica.members.removed(),
            in_view: true,
            incarnation: Some(replica.incarnation()),
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
                    state: m.state_name(),
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
    // Requests from peers
    // ----------------------------------------------------------------------

    /// Answers one replica-to-replica request. Synchronous: it only touches
    /// the replica under the lock and may spawn follow-up work.
    pub fn handle(self: &Arc<Self>, request: Request) -> Response {
        if let Err(invalid) = request.check(wall_ms()) {
            count_invalid(&invalid);
            debug!(kind = request.kind(), %invalid, "invalid request from a peer");
            return Response::Invalid {
                reason: invalid.to_string(),
            };
        }
        match request {
            // This process, reached under another of its names (an operator
            // adding an alias probes it): answer as itself.
            Request::Heartbeat(hello) if self.is_me(&hello) => Response::Hello(self.hello()),
            Request::Heartbeat(hello) => match self.observe(&hello, false) {
                Ok(()) => Response::Hello(self.hello()),
                Err(refusal) => Response::Refused(refusal),
            },
            Request::Join(hello) => self.handle_join(&hello),
            Request::Pull(pull) => self.answer_pull(&pull),
            Request::Push(push) => self.accept_push(push),
            Request::Leave {
                address,
                incarnation,
                process,
            } => {
                let change = self
                    .replica()
                    .members
                    .mark_left(&address, incarnation, process);
                if let Some(change) = change {
                    peers::log_liveness(&change);
                }
                Response::Ack
            }
        }
    }

    /// Takes one of the [`MAX_VERIFICATIONS`] call-back slots; the caller
    /// gives it back (`verifying -= 1`) when its call-back ends.
    fn claim_verification(&self) -> bool {
        self.verifying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_VERIFICATIONS).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether a digest is this very process's own.
    fn is_me(&self, hello: &Hello) -> bool {
        hello.address == self.address && hello.process == self.process
    }

    /// A starting replica announces itself. A join always opens a new life:
    /// one whose incarnation is below a known life of that address, or equal
    /// to it but run by another process, is refused, and the joiner goes
    /// above it and asks again. (The same process may have been heard from
    /// already: its probes and answers can arrive before its join.)
    ///
    /// A join from an address that is not a member yet proves nothing by
    /// itself (anyone can name any address): it is answered, and the address
    /// is admitted once it answers a call-back there as the same process
    /// (`verify_join`). A starting replica serves its internal endpoint
    /// before it joins, so a real one does.
    fn handle_join(self: &Arc<Self>, hello: &Hello) -> Response {
        if self.replica().members.member(&hello.address).is_none() {
            self.verify_join(hello.address.clone(), hello.process);
            return Response::Hello(self.hello());
        }
        self.admit_joiner(hello, false)
    }

    /// Admits a joiner (a member already, or verified at its address) and
    /// takes in its digest; refuses a stale life.
    fn admit_joiner(self: &Arc<Self>, hello: &Hello, direct: bool) -> Response {
        let now = self.now_ms();
        let change = self.replica().members.admit(&hello.address, now);
        if change == ViewChange::Added {
            info!(member = %hello.address, "view change: replica announced itself");
            metrics::counter!(names::VIEW_CHANGES, "change" => "joined").increment(1);
        }
        if let Err(refusal) = self.observe(hello, direct) {
            return Response::Refused(refusal);
        }
        if change == ViewChange::Added {
            self.spawn_heartbeats_to_all();
        }
        Response::Hello(self.hello())
    }

    /// Calls back an address that asked to join without being a member, and
    /// admits it if the same process answers there (at most
    /// [`MAX_VERIFICATIONS`] call-backs at once; a join beyond is answered
    /// but not taken, and the joiner's next contact tries again).
    fn verify_join(self: &Arc<Self>, address: String, process: u64) {
        if !self.claim_verification() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let request = Request::Heartbeat(node.hello());
            let answer = node
                .transport
                .call(&address, request, node.heartbeat_timeout())
                .await
                .ok()
                .and_then(|answer| node.screen(answer));
            if let Some(Response::Hello(hello)) = answer {
                if hello.address == address && hello.process == process {
                    node.admit_joiner(&hello, true);
                }
            }
            node.verifying.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
