//! Per-peer bookkeeping of the shell, heartbeats and the failure-detector
//! tick.
//!
//! Heartbeats go every `heartbeat_interval` to each peer in the view and
//! every `probe_interval` to admitted peers out of it; each carries a digest
//! (life, clock, admissions). A peer whose clock is ahead of ours is pulled
//! from at once (at most once per gossip interval).

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use tracing::{debug, info};

use super::{lock, Node};
use crate::core::membership::LivenessChange;
use crate::core::{Heard, Liveness, Refusal};
use crate::proto::{Hello, Request, Response};
use crate::telemetry::names;

/// What the shell tracks about one peer address.
#[derive(Default)]
pub(super) struct PeerRecord {
    /// Held for the whole of a pull from this peer: at most one at a time.
    pub(super) pull: Arc<tokio::sync::Mutex<()>>,
    /// Pushes made for acknowledgements (see
    /// [`Node::push_for_acknowledgement`](super::Node)).
    pub(super) acknowledgements: AcknowledgementPushes,
    pub(super) heartbeat_in_flight: bool,
    pub(super) last_probe_ms: Option<u64>,
    /// Probes sent to an address that has never answered, since it was
    /// added: each one doubles the wait before the next (up to
    /// [`MAX_PROBE_BACKOFF`] doublings), so a junk address costs little.
    pub(super) unanswered_probes: u32,
    /// When the last pull from this peer completed.
    pub(super) last_pull_ms: Option<u64>,
}

/// The state of the one task that pushes to a peer for writes waiting for
/// `ack_replicas`. Each waiting write takes a ticket; a push that *starts*
/// after a ticket was taken carries that ticket's write, so once `served`
/// reaches a ticket its write is either held by the peer or the push
/// failed.
#[derive(Default)]
pub(super) struct AcknowledgementPushes {
    /// The last ticket handed out.
    pub(super) wanted: u64,
    /// The last ticket a finished push (successful or not) started after.
    pub(super) served: u64,
    /// Whether the pushing task runs.
    pub(super) running: bool,
    /// Woken whenever a push ends.
    pub(super) pushed: Arc<tokio::sync::Notify>,
}

/// The most doublings of `probe_interval` between probes of an address that
/// has never answered (250 ms × 2⁶ = 16 s with the defaults).
const MAX_PROBE_BACKOFF: u32 = 6;

/// Clears a peer's heartbeat-in-flight mark when the heartbeat ends, however
/// it ends.
struct HeartbeatInFlight<'a> {
    node: &'a Node,
    peer: String,
}

impl<'a> HeartbeatInFlight<'a> {
    fn claim(node: &'a Node, peer: &str) -> Option<Self> {
        let mut peers = lock(&node.peers);
        let record = peers.entry(peer.to_string()).or_default();
        if record.heartbeat_in_flight {
            return None;
        }
        record.heartbeat_in_flight = true;
        Some(HeartbeatInFlight {
            node,
            peer: peer.to_string(),
        })
    }
}

impl Drop for HeartbeatInFlight<'_> {
    fn drop(&mut self) {
        if let Some(record) = lock(&self.node.peers).get_mut(&self.peer) {
            record.heartbeat_in_flight = false;
        }
    }
}

impl Node {
    /// Heartbeats time out sooner than other requests so that one lost
    /// message does not hide a live peer for long.
    pub(super) fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(
            self.config
                .rpc_timeout_ms
                .min(self.config.dead_after_ms / 4)
                .max(1),
        )
    }

    /// Takes in a peer's digest: liveness, admissions, clock. Refuses a
    /// digest from a life older than one known.
    ///
    /// `direct` says this replica reached the sender at its address itself
    /// (the digest answers our heartbeat or join). A digest that arrives as
    /// a request from an address that is not a member proves nothing — any
    /// address can be named — so it is not taken in: this replica calls the
    /// address back instead (at most `MAX_VERIFICATIONS` at once), and the
    /// answer, if one comes, is taken in as heard directly.
    pub(super) fn observe(self: &Arc<Self>, hello: &Hello, direct: bool) -> Result<(), Refusal> {
        let now = self.now_ms();
        let life = crate::core::Life {
            address: hello.address.clone(),
            incarnation: hello.incarnation,
        };
        let (behind, heard, admissions) = {
            let mut replica = self.replica();
            let member = replica.members.member(&hello.address);
            if member.is_none() && !direct {
                drop(replica);
                self.verify(hello.address.clone());
                return Ok(());
            }
            // Evidence for taking the sender's cluster identity: it is an
            // admitted member here, or we reached it at its address ourselves
            // and it admits us (an operator added us there, it took our
            // join, or we are in its `VIEW`).
            let vouched = member.is_some_and(|m| m.admission.admitted)
                || (direct
                    && hello
                        .admissions
                        .iter()
                        .any(|r| r.address == self.address && r.admitted));
            replica.meet_cluster(hello.cluster, &hello.clock, vouched)?;
            let heard = replica.hear_process(&life, Some(hello.process), direct, now)?;
            if heard == Heard::Unknown {
                return Ok(());
            }
            let merged = replica.members.merge_admissions(&hello.admissions, now);
            if merged.refused > 0 {
                metrics::counter!(names::PEER_DATA_REFUSED, "what" => "admission")
                    .increment(merged.refused as u64);
            }
            let admissions = merged.changed;
            replica
                .members
                .record_clock(&hello.address, hello.incarnation, &hello.clock);
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
            if record.address == self.address {
                if record.admitted {
                    info!("this replica was added back to the view by an operator");
                } else {
                    info!("this replica was removed from the view by an operator: it serves reads and refuses writes until it is added back");
                }
                continue;
            }
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
        Ok(())
    }

    fn pulled_recently(&self, peer: &str) -> bool {
        let now = self.now_ms();
        lock(&self.peers)
            .get(peer)
            .and_then(|record| record.last_pull_ms)
            .is_some_and(|at| now.saturating_sub(at) < self.config.gossip_interval_ms)
    }

    async fn heartbeat(self: &Arc<Self>, peer: String) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let Some(_claim) = HeartbeatInFlight::claim(self, &peer) else {
            return;
        };
        let request = Request::Heartbeat(self.hello());
        let answer = self
            .transport
            .call(&peer, request, self.heartbeat_timeout())
            .await;
        match answer.ok().and_then(|answer| self.screen(answer)) {
            Some(Response::Hello(hello)) if hello.address == peer => {
                let _ = self.observe(&hello, true);
            }
            Some(Response::Refused(refusal)) => self.refused(&refusal),
            _ => {}
        }
    }

    /// Calls back an address that sent a digest without being a member
    /// (see `observe`), unless too many call-backs are already under way.
    fn verify(self: &Arc<Self>, peer: String) {
        if !self.claim_verification() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            node.heartbeat(peer).await;
            node.verifying.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn spawn_heartbeats(self: &Arc<Self>, peers: Vec<String>) {
        for peer in peers {
            let node = self.clone();
            tokio::spawn(async move { node.heartbeat(peer).await });
        }
    }

    /// Heartbeats every member in and out of the view now (after a view
    /// change or a new life, so that it spreads without waiting).
    pub(super) fn spawn_heartbeats_to_all(self: &Arc<Self>) {
        let peers: Vec<String> = {
            let replica = self.replica();
            let mut peers = replica.members.live_peers();
            peers.extend(replica.members.absent_peers());
            peers
        };
        self.spawn_heartbeats(peers);
    }

    /// One failure-detector step: advance liveness, heartbeat the view, probe
    /// the rest now and then, and forget records of addresses that are no
    /// longer members.
    pub fn heartbeat_tick(self: &Arc<Self>) {
        let now = self.now_ms();
        let (changes, live, absent, known, never_heard) = {
            let mut replica = self.replica();
            let changes = replica.members.tick(now);
            let never_heard: std::collections::HashSet<String> = replica
                .members
                .absent_peers()
                .into_iter()
                .filter(|peer| replica.members.never_heard(peer))
                .collect();
            let known: std::collections::HashSet<String> = replica
                .members
                .members()
                .map(|m| m.address.clone())
                .collect();
            (
                changes,
                replica.members.live_peers(),
                replica.members.absent_peers(),
                known,
                never_heard,
            )
        };
        for change in &changes {
            log_liveness(change);
        }
        let mut targets = live;
        {
            let mut peers = lock(&self.peers);
            for peer in absent {
                let record = peers.entry(peer.clone()).or_default();
                let backoff = if never_heard.contains(&peer) {
                    record.unanswered_probes.min(MAX_PROBE_BACKOFF)
                } else {
                    0
                };
                let interval = self.config.probe_interval_ms << backoff;
                let last = record.last_probe_ms.unwrap_or(0);
                if record.last_probe_ms.is_none() || now.saturating_sub(last) >= interval {
                    record.last_probe_ms = Some(now);
                    if never_heard.contains(&peer) {
                        record.unanswered_probes = record.unanswered_probes.saturating_add(1);
                    }
                    targets.push(peer);
                }
            }
            peers.retain(|address, _| known.contains(address));
        }
        self.spawn_heartbeats(targets);
    }
}

pub(super) fn log_liveness(change: &LivenessChange) {
    metrics::counter!(names::LIVENESS_CHANGES, "to" => change.to.as_str()).increment(1);
    match change.to {
        Liveness::Dead => info!(member = %change.address, "view change: member is dead"),
        Liveness::Left => info!(member = %change.address, "view change: member left"),
        Liveness::Suspect => info!(member = %change.address, "member is suspect"),
        Liveness::Alive => debug!(member = %change.address, "member alive"),
    }
}
