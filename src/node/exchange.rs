//! Pulls, pushes and anti-entropy rounds: the shell side of the exchange
//! protocol. Each function drives one of the core's state machines
//! ([`Pull`], [`Push`]) — lock, compute the next message, unlock, send, lock,
//! take in the answer — and owns only what the core cannot: timeouts, the
//! per-peer pull lock, metrics and logs.
//!
//! Every gossip round picks a random peer from the view: pull what we lack,
//! then push what its current life lacks (push-pull anti-entropy).

use std::sync::Arc;

use rand::seq::IndexedRandom;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::{lock, Node};
use crate::core::{Dot, ExchangeError, Pull, PullRequest, PullStep, Push, PushRequest, VClock};
use crate::proto::{Request, Response};
use crate::telemetry::names;
use crate::transport::TransportError;

/// Why a transfer with a peer did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(&'static str),
    #[error("another pull from this peer did not finish in time")]
    Busy,
    #[error("invalid answer")]
    Invalid,
}

fn answer_kind(response: &Response) -> &'static str {
    match response {
        Response::Hello(_) => "hello",
        Response::Chunk(_) => "chunk",
        Response::Ack => "ack",
        Response::Refused(_) => "refused",
        Response::Invalid { .. } => "invalid",
    }
}

impl Node {
    /// Answers a peer's pull with the next chunk of what it lacks.
    pub(super) fn answer_pull(&self, request: &PullRequest) -> Response {
        let now = self.now_ms();
        let answer = self
            .replica()
            .answer_pull(request, now, self.config.max_message_bytes);
        match answer {
            Ok(chunk) => {
                metrics::counter!(names::DELTA_VERSIONS_SENT).increment(chunk.entries.len() as u64);
                Response::Chunk(chunk)
            }
            Err(refusal) => Response::Refused(refusal),
        }
    }

    /// Takes in a peer's push.
    pub(super) fn accept_push(&self, push: PushRequest) -> Response {
        let now = self.now_ms();
        let received = push.entries.len() as u64;
        let applied = self.replica().accept_push(push, now);
        match applied {
            Ok(applied) => {
                metrics::counter!(names::DELTA_VERSIONS_RECEIVED).increment(received);
                count_refused_versions(applied.refused);
                self.notify();
                Response::Ack
            }
            Err(refusal) => Response::Refused(refusal),
        }
    }

    /// Starts pulls from peers that can supply `metadata` (or from every live
    /// peer when none is known to).
    pub(super) fn pull_for(self: &Arc<Self>, metadata: &VClock) {
        let candidates: Vec<String> = {
            let replica = self.replica();
            let covering = replica.members.live_peers_covering(metadata);
            if covering.is_empty() {
                replica.members.live_peers()
            } else {
                covering
            }
        };
        for peer in candidates {
            self.spawn_pull(peer);
        }
    }

    pub(super) fn spawn_pull(self: &Arc<Self>, peer: String) {
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(error) = node.pull_from(&peer, false).await {
                debug!(%peer, %error, "pull failed");
            }
        });
    }

    fn pull_lock(&self, peer: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.peers)
            .entry(peer.to_string())
            .or_default()
            .pull
            .clone()
    }

    /// Pulls what this replica lacks from `peer` (everything, for a
    /// snapshot), chunk by chunk, and adopts the peer's guarantee when done.
    ///
    /// At most one pull per peer runs at a time. A delta pull that finds one
    /// under way is redundant and returns at once; a snapshot (state
    /// transfer) waits for it (bounded), because the caller relies on the
    /// snapshot having completed when this returns `Ok`.
    pub async fn pull_from(
        self: &Arc<Self>,
        peer: &str,
        snapshot: bool,
    ) -> Result<(), TransferError> {
        let pull_lock = self.pull_lock(peer);
        let _claim = if snapshot {
            tokio::time::timeout(self.timeout() * 2, pull_lock.lock_owned())
                .await
                .map_err(|_| TransferError::Busy)?
        } else {
            match pull_lock.try_lock_owned() {
                Ok(claim) => claim,
                Err(_) => return Ok(()),
            }
        };
        let mut pull = Pull::new(peer, snapshot);
        loop {
            let request = pull.request(&self.replica());
            let answer = self
                .transport
                .call(peer, Request::Pull(request), self.timeout())
                .await?;
            let answer = self.screen(answer).ok_or(TransferError::Invalid)?;
            let chunk = match answer {
                Response::Chunk(chunk) => chunk,
                Response::Refused(refusal) => {
                    self.refused(&refusal);
                    return Err(ExchangeError::Refused(refusal).into());
                }
                other => return Err(TransferError::UnexpectedAnswer(answer_kind(&other))),
            };
            let received = chunk.entries.len() as u64;
            let now = self.now_ms();
            let step = pull.on_chunk(&mut self.replica(), chunk, now);
            metrics::counter!(names::DELTA_VERSIONS_RECEIVED).increment(received);
            count_refused_versions(pull.take_refused());
            self.notify();
            match step? {
                PullStep::More => continue,
                PullStep::Done(done) => {
                    if done.snapshot {
                        info!(%peer, keys = done.snapshot_keys, dropped = done.dropped, reissued = done.reissued, "state transfer: snapshot applied");
                        if done.reissued > 0 {
                            metrics::counter!(names::WRITES_REISSUED)
                                .increment(done.reissued as u64);
                            warn!(
                                %peer,
                                reissued = done.reissued,
                                "values written while cut off past the grace period were re-issued \
                                 as new writes: a delete collected meanwhile may have been concurrent \
                                 with them"
                            );
                        }
                        metrics::counter!(names::STATE_TRANSFERS).increment(1);
                    }
                    if let Some(record) = lock(&self.peers).get_mut(peer) {
                        record.last_pull_ms = Some(self.now_ms());
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Pushes to `peer` everything its current life lacks according to the
    /// clock it last reported.
    pub async fn push_to(self: &Arc<Self>, peer: &str) -> Result<(), TransferError> {
        self.push_holding(peer).await.map(|_| ())
    }

    /// Pushes to `peer` as [`Node::push_to`] does, and says whether its
    /// current life now holds everything this replica held when the push
    /// started: every chunk was acknowledged, or the clock it last reported
    /// covers ours already. `false` when no life of it is known. This is
    /// what a write waiting for `ack_replicas` counts.
    pub(super) async fn push_holding(self: &Arc<Self>, peer: &str) -> Result<bool, TransferError> {
        let start = {
            let replica = self.replica();
            match Push::start(&replica, peer) {
                Some(push) => Ok(push),
                None => Err(replica.members.known_clock(peer).is_some()),
            }
        };
        let mut push = match start {
            Ok(push) => push,
            // Nothing to push: it holds all we hold, if a life of it is known.
            Err(known) => return Ok(known),
        };
        loop {
            let request = push.next_request(&self.replica(), self.config.max_message_bytes)?;
            let Some(request) = request else {
                if let Some(delivered) = push.delivered() {
                    let to = push.to();
                    self.replica()
                        .members
                        .record_push(&to.address, to.incarnation, delivered);
                }
                return Ok(true);
            };
            metrics::counter!(names::DELTA_VERSIONS_SENT).increment(request.entries.len() as u64);
            let answer = self
                .transport
                .call(peer, Request::Push(request), self.timeout())
                .await?;
            match self.screen(answer).ok_or(TransferError::Invalid)? {
                Response::Ack => {}
                Response::Refused(refusal) => {
                    let life = push.to().clone();
                    debug!(%life, %refusal, "push refused");
                    self.refused(&refusal);
                    return Err(ExchangeError::Refused(refusal).into());
                }
                other => return Err(TransferError::UnexpectedAnswer(answer_kind(&other))),
            }
        }
    }

    /// Whether `peer`'s current life holds `write` (a write of this
    /// replica), pushing to it if needed: what a write waiting for
    /// `ack_replicas` counts.
    ///
    /// One task per peer makes these pushes, one at a time, and each carries
    /// every write made before it started: writes that arrive while a push
    /// is in flight share the next one (group commit, as for fsyncs). The
    /// task, not the waiting request, owns the push, so a request that
    /// stops waiting (enough other replicas answered, or its deadline
    /// passed) never cuts a push short and wastes what it sent.
    pub(super) async fn push_for_acknowledgement(
        self: &Arc<Self>,
        peer: &str,
        write: &Dot,
    ) -> Result<bool, TransferError> {
        let holds = |node: &Node| node.replica().members.holds(peer, write);
        if holds(self) {
            return Ok(true);
        }
        let (ticket, pushed) = {
            let mut peers = lock(&self.peers);
            let pushes = &mut peers.entry(peer.to_string()).or_default().acknowledgements;
            pushes.wanted += 1;
            if !pushes.running {
                pushes.running = true;
                let (node, peer) = (self.clone(), peer.to_string());
                tokio::spawn(async move { node.acknowledgement_pusher(&peer).await });
            }
            (pushes.wanted, pushes.pushed.clone())
        };
        loop {
            let ended = pushed.notified();
            tokio::pin!(ended);
            // Registered before looking, so a push that ends in between
            // still wakes this waiter.
            ended.as_mut().enable();
            let served = lock(&self.peers)
                .get(peer)
                .is_some_and(|record| record.acknowledgements.served >= ticket);
            if served {
                return Ok(holds(self));
            }
            ended.await;
        }
    }

    /// Pushes to `peer` until no ticket is waiting (see
    /// [`Node::push_for_acknowledgement`]). One push at a time, each bounded
    /// by the transport's timeouts and the chunk limit.
    async fn acknowledgement_pusher(self: Arc<Self>, peer: &str) {
        loop {
            let target = match lock(&self.peers).get(peer) {
                Some(record) => record.acknowledgements.wanted,
                None => return,
            };
            if let Err(error) = self.push_holding(peer).await {
                debug!(%peer, %error, "push for acknowledgements failed");
            }
            let mut peers = lock(&self.peers);
            let Some(record) = peers.get_mut(peer) else {
                return;
            };
            let pushes = &mut record.acknowledgements;
            pushes.served = target;
            pushes.pushed.notify_waiters();
            if pushes.wanted == target {
                pushes.running = false;
                return;
            }
        }
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
        let started = Instant::now();
        async {
            if let Err(error) = self.pull_from(&peer, false).await {
                debug!(%error, "gossip pull failed");
                return;
            }
            if let Err(error) = self.push_to(&peer).await {
                debug!(%error, "gossip push failed");
            }
            debug!(took = ?started.elapsed(), "gossip round done");
        }
        .instrument(span)
        .await
    }
}

/// Counts the versions a peer sent that the core refused (malformed, or
/// beyond the counter bounds), so that a misbehaving peer shows in `/metrics`.
fn count_refused_versions(refused: usize) {
    if refused > 0 {
        metrics::counter!(names::PEER_DATA_REFUSED, "what" => "version").increment(refused as u64);
    }
}
