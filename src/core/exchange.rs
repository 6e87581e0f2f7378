//! The exchange protocol: how two replica *lives* bring each other up to date.
//!
//! Pure state machines; the shell ([`crate::node`]) only carries the messages
//! they produce and feeds back what comes back.
//!
//! * **Pull** ([`Pull`]): the requester sends its clock; the peer answers with
//!   chunks of what the requester lacks (or of everything, for a snapshot),
//!   cut in stamp order, each naming the peer's life and carrying the peer's
//!   [`Covers`]. The requester keeps the `Covers` of the first chunk and
//!   adopts it once the last chunk has arrived.
//! * **Push** ([`Push`]): the sender computes what a peer's life lacks from the
//!   clock that life reported (the *basis*) and sends it in chunks; the last
//!   chunk may carry the sender's `Covers` together with the basis.
//!
//! # Lives, not addresses
//!
//! Every message names the life (`address@incarnation`) of its sender, and
//! every message computed against a particular life of the receiver names that
//! life too. A replica refuses a message meant for another of its lives, and
//! a pull that meets a different life of its peer part-way is abandoned, never
//! merged: a clock, a cursor or a `Covers` learned from one life says nothing
//! about another. What a replica knows of a peer's clock is kept per life
//! ([`crate::core::Membership`] resets it on a new incarnation).
//!
//! # What a `Covers` claim may make a replica adopt
//!
//! A replica raises its clock to a sender's `Covers` only when the transfer
//! proves it holds everything that clock covers:
//!
//! * a pull: every chunk was computed against the requester's own clock (it
//!   sent it), from one life of the peer, in stamp order from the first chunk
//!   to the last; if the peer asks for a snapshot part-way, the pull starts
//!   over as a snapshot (cursor, first `Covers` and key list all reset);
//! * a push: only if the receiver's clock covers the basis the sender computed
//!   its delta against (the receiver then holds everything the basis covers,
//!   and the push carried the rest), and only in the life the push names.
//!
//! # Deltas only from peers at or above our horizon
//!
//! A replica collects a tombstone once every member it counts holds it (see
//! [`crate::core::Membership::stability_frontier`]). A peer whose clock does
//! not cover the collector's horizon may still hold a version that lost to
//! such a tombstone; applied here, where the tombstone is gone, it would
//! bring the key back. So versions are taken from a push or a delta pull only
//! if the sender's clock (in the message) covers the receiver's horizon: by
//! reflection at the sender, every version it holds of a collected key then
//! beats the collected tombstone. A peer below the horizon is sent to a
//! snapshot instead, which drops what the sender deleted and collected.
//!
//! Why chunks in stamp order keep *reflection* (I1, see [`crate::core::replica`]):
//! every write the first `Covers` claims is, at the sender, either sent
//! already (stamp ≤ cursor) or still there with a greater stamp — or was
//! overwritten by a version with a greater stamp still, which is then sent.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::clock::VClock;
use super::membership::Heard;
use super::replica::{Replica, SnapshotApplied};
use super::store::{packed, Key, Stamp, Version};

/// Upper bound on chunks in one transfer (with 1 MiB chunks far beyond any
/// store one process can hold); a peer that never finishes is abandoned.
pub const MAX_CHUNKS_PER_TRANSFER: usize = 100_000;

/// One life of one replica.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Life {
    /// The replica's address (`IP:PORT`), its identity in the view.
    pub address: String,
    /// Which life of that address; strictly increasing across restarts.
    pub incarnation: u64,
}

impl std::fmt::Display for Life {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.address, self.incarnation)
    }
}

/// What the sender of a transfer guarantees once every chunk has arrived.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Covers {
    /// Every write the sender holds (or holds something that beats).
    pub clock: VClock,
    /// The sender's Lamport time: at least that of every write `clock` covers.
    pub lamport: u64,
    /// The sender's stability horizon. A snapshot receiver adopts it: the
    /// snapshot carries no trace of the tombstones collected below it, so the
    /// receiver must send stale peers to a snapshot just as the sender does.
    pub horizon: VClock,
}

/// Asks a peer for the next chunk of what the requester lacks.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PullRequest {
    /// The requesting life.
    pub from: Life,
    /// The peer's incarnation this pull is bound to (from its first chunk);
    /// `None` on the first request.
    pub to: Option<u64>,
    /// The requester's clock: the basis of the delta.
    pub clock: VClock,
    /// Ask for everything (a state transfer) rather than what `clock` lacks.
    pub snapshot: bool,
    /// The stamp of the last version received so far; `None` at the start.
    pub cursor: Option<Stamp>,
}

/// One chunk of a pull answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PullChunk {
    /// The answering life.
    pub from: Life,
    #[serde(with = "packed")]
    /// Versions in stamp order, at most about the sender's message size.
    pub entries: Vec<Version>,
    /// Pass back as the cursor to get the next chunk; `None` on the last one.
    pub next: Option<Stamp>,
    /// The sender's clock and Lamport time now. The receiver keeps the value
    /// from the first chunk and adopts it when the last chunk has arrived.
    pub covers: Covers,
    /// The receiver's clock does not cover the sender's horizon (it may miss
    /// collected tombstones): only a full snapshot can bring it up to date.
    pub snapshot_required: bool,
}

/// Versions a peer's life lacks; the last chunk may carry a guarantee.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PushRequest {
    /// The sending life.
    pub from: Life,
    /// The receiver's incarnation whose clock the delta was computed against.
    pub to: u64,
    /// The sender's clock when the push was computed. The receiver takes no
    /// versions from a sender whose clock is below its horizon (see
    /// [`Refusal::SenderBelowHorizon`]).
    pub clock: VClock,
    #[serde(with = "packed")]
    /// Versions the receiver lacks, in stamp order.
    pub entries: Vec<Version>,
    /// On the last chunk, unless the receiver is below the sender's horizon.
    pub completion: Option<PushCompletion>,
}

/// The end of a push: what the sender guarantees, and the receiver's clock
/// that guarantee was computed against.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PushCompletion {
    /// What the sender guarantees once every chunk has arrived.
    pub covers: Covers,
    /// The receiver's clock that the delta was computed against.
    pub basis: VClock,
}

/// Why a replica refused an exchange message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The sender's life is older than one the receiver has heard from.
    #[error("the sender's life is stale; the receiver knows incarnation {known}")]
    StaleSender {
        /// The newest incarnation of the sender's address the receiver knows.
        known: u64,
    },
    /// The message was computed against another life of the receiver.
    #[error("the message was meant for another life; the receiver is {life}")]
    WrongReceiver {
        /// The receiver's current life.
        life: Life,
    },
    /// The sender's clock does not cover the receiver's stability horizon: it
    /// may hold versions that lost to tombstones the receiver has collected,
    /// so it must take a snapshot before the receiver takes its data.
    #[error("the sender is below the receiver's horizon and must take a snapshot")]
    SenderBelowHorizon,
    /// The sender holds data of another cluster than the receiver.
    #[error("the receiver belongs to another cluster ({cluster:016x}) and holds data")]
    OtherCluster {
        /// The receiver's cluster identity.
        cluster: u64,
    },
}

/// Why an exchange was abandoned.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("peer refused: {0}")]
    /// The peer refused a message of the exchange.
    Refused(#[from] Refusal),
    #[error("chunk from {got}, but the pull is bound to {expected}")]
    /// A chunk came from another life than the one the pull is bound to.
    WrongLife {
        /// The life of the pull's first chunk.
        expected: Life,
        /// The life this chunk came from.
        got: Life,
    },
    #[error("answer from {got} to a pull sent to {expected}")]
    /// A chunk came from another address than the pull was sent to.
    WrongPeer {
        /// The address the pull was sent to.
        expected: String,
        /// The address the chunk names.
        got: String,
    },
    #[error("peer asked for a snapshot inside a snapshot")]
    /// A snapshot answer asked for a snapshot.
    SnapshotLoop,
    #[error("peer is below our horizon: its delta may undo collected deletes")]
    /// The peer's clock does not cover our horizon, so its delta is refused.
    PeerBelowHorizon,
    #[error("transfer exceeded {MAX_CHUNKS_PER_TRANSFER} chunks")]
    /// The transfer did not end within [`MAX_CHUNKS_PER_TRANSFER`] chunks.
    TooManyChunks,
}

/// The requester's side of one pull from one peer.
#[derive(Debug)]
pub struct Pull {
    peer: String,
    bound: Option<Life>,
    snapshot: bool,
    cursor: Option<Stamp>,
    first: Option<Covers>,
    snapshot_keys: HashSet<Key>,
    chunks: usize,
    refused: usize,
}

/// What one chunk did to a pull.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PullStep {
    /// Ask for the next chunk ([`Pull::request`]).
    More,
    /// The pull is complete and its guarantee adopted.
    Done(PullDone),
}

#[derive(Clone, PartialEq, Eq, Debug)]
/// How a completed pull ended.
pub struct PullDone {
    /// The answering life.
    pub peer: Life,
    /// Whether it ended as a snapshot (asked for, or required by the peer).
    pub snapshot: bool,
    /// Keys in the snapshot (0 for a delta).
    pub snapshot_keys: usize,
    /// Local versions dropped because the peer had deleted and collected them.
    pub dropped: usize,
    /// Local values re-issued as new writes because a delete the peer
    /// collected may have beaten them (see [`Replica::complete_snapshot`]).
    pub reissued: usize,
}

impl Pull {
    /// A pull from `peer`: a delta, or everything when `snapshot`.
    pub fn new(peer: &str, snapshot: bool) -> Self {
        Pull {
            peer: peer.to_string(),
            bound: None,
            snapshot,
            cursor: None,
            first: None,
            snapshot_keys: HashSet::new(),
            chunks: 0,
            refused: 0,
        }
    }

    /// Versions the peer sent that were refused (malformed, or beyond the
    /// counter bounds) since the last call.
    pub fn take_refused(&mut self) -> usize {
        std::mem::take(&mut self.refused)
    }

    /// The next request to send.
    pub fn request(&self, replica: &Replica) -> PullRequest {
        PullRequest {
            from: replica.life(),
            to: self.bound.as_ref().map(|life| life.incarnation),
            clock: replica.clock().clone(),
            snapshot: self.snapshot,
            cursor: self.cursor.clone(),
        }
    }

    /// Takes in one chunk: records the peer life's clock, applies the
    /// versions, and on the last chunk adopts the first chunk's guarantee.
    pub fn on_chunk(
        &mut self,
        replica: &mut Replica,
        chunk: PullChunk,
        now_ms: u64,
    ) -> Result<PullStep, ExchangeError> {
        if chunk.from.address != self.peer {
            return Err(ExchangeError::WrongPeer {
                expected: self.peer.clone(),
                got: chunk.from.address,
            });
        }
        if let Some(bound) = &self.bound {
            if *bound != chunk.from {
                return Err(ExchangeError::WrongLife {
                    expected: bound.clone(),
                    got: chunk.from,
                });
            }
        }
        self.chunks += 1;
        if self.chunks > MAX_CHUNKS_PER_TRANSFER {
            return Err(ExchangeError::TooManyChunks);
        }
        replica.hear(&chunk.from, now_ms)?;
        replica.members.record_clock(
            &chunk.from.address,
            chunk.from.incarnation,
            &chunk.covers.clock,
        );
        if chunk.snapshot_required {
            if self.snapshot {
                return Err(ExchangeError::SnapshotLoop);
            }
            // Start over as a snapshot: nothing learned so far belongs to it.
            self.snapshot = true;
            self.cursor = None;
            self.first = None;
            self.snapshot_keys.clear();
            self.bound = Some(chunk.from);
            return Ok(PullStep::More);
        }
        // A delta from a peer that has not seen everything we collected may
        // carry versions that lost to tombstones we no longer hold; only a
        // snapshot (which replaces our state) may come from such a peer.
        if !self.snapshot && !chunk.covers.clock.covers(replica.horizon()) {
            return Err(ExchangeError::PeerBelowHorizon);
        }
        self.bound.get_or_insert_with(|| chunk.from.clone());
        let first = self.first.get_or_insert_with(|| chunk.covers.clone());
        if self.snapshot {
            self.snapshot_keys
                .extend(chunk.entries.iter().map(|v| v.key.clone()));
        }
        self.refused += replica.apply_versions(chunk.entries).refused;
        match chunk.next {
            Some(next) => {
                self.cursor = Some(next);
                Ok(PullStep::More)
            }
            None => {
                let first = first.clone();
                let applied = if self.snapshot {
                    replica.complete_snapshot(&first, &self.snapshot_keys)
                } else {
                    replica.complete_transfer(&first);
                    SnapshotApplied::default()
                };
                Ok(PullStep::Done(PullDone {
                    peer: chunk.from,
                    snapshot: self.snapshot,
                    snapshot_keys: self.snapshot_keys.len(),
                    dropped: applied.dropped,
                    reissued: applied.reissued,
                }))
            }
        }
    }
}

/// The sender's side of one push to one life of a peer.
#[derive(Debug)]
pub struct Push {
    to: Life,
    basis: VClock,
    covers: Covers,
    cursor: Option<Stamp>,
    finished: bool,
    /// The last chunk carried the guarantee.
    completed: bool,
    chunks: usize,
}

impl Push {
    /// A push of what `peer`'s current life lacks according to the clock that
    /// life last reported and what earlier pushes to it delivered
    /// ([`Membership::push_basis`](super::membership::Membership::push_basis));
    /// `None` when that covers our clock already or no life of the peer is
    /// known.
    pub fn start(replica: &Replica, peer: &str) -> Option<Push> {
        let (incarnation, basis) = replica.members.push_basis(peer)?;
        if basis.covers(replica.clock()) {
            return None;
        }
        Some(Push {
            to: Life {
                address: peer.to_string(),
                incarnation,
            },
            basis,
            covers: replica.guarantee(),
            cursor: None,
            finished: false,
            completed: false,
            chunks: 0,
        })
    }

    /// Once every chunk was produced and the last carried the guarantee:
    /// what the peer's life holds when it has acknowledged them all — for
    /// every write this clock covers, that write or one that beats it (the
    /// basis covered the rest, and the chunks carried every version of
    /// ours the basis lacked). `None` for a push that is not done, or whose
    /// peer was below our horizon (it gets no guarantee and must take a
    /// snapshot).
    pub fn delivered(&self) -> Option<&VClock> {
        (self.finished && self.completed).then_some(&self.covers.clock)
    }

    /// The life this push is computed for.
    pub fn to(&self) -> &Life {
        &self.to
    }

    /// The next chunk to send, or `None` once the last one was produced.
    pub fn next_request(
        &mut self,
        replica: &Replica,
        max_bytes: usize,
    ) -> Result<Option<PushRequest>, ExchangeError> {
        if self.finished {
            return Ok(None);
        }
        self.chunks += 1;
        if self.chunks > MAX_CHUNKS_PER_TRANSFER {
            return Err(ExchangeError::TooManyChunks);
        }
        let (entries, next) = replica
            .store()
            .delta(&self.basis, self.cursor.as_ref(), max_bytes);
        let completion = match &next {
            Some(_) => None,
            // A peer below our horizon may miss collected tombstones: it gets
            // the versions but no guarantee, and must take a snapshot.
            None if self.basis.covers(replica.horizon()) => Some(PushCompletion {
                covers: self.covers.clone(),
                basis: self.basis.clone(),
            }),
            None => None,
        };
        self.finished = next.is_none();
        self.completed = completion.is_some();
        self.cursor = next;
        Ok(Some(PushRequest {
            from: replica.life(),
            to: self.to.incarnation,
            clock: self.covers.clock.clone(),
            entries,
            completion,
        }))
    }
}

/// What a replica did with a push.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PushApplied {
    /// Versions that changed the store.
    pub changed: usize,
    /// Versions refused as malformed or beyond the counter bounds.
    pub refused: usize,
    /// Whether the push's guarantee was adopted.
    pub adopted: bool,
}

impl Replica {
    /// This replica's current life.
    pub fn life(&self) -> Life {
        Life {
            address: self.address().to_string(),
            incarnation: self.incarnation(),
        }
    }

    /// The guarantee this replica can give about its current state.
    pub fn guarantee(&self) -> Covers {
        Covers {
            clock: self.clock().clone(),
            lamport: self.lamport(),
            horizon: self.horizon().clone(),
        }
    }

    /// Answers a pull from a peer: the next chunk of what it lacks (or of
    /// everything, for a snapshot), and records the clock it reported.
    pub fn answer_pull(
        &mut self,
        request: &PullRequest,
        now_ms: u64,
        max_bytes: usize,
    ) -> Result<PullChunk, Refusal> {
        self.hear_request(&request.from, now_ms)?;
        if request.to.is_some_and(|to| to != self.incarnation()) {
            return Err(Refusal::WrongReceiver { life: self.life() });
        }
        if !request.snapshot {
            self.members.record_clock(
                &request.from.address,
                request.from.incarnation,
                &request.clock,
            );
        }
        let covers = self.guarantee();
        let from = self.life();
        if !request.snapshot && !request.clock.covers(self.horizon()) {
            return Ok(PullChunk {
                from,
                entries: Vec::new(),
                next: None,
                covers,
                snapshot_required: true,
            });
        }
        let empty = VClock::new();
        let basis = if request.snapshot {
            &empty
        } else {
            &request.clock
        };
        let (entries, next) = self
            .store()
            .delta(basis, request.cursor.as_ref(), max_bytes);
        Ok(PullChunk {
            from,
            entries,
            next,
            covers,
            snapshot_required: false,
        })
    }

    /// Takes in a push: applies its versions, and adopts its guarantee only
    /// if it names this life and this replica's clock covers its basis.
    pub fn accept_push(&mut self, push: PushRequest, now_ms: u64) -> Result<PushApplied, Refusal> {
        self.hear_request(&push.from, now_ms)?;
        if push.to != self.incarnation() {
            return Err(Refusal::WrongReceiver { life: self.life() });
        }
        if !push.clock.covers(self.horizon()) {
            return Err(Refusal::SenderBelowHorizon);
        }
        let report = self.apply_versions(push.entries);
        let adopted = match &push.completion {
            Some(completion) if self.clock().covers(&completion.basis) => {
                self.complete_transfer(&completion.covers);
                true
            }
            _ => false,
        };
        Ok(PushApplied {
            changed: report.changed,
            refused: report.refused,
            adopted,
        })
    }

    /// Records contact from `life`, reached at its address by this replica
    /// (an answer to our own request); refuses a life older than one known.
    pub fn hear(&mut self, life: &Life, now_ms: u64) -> Result<Heard, Refusal> {
        self.hear_process(life, None, true, now_ms)
    }

    /// Records contact from `life` as the sender of a request: refuses a
    /// life older than one known, and records nothing about an address that
    /// is not a member (anyone can name any address in a request).
    pub fn hear_request(&mut self, life: &Life, now_ms: u64) -> Result<Heard, Refusal> {
        self.hear_process(life, None, false, now_ms)
    }

    /// Records contact from `life` as run by the process `process` (a
    /// digest names it); refuses a life older than one known, or the same
    /// incarnation run by another process. A new address is added only if
    /// `may_add` (see [`crate::core::Membership::heard_from_process`]).
    pub fn hear_process(
        &mut self,
        life: &Life,
        process: Option<u64>,
        may_add: bool,
        now_ms: u64,
    ) -> Result<Heard, Refusal> {
        match self.members.heard_from_process(
            &life.address,
            life.incarnation,
            process,
            may_add,
            now_ms,
        ) {
            Heard::Stale => Err(Refusal::StaleSender {
                known: self
                    .members
                    .member(&life.address)
                    .and_then(|m| m.incarnation)
                    .unwrap_or(life.incarnation),
            }),
            heard => Ok(heard),
        }
    }
}

mod in_process;
pub use in_process::{pull_all, push_all};

#[cfg(test)]
mod tests;
