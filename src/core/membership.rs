//! Who is in the cluster, who is up, and what each member is known to hold.
//!
//! Two independent questions decide whether an address is in this replica's
//! view:
//!
//! * **Admission** — has the cluster (an operator's `PUT`/`DELETE /view`, or a
//!   replica announcing itself at start) admitted it? Admission records are
//!   versioned and spread with every heartbeat; the higher version wins and a
//!   tie goes to removal, so every replica ends with the same admissions.
//! * **Liveness** — has *this* replica heard from it lately? Each replica
//!   judges liveness from its own heartbeats only: alive, then suspect after
//!   `suspect_after`, then dead after `dead_after` of silence. Hearing from the
//!   member again refutes the suspicion at once. A member that said it is
//!   leaving is `Left` for that incarnation.
//!
//! The view is this replica plus every admitted member that is alive or
//! suspect. Incarnations (chosen by each process at start, increasing across
//! restarts) keep an old life from reappearing: messages from an incarnation
//! lower than the one known are ignored.
//!
//! The table also remembers, per member, the latest clock it reported. The
//! meet of those clocks is the *stability frontier*: tombstones below it are
//! held by every member and may be collected.
//!
//! Decisions are versioned by `admission_clock`, a Lamport-style counter: a new
//! decision takes the next value, and records heard from peers raise it. A
//! record whose version is more than [`MAX_ADMISSION_LEAP`] (2^40) beyond this
//! replica's counter is refused (it would otherwise win every later decision
//! about its address and leave no counter for new ones); should the counter
//! run out anyway, new decisions are refused ([`ViewChange::CounterExhausted`])
//! rather than wrap.
//!
//! The table is bounded: at most [`MAX_MEMBERS`] entries. A request from an
//! address that is not a member adds nothing (anyone can name any address;
//! only contact this replica made itself, or an admission decision, adds
//! one), senders no decision ever admitted are forgotten once dead past the
//! grace period, and when the table is full new addresses are refused while
//! decisions already taken stay.
//!
//! Pure: time is a millisecond count passed in by the caller.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clock::{Dot, VClock};

/// How far beyond this replica's decision counter an admission record's
/// version from a peer may be; anything further is refused.
pub const MAX_ADMISSION_LEAP: u64 = 1 << 40;

/// Most members one table holds (this replica included). Entries come from
/// the network (admission records, senders heard directly), so the table is
/// capped: when it is full, new addresses are refused — decisions already
/// taken are never evicted to make room — and an operator adding one more is
/// answered [`ViewChange::TableFull`].
pub const MAX_MEMBERS: usize = 1024;

/// Failure-detector timing, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Silence after which a member is suspect (still in the view).
    pub suspect_after_ms: u64,
    /// Silence after which a member is dead (out of the view).
    pub dead_after_ms: u64,
    /// How long a dead member still holds back tombstone collection; after
    /// that it is assumed gone and must resynchronise in full if it returns.
    pub dead_member_grace_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// How this replica judges a member from its own heartbeats.
pub enum Liveness {
    /// Heard from within `suspect_after`.
    Alive,
    /// Silent for `suspect_after`: still in the view.
    Suspect,
    /// Silent for `dead_after`: out of the view, probed now and then.
    Dead,
    /// Said goodbye (SIGTERM) in its current life.
    Left,
}

impl Liveness {
    /// The name used in `/members` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Left => "left",
        }
    }
}

/// A versioned admission decision about one address; spread by heartbeats.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Admission {
    /// The member's address.
    pub address: String,
    /// Admitted (`PUT /view`, a join) or removed (`DELETE /view`).
    pub admitted: bool,
    /// Orders decisions about one address: the greater wins, removal wins ties.
    pub version: u64,
}

impl Admission {
    /// A record made up for a sender we merely heard from: it decides nothing.
    fn is_placeholder(&self) -> bool {
        self.version == 0 && !self.admitted
    }

    /// Whether `self` should replace `other`: a real decision beats a
    /// placeholder; otherwise the higher version wins and removal wins ties.
    fn beats(&self, other: &Admission) -> bool {
        if other.is_placeholder() {
            return !self.is_placeholder();
        }
        (self.version, !self.admitted) > (other.version, !other.admitted)
    }
}

#[derive(Clone, Debug)]
/// What this replica knows of one member.
pub struct Member {
    /// Its address.
    pub address: String,
    /// `None` until we have heard from it.
    pub incarnation: Option<u64>,
    /// A random number the process behind that life chose at start, if it
    /// said: two processes that chose the same incarnation (a wall clock
    /// that stood still) are told apart by it.
    pub process: Option<u64>,
    /// Its liveness as judged here.
    pub liveness: Liveness,
    /// When it was last heard from (this replica's milliseconds).
    pub last_heard_ms: u64,
    /// The latest admission decision about it.
    pub admission: Admission,
    /// The latest clock it reported in its current incarnation.
    pub known_clock: VClock,
    /// What pushes from this replica that its current life acknowledged in
    /// full delivered (the pushes' guarantees). Only the basis of the next
    /// push — so that it does not resend what the peer already holds —,
    /// never evidence for the stability frontier, which counts only what a
    /// life reported itself.
    pub pushed_clock: VClock,
}

impl Member {
    /// Its state as `/members` and the `hearsay_members{state}` gauge name
    /// it: its liveness, or `never-heard` while no life of it has answered
    /// (the failure detector's verdict on an address that never spoke says
    /// nothing about a process there, so it is not shown as one).
    pub fn state_name(&self) -> &'static str {
        match self.incarnation {
            None => NEVER_HEARD,
            Some(_) => self.liveness.as_str(),
        }
    }
}

/// The `/members` state of an address no life of which has answered yet.
pub const NEVER_HEARD: &str = "never-heard";

/// A change of liveness worth logging once.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LivenessChange {
    /// The member.
    pub address: String,
    /// Its liveness before.
    pub from: Liveness,
    /// Its liveness now.
    pub to: Liveness,
}

/// What hearing from a member meant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Heard {
    /// A message from an incarnation older than the one known: ignore it.
    Stale,
    /// Known member, same life.
    /// Known member, same life; `revived` if it had been suspect or dead.
    Refreshed {
        /// It had been suspect or dead (and is admitted).
        revived: bool,
    },
    /// First contact or a restart.
    NewIncarnation,
    /// An address not in the table, which this contact may not add (a pull
    /// or push from a non-member, or a full table): nothing was recorded.
    Unknown,
}

#[derive(Debug)]
/// The member table of one replica: admissions, liveness, known clocks.
pub struct Membership {
    me: String,
    timing: Timing,
    members: BTreeMap<String, Member>,
    admission_clock: u64,
}

/// Outcome of an operator's view change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ViewChange {
    /// The address was not in the view and is now admitted.
    Added,
    /// The address is already in the view.
    AlreadyPresent,
    /// The address was in the view and is now removed.
    Deleted,
    /// The address is not in the view.
    Absent,
    /// The replica at the address holds another cluster's data: not added.
    OtherCluster,
    /// The decision counter is at its maximum: no new decision can be
    /// versioned above the existing ones, so none is taken.
    CounterExhausted,
    /// The member table holds [`MAX_MEMBERS`] entries already.
    TableFull,
}

/// What [`Membership::merge_admissions`] did with a peer's records.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct AdmissionMerge {
    /// Records that changed an address's admission.
    pub changed: Vec<Admission>,
    /// Records refused because their version is beyond [`MAX_ADMISSION_LEAP`].
    pub refused: usize,
}

impl Membership {
    /// A table for `me`, admitting every other address of `initial_view` and
    /// giving each a full `dead_after` of grace to show up.
    pub fn new(me: &str, initial_view: &[String], timing: Timing, now_ms: u64) -> Self {
        let mut table = Membership {
            me: me.to_string(),
            timing,
            members: BTreeMap::new(),
            admission_clock: 0,
        };
        for address in initial_view {
            if address != me {
                // Beyond the cap, the rest of the start-up view is ignored.
                let _ = table.upsert_admitted(address, 0, now_ms);
            }
        }
        table
    }

    /// Whether a new address may be added: the table is not full.
    fn has_room(&self) -> bool {
        self.members.len() < MAX_MEMBERS
    }

    /// Admits `address`; `false` (changing nothing) when it is new and the
    /// table is full.
    fn upsert_admitted(&mut self, address: &str, version: u64, now_ms: u64) -> bool {
        let record = Admission {
            address: address.to_string(),
            admitted: true,
            version,
        };
        let room = self.has_room();
        match self.members.get_mut(address) {
            Some(member) => {
                member.admission = record;
                if member.liveness != Liveness::Alive {
                    member.liveness = Liveness::Alive;
                    member.last_heard_ms = now_ms;
                }
            }
            None if room => {
                self.members
                    .insert(address.to_string(), Member::fresh(record, now_ms));
            }
            None => return false,
        }
        true
    }

    /// This replica's own address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The failure-detector timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// What is known of `address`, if anything.
    pub fn member(&self, address: &str) -> Option<&Member> {
        self.members.get(address)
    }

    /// Every known member (this replica too, once an operator removed it).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Admitted, heard from in some life, and alive or suspect. An admitted
    /// address that never answered is not in the view (it is only probed):
    /// nothing is known to run there.
    fn in_view(member: &Member) -> bool {
        member.admission.admitted
            && member.incarnation.is_some()
            && matches!(member.liveness, Liveness::Alive | Liveness::Suspect)
    }

    /// Whether an operator removed this replica from the cluster (and it has
    /// not been added back). It then lists only itself in its view and takes
    /// no writes, but keeps exchanging with its former peers so that it
    /// neither holds back their tombstone collection nor falls behind.
    pub fn removed(&self) -> bool {
        self.members
            .get(&self.me)
            .is_some_and(|m| !m.admission.admitted)
    }

    /// The sorted view: this replica and every admitted, live member (only
    /// this replica once it was removed).
    pub fn view(&self) -> Vec<String> {
        if self.removed() {
            return vec![self.me.clone()];
        }
        let mut view: Vec<String> = self
            .members
            .values()
            .filter(|m| Self::in_view(m))
            .map(|m| m.address.clone())
            .collect();
        view.push(self.me.clone());
        view.sort();
        view.dedup();
        view
    }

    /// Peers in the view (excluding this replica).
    pub fn live_peers(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| Self::in_view(m) && m.address != self.me)
            .map(|m| m.address.clone())
            .collect()
    }

    /// Admitted peers that are not in the view: probed now and then so that
    /// they can come back.
    pub fn absent_peers(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.admission.admitted && !Self::in_view(m) && m.address != self.me)
            .map(|m| m.address.clone())
            .collect()
    }

    /// Peers in the view whose current life reported a clock covering
    /// `clock`: where a replica behind a client's metadata can catch up.
    pub fn live_peers_covering(&self, clock: &VClock) -> Vec<String> {
        self.members
            .values()
            .filter(|m| Self::in_view(m) && m.address != self.me && m.known_clock.covers(clock))
            .map(|m| m.address.clone())
            .collect()
    }

    /// Every admitted peer, in the view or not: whom a starting replica
    /// announces itself to.
    pub fn admitted_peers(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.admission.admitted && m.address != self.me)
            .map(|m| m.address.clone())
            .collect()
    }

    /// Whether `address` is a member that has never answered (in any life).
    pub fn never_heard(&self, address: &str) -> bool {
        self.members
            .get(address)
            .is_some_and(|m| m.incarnation.is_none())
    }

    /// Records contact heard directly from `address` in its life
    /// `incarnation` (adding the address if there is room).
    pub fn heard_from(&mut self, address: &str, incarnation: u64, now_ms: u64) -> Heard {
        self.heard_from_process(address, incarnation, None, true, now_ms)
    }

    /// Records contact from `address` in its life `incarnation`, from the
    /// process that names itself `process` (digests do; exchanges do not).
    /// Another process claiming a life already known is stale: only a larger
    /// incarnation opens a new life.
    ///
    /// An address not in the table is added only when `may_add` (this
    /// replica reached it at that address itself, or it announced itself
    /// with a join) and the table has room; otherwise nothing is recorded
    /// ([`Heard::Unknown`]). Anyone can *name* an address in a request, so
    /// a request alone never grows the table.
    pub fn heard_from_process(
        &mut self,
        address: &str,
        incarnation: u64,
        process: Option<u64>,
        may_add: bool,
        now_ms: u64,
    ) -> Heard {
        if address == self.me {
            return Heard::Stale;
        }
        let addable = may_add && self.has_room();
        if !(self.members.contains_key(address) || addable) {
            return Heard::Unknown;
        }
        let member = self.members.entry(address.to_string()).or_insert_with(|| {
            Member::fresh(
                Admission {
                    address: address.to_string(),
                    admitted: false,
                    version: 0,
                },
                now_ms,
            )
        });
        let other_process = matches!((member.process, process), (Some(a), Some(b)) if a != b);
        match member.incarnation {
            Some(known) if incarnation < known => Heard::Stale,
            Some(known) if incarnation == known && other_process => Heard::Stale,
            Some(known) if incarnation == known => {
                member.process = member.process.or(process);
                member.last_heard_ms = member.last_heard_ms.max(now_ms);
                let revived = matches!(member.liveness, Liveness::Dead | Liveness::Suspect);
                if member.liveness != Liveness::Left {
                    member.liveness = Liveness::Alive;
                }
                Heard::Refreshed {
                    revived: revived && member.admission.admitted,
                }
            }
            _ => {
                member.incarnation = Some(incarnation);
                member.process = process;
                member.known_clock = VClock::new();
                member.pushed_clock = VClock::new();
                member.liveness = Liveness::Alive;
                member.last_heard_ms = now_ms;
                Heard::NewIncarnation
            }
        }
    }

    /// Records the clock that `address` reported in its life `incarnation`
    /// (only ever raises it). A clock from any other life than the one known
    /// is ignored: what one life holds says nothing about another.
    pub fn record_clock(&mut self, address: &str, incarnation: u64, clock: &VClock) {
        if let Some(member) = self.members.get_mut(address) {
            if member.incarnation == Some(incarnation) {
                member.known_clock.merge(clock);
            }
        }
    }

    /// The life of `address` known here and the clock it last reported.
    pub fn known_clock(&self, address: &str) -> Option<(u64, &VClock)> {
        let member = self.members.get(address)?;
        Some((member.incarnation?, &member.known_clock))
    }

    /// The life of `address` known here and what it holds as far as this
    /// replica can tell: the clock it reported joined with what pushes it
    /// acknowledged delivered. The basis of a push to it.
    pub fn push_basis(&self, address: &str) -> Option<(u64, VClock)> {
        let member = self.members.get(address)?;
        Some((
            member.incarnation?,
            member.known_clock.joined(&member.pushed_clock),
        ))
    }

    /// Whether `address`'s known life holds `write` as far as
    /// [`Membership::push_basis`] can tell (without building that clock).
    pub fn holds(&self, address: &str, write: &Dot) -> bool {
        self.members.get(address).is_some_and(|member| {
            member.incarnation.is_some()
                && (member.known_clock.covers_dot(write) || member.pushed_clock.covers_dot(write))
        })
    }

    /// Records that a push to `address`'s life `incarnation` was
    /// acknowledged in full and delivered what `delivered` covers (ignored
    /// for any other life).
    pub fn record_push(&mut self, address: &str, incarnation: u64, delivered: &VClock) {
        if let Some(member) = self.members.get_mut(address) {
            if member.incarnation == Some(incarnation) {
                member.pushed_clock.merge(delivered);
            }
        }
    }

    /// Marks `address` as gone for good in life `incarnation`, run by
    /// `process` if the leave names it.
    ///
    /// Only the life currently known of that address can leave, and only as
    /// the process known to run it: a leave names the sender's own life,
    /// which the receiver has heard from. A leave for an older, newer or
    /// never-heard life changes nothing (a forged leave with a huge
    /// incarnation would otherwise evict the address for good).
    pub fn mark_left(
        &mut self,
        address: &str,
        incarnation: u64,
        process: Option<u64>,
    ) -> Option<LivenessChange> {
        let member = self.members.get_mut(address)?;
        if member.incarnation != Some(incarnation) {
            return None;
        }
        if matches!((member.process, process), (Some(a), Some(b)) if a != b) {
            return None;
        }
        let from = member.liveness;
        member.liveness = Liveness::Left;
        (from != Liveness::Left).then(|| LivenessChange {
            address: address.to_string(),
            from,
            to: Liveness::Left,
        })
    }

    /// Advances the failure detector to `now_ms`; returns what changed.
    pub fn tick(&mut self, now_ms: u64) -> Vec<LivenessChange> {
        let Timing {
            suspect_after_ms,
            dead_after_ms,
            ..
        } = self.timing;
        let mut changes = Vec::new();
        for member in self.members.values_mut() {
            if member.liveness == Liveness::Left || member.address == self.me {
                continue;
            }
            let silence = now_ms.saturating_sub(member.last_heard_ms);
            let to = if silence >= dead_after_ms {
                Liveness::Dead
            } else if silence >= suspect_after_ms {
                Liveness::Suspect
            } else {
                Liveness::Alive
            };
            if to != member.liveness
                && !(to == Liveness::Alive && member.liveness == Liveness::Dead)
            {
                changes.push(LivenessChange {
                    address: member.address.clone(),
                    from: member.liveness,
                    to,
                });
                member.liveness = to;
            }
        }
        // A sender no decision ever admitted, dead or gone for longer than
        // the grace period, no longer counts anywhere (see
        // `stability_frontier`): forget it, so that senders that come and go
        // do not fill the table.
        let grace = self.timing.dead_member_grace_ms;
        let me = self.me.clone();
        self.members.retain(|address, m| {
            let forgotten = *address != me
                && m.admission.is_placeholder()
                && matches!(m.liveness, Liveness::Dead | Liveness::Left)
                && now_ms.saturating_sub(m.last_heard_ms) > grace;
            !forgotten
        });
        changes
    }

    /// The meet of `mine` and the clocks of every member that may still hold
    /// or produce data. Tombstones below it are everywhere they need to be.
    ///
    /// Every class of member has a rule:
    ///
    /// | member | counted |
    /// | --- | --- |
    /// | alive or suspect, admitted or not (a replica an operator removed may still run and write) | yes |
    /// | dead for at most the grace period, admitted or not | yes, with its last clock |
    /// | dead for longer than the grace period | no: it must take a snapshot if it returns |
    /// | left (said goodbye after handing off its writes) | no |
    /// | never heard from | yes, with an empty clock, until it is declared dead (it may be starting up); then no: nobody gave it data, and should it appear it takes a snapshot, which re-issues what it wrote that a collected delete may have beaten (`Replica::complete_snapshot`) |
    pub fn stability_frontier(&self, mine: &VClock, now_ms: u64) -> VClock {
        let mut frontier = mine.clone();
        for member in self.members.values() {
            if member.address == self.me {
                continue;
            }
            let gone = match member.liveness {
                Liveness::Left => true,
                Liveness::Dead => {
                    member.incarnation.is_none()
                        || now_ms.saturating_sub(member.last_heard_ms)
                            > self.timing.dead_member_grace_ms
                }
                Liveness::Alive | Liveness::Suspect => false,
            };
            if !gone {
                frontier.meet(&member.known_clock);
            }
        }
        frontier
    }
}

impl Member {
    fn fresh(admission: Admission, now_ms: u64) -> Self {
        Member {
            address: admission.address.clone(),
            incarnation: None,
            process: None,
            liveness: Liveness::Alive,
            last_heard_ms: now_ms,
            admission,
            known_clock: VClock::new(),
            pushed_clock: VClock::new(),
        }
    }
}

mod admission;
#[cfg(test)]
mod tests;
