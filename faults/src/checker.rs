//! Causal-consistency and durability checker for recorded histories.
//!
//! # Model
//!
//! Every PUT writes a value no other write uses, so a value read names the
//! write it came from. A DELETE that answered 200 (or got no answer) may have
//! written a tombstone; it is a write too, but one a read cannot name.
//!
//! A *session* is one chain of causal metadata: each request carries the
//! metadata of the session's last successful answer. Only successful
//! operations advance the chain: an operation that failed or got no answer
//! leaves the session's metadata as it was, so (for example) a PUT that
//! timed out is *not* in the causal past of the session's later operations,
//! even if the replica applied it.
//!
//! Happens-before over writes is built from session order and reads-from:
//! write `W` is in the causal past of operation `O` if `W` is a successful
//! earlier write of `O`'s session, or `O`'s session earlier read `W` or read a
//! write that had `W` in its own causal past, or earlier observed `W` (or a
//! delete that had `W` in its causal past) through a 404 — transitively.
//! A 404 `Key does not exist` (GET or DELETE) observes a DELETE `D` of its
//! key when the 404's `causal-metadata` covers, entry by entry, the metadata
//! `D`'s own answer carried: a client holding that metadata has `D` in its
//! causal past whatever replica it asks next. This is
//! computed as a fixpoint (reads may name writes of other sessions whose own
//! past is not final yet). The store's metadata may well carry *more* than
//! this (a replica may hand back its whole clock); since the checker only
//! ever uses a subset of what the store had to honour, every rule below is
//! sound: nothing it flags can be explained by the store's documented
//! freedoms.
//!
//! # What the store may do
//!
//! Concurrent writes to one key are resolved by last-writer-wins on a total
//! order that extends causality, so of two concurrent writes either may be
//! read. A 404 says which delete it saw only through its metadata (a key
//! that never existed, or whose tombstone was collected, adds nothing); a 503
//! ("causal dependencies not satisfied") is a failed operation, not a
//! violation.
//!
//! # Rules (each is a [`ViolationKind`])
//!
//! For a successful GET `R` of key `k` in session `S` returning the value of
//! write `X`, with `P` = causal past of `R`:
//!
//! * **phantom** — no write in the history has that value;
//! * **failed write read** — `X` was answered with an error (it must not
//!   have taken effect);
//! * **read from the future** — `X` was invoked after `R` completed;
//! * **stale read** — some write `W` to `k` in `P` has `X` in its causal
//!   past (`X` → `W`): `S` goes back to a value causally older than one it
//!   already depends on. Classified by how `W` entered `P`: `S`'s own write
//!   (read-your-writes), `S` read `W` itself or a later write of `k`, or
//!   observed through a 404 the DELETE `W` or a later one of `k` (monotonic
//!   reads — so a session that saw a delete must never read an older value
//!   again), `S` read a write whose session had written `W` before
//!   (monotonic writes), or through a chain of reads (writes-follow-reads);
//! * **arbitration flip** — two reads of `k` each had the other's value in
//!   their causal past (so both serving replicas held both writes) but
//!   picked different winners: the last-writer-wins order is not total.
//!
//! A GET answered 404, a PUT answered 201 `created` and a DELETE answered 404
//! all claim the replica held no live value of `k`. That is a violation
//! (**missing own or observed write**) only when some PUT `W` of `k` is in `P`
//! and no DELETE of `k` (successful or unanswered, invoked before the
//! operation completed) could beat `W` — that is, every such DELETE is in
//! `W`'s causal past. Otherwise a 404 carries no information.
//!
//! # Durability
//!
//! [`Checker::durability`] takes the values every replica agreed on after the
//! faults were healed and writes stopped. An acknowledged PUT `W` is lost if
//! the final value of its key is causally older than `W`, or the key is gone
//! although no DELETE could beat `W`; an acknowledged DELETE is lost if the
//! final value is causally older than it (a resurrected key). Losses of
//! writes acknowledged by a replica that was later SIGKILLed, and that no
//! other replica was ever seen to serve, are counted separately: such a
//! write may legitimately die with the only replica that had it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use crate::history::{History, Op, OpId, OpKind, Outcome, Reply};

/// Index of a write (a PUT or a possible tombstone) in [`Checker`]'s tables.
type WriteId = usize;

/// Which guarantee an operation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    ReadYourWrites,
    MonotonicReads,
    MonotonicWrites,
    WritesFollowReads,
    /// A stale read whose cause is none of the four session guarantees
    /// (kept for completeness; the fixpoint makes it unreachable).
    Causal,
    Phantom,
    FailedWriteRead,
    FutureRead,
    ArbitrationFlip,
    /// The same value was written twice: a harness bug, not a store bug.
    DuplicateValue,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ViolationKind::ReadYourWrites => "read-your-writes",
            ViolationKind::MonotonicReads => "monotonic-reads",
            ViolationKind::MonotonicWrites => "monotonic-writes",
            ViolationKind::WritesFollowReads => "writes-follow-reads",
            ViolationKind::Causal => "causal",
            ViolationKind::Phantom => "phantom-value",
            ViolationKind::FailedWriteRead => "failed-write-read",
            ViolationKind::FutureRead => "read-from-future",
            ViolationKind::ArbitrationFlip => "arbitration-flip",
            ViolationKind::DuplicateValue => "duplicate-value",
        };
        f.write_str(s)
    }
}

/// One broken rule, pointing at the operation that shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub op: OpId,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at op #{}: {}", self.kind, self.op, self.detail)
    }
}

/// An acknowledged write that is not in the converged state.
#[derive(Clone, Debug, PartialEq)]
pub struct LostWrite {
    pub op: OpId,
    /// True when the acknowledging replica was SIGKILLed afterwards and no
    /// other replica was seen serving the write: reported, not a failure.
    pub excused_by_kill: bool,
    pub detail: String,
}

/// Result of [`Checker::durability`].
#[derive(Clone, Debug, Default)]
pub struct Durability {
    /// Losses that are failures.
    pub lost: Vec<LostWrite>,
    /// Losses of writes that died with a SIGKILLed replica.
    pub lost_to_kill: Vec<LostWrite>,
    /// Converged values that no write, or only a failed write, produced.
    pub bad_final_values: Vec<String>,
}

/// Fixed-size set of write ids.
#[derive(Clone, Debug, PartialEq)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    fn new(len: usize) -> Self {
        BitSet {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn insert(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let fresh = self.words[w] & b == 0;
        self.words[w] |= b;
        fresh
    }

    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1u64 << (i % 64)) != 0
    }

    /// Adds `other`; true if anything was new.
    fn union_with(&mut self, other: &BitSet) -> bool {
        let mut changed = false;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            let n = *a | *b;
            changed |= n != *a;
            *a = n;
        }
        changed
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &word)| {
            (0..64)
                .filter(move |b| word & (1u64 << b) != 0)
                .map(move |b| wi * 64 + b)
        })
    }
}

#[derive(Clone, Debug)]
struct Write {
    op: OpId,
    key: String,
    /// `None` for a tombstone.
    value: Option<Value>,
}

/// Precomputed causal structure of one history; cheap to query.
pub struct Checker<'h> {
    history: &'h History,
    writes: Vec<Write>,
    write_of_op: HashMap<OpId, WriteId>,
    /// Value (as JSON text) to the PUT that wrote it.
    by_value: HashMap<String, WriteId>,
    duplicates: Vec<OpId>,
    /// Writes of each key, and possible tombstones of each key.
    by_key: HashMap<String, Vec<WriteId>>,
    tombstones: HashMap<String, Vec<WriteId>>,
    /// Causal past of each operation at its invocation.
    past: Vec<BitSet>,
    /// Operations of each session, in invocation order.
    sessions: BTreeMap<usize, Vec<OpId>>,
    /// For each 404 answer, the DELETEs its metadata shows it observed.
    observed_deletes: HashMap<OpId, Vec<WriteId>>,
}

/// Whether causal metadata `a` covers `b` entry by entry (both as the store
/// sends them: objects of origin to count). Anything else covers nothing.
fn metadata_covers(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    b.iter().all(|(origin, count)| {
        let have = a.get(origin).and_then(Value::as_u64);
        matches!((have, count.as_u64()), (Some(have), Some(need)) if have >= need)
    })
}

fn value_key(v: &Value) -> String {
    v.to_string()
}

impl<'h> Checker<'h> {
    /// Builds the happens-before relation of `history`.
    pub fn new(history: &'h History) -> Self {
        let ops = &history.ops;
        let mut writes = Vec::new();
        let mut write_of_op = HashMap::new();
        let mut by_value = HashMap::new();
        let mut duplicates = Vec::new();
        for (id, op) in ops.iter().enumerate() {
            let value = match (&op.kind, &op.outcome) {
                (OpKind::Put { value, .. }, _) => Some(value.clone()),
                // A DELETE that found nothing or was refused wrote no tombstone.
                (OpKind::Delete { .. }, Outcome::Ok(Reply::Deleted { existed: true }))
                | (OpKind::Delete { .. }, Outcome::Unknown(_)) => None,
                _ => continue,
            };
            let wid = writes.len();
            if let Some(v) = &value {
                if by_value.insert(value_key(v), wid).is_some() {
                    duplicates.push(id);
                }
            }
            writes.push(Write {
                op: id,
                key: op.kind.key().to_owned(),
                value,
            });
            write_of_op.insert(id, wid);
        }

        let mut sessions: BTreeMap<usize, Vec<OpId>> = BTreeMap::new();
        for (id, op) in ops.iter().enumerate() {
            sessions.entry(op.session).or_default().push(id);
        }
        for list in sessions.values_mut() {
            list.sort_by_key(|&id| (ops[id].invoke_us, id));
        }

        let mut by_key: HashMap<String, Vec<WriteId>> = HashMap::new();
        let mut tombstones: HashMap<String, Vec<WriteId>> = HashMap::new();
        for (w, write) in writes.iter().enumerate() {
            by_key.entry(write.key.clone()).or_default().push(w);
            if write.value.is_none() {
                tombstones.entry(write.key.clone()).or_default().push(w);
            }
        }

        // Which acknowledged DELETEs each 404 saw, by its metadata.
        let mut observed_deletes: HashMap<OpId, Vec<WriteId>> = HashMap::new();
        for (id, op) in ops.iter().enumerate() {
            let not_found = matches!(
                op.outcome,
                Outcome::Ok(Reply::Read(None) | Reply::Deleted { existed: false })
            );
            let Some(seen) = op.metadata.as_ref().filter(|_| not_found) else {
                continue;
            };
            let observed: Vec<WriteId> = tombstones
                .get(op.kind.key())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&d| {
                    let dop = &ops[writes[d].op];
                    dop.outcome.is_ok()
                        && dop
                            .metadata
                            .as_ref()
                            .is_some_and(|deleted| metadata_covers(seen, deleted))
                })
                .collect();
            if !observed.is_empty() {
                observed_deletes.insert(id, observed);
            }
        }

        let mut checker = Checker {
            history,
            by_key,
            tombstones,
            observed_deletes,
            past: vec![BitSet::new(writes.len()); ops.len()],
            writes,
            write_of_op,
            by_value,
            duplicates,
            sessions,
        };
        checker.compute_past();
        checker
    }

    /// The write a read's value names, if any.
    fn read_write(&self, op: &Op) -> Option<WriteId> {
        match &op.outcome {
            Outcome::Ok(Reply::Read(Some(v))) => self.by_value.get(&value_key(v)).copied(),
            _ => None,
        }
    }

    /// Fixpoint of session order + reads-from. Visiting operations in global
    /// invocation order settles almost everything in the first pass; later
    /// passes only pick up reads of writes invoked after the read.
    fn compute_past(&mut self) {
        let ops = &self.history.ops;
        let mut order: Vec<OpId> = (0..ops.len()).collect();
        order.sort_by_key(|&id| (ops[id].invoke_us, id));
        // Position of each op within its session.
        let mut prev_in_session: Vec<Option<OpId>> = vec![None; ops.len()];
        for list in self.sessions.values() {
            for pair in list.windows(2) {
                prev_in_session[pair[1]] = Some(pair[0]);
            }
        }
        // A generous bound: each pass extends every causal chain by at least
        // one cross-session hop, and chains are at most as long as the history.
        for _pass in 0..=ops.len() + 1 {
            let mut changed = false;
            for &id in &order {
                let Some(prev) = prev_in_session[id] else {
                    continue;
                };
                let after_prev = self.past_after(prev);
                changed |= self.past[id].union_with(&after_prev);
            }
            if !changed {
                return;
            }
        }
        unreachable!("causal past fixpoint did not converge");
    }

    /// Causal past of the session after `id` completed.
    fn past_after(&self, id: OpId) -> BitSet {
        let op = &self.history.ops[id];
        let mut set = self.past[id].clone();
        if let Outcome::Ok(reply) = &op.outcome {
            match reply {
                Reply::Written { .. } | Reply::Deleted { existed: true } => {
                    if let Some(&w) = self.write_of_op.get(&id) {
                        set.insert(w);
                    }
                }
                Reply::Read(Some(_)) => {
                    if let Some(w) = self.read_write(op) {
                        set.insert(w);
                        set.union_with(&self.past[self.writes[w].op]);
                    }
                }
                Reply::Read(None) | Reply::Deleted { existed: false } => {
                    for &d in self.observed_deletes.get(&id).into_iter().flatten() {
                        set.insert(d);
                        set.union_with(&self.past[self.writes[d].op]);
                    }
                }
            }
        }
        set
    }

    fn writes_of(&self, key: &str) -> &[WriteId] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    fn tombstones_of(&self, key: &str) -> &[WriteId] {
        self.tombstones.get(key).map_or(&[], Vec::as_slice)
    }

    /// Is write `a` in the causal past of write `b`?
    fn before(&self, a: WriteId, b: WriteId) -> bool {
        self.past[self.writes[b].op].contains(a)
    }

    /// All causal violations in the history.
    pub fn violations(&self) -> Vec<Violation> {
        let ops = &self.history.ops;
        let mut out = Vec::new();
        for &id in &self.duplicates {
            out.push(Violation {
                kind: ViolationKind::DuplicateValue,
                op: id,
                detail: format!("value written twice: {:?}", ops[id].kind),
            });
        }
        // (winner, loser) pairs some replica chose; see `ArbitrationFlip`.
        let mut beats: HashMap<(WriteId, WriteId), OpId> = HashMap::new();
        for (id, op) in ops.iter().enumerate() {
            let key = op.kind.key();
            match (&op.kind, &op.outcome) {
                (OpKind::Get { .. }, Outcome::Ok(Reply::Read(Some(v)))) => {
                    self.check_read_value(id, op, key, v, &mut beats, &mut out);
                }
                (OpKind::Get { .. }, Outcome::Ok(Reply::Read(None))) => {
                    self.check_absent(id, "GET answered 404", &mut out);
                }
                (OpKind::Put { .. }, Outcome::Ok(Reply::Written { created: true })) => {
                    self.check_absent(id, "PUT answered 201 created", &mut out);
                }
                (OpKind::Delete { .. }, Outcome::Ok(Reply::Deleted { existed: false })) => {
                    self.check_absent(id, "DELETE answered 404", &mut out);
                }
                _ => {}
            }
        }
        out
    }

    fn check_read_value(
        &self,
        id: OpId,
        op: &Op,
        key: &str,
        v: &Value,
        beats: &mut HashMap<(WriteId, WriteId), OpId>,
        out: &mut Vec<Violation>,
    ) {
        let Some(x) = self.by_value.get(&value_key(v)).copied() else {
            out.push(Violation {
                kind: ViolationKind::Phantom,
                op: id,
                detail: format!("GET {key} returned {v}, which no PUT wrote"),
            });
            return;
        };
        let xop = &self.history.ops[self.writes[x].op];
        if xop.kind.key() != key {
            out.push(Violation {
                kind: ViolationKind::Phantom,
                op: id,
                detail: format!("GET {key} returned {v}, written to key {}", xop.kind.key()),
            });
            return;
        }
        if let Outcome::Fail(why) = &xop.outcome {
            out.push(Violation {
                kind: ViolationKind::FailedWriteRead,
                op: id,
                detail: format!(
                    "GET {key} returned {v} from op #{} which failed ({why})",
                    self.writes[x].op
                ),
            });
        }
        if xop.invoke_us > op.complete_us {
            out.push(Violation {
                kind: ViolationKind::FutureRead,
                op: id,
                detail: format!(
                    "GET {key} returned {v} before its PUT (op #{}) was sent",
                    self.writes[x].op
                ),
            });
        }
        // Stale: a write of this key in our past that X is causally before.
        let past = &self.past[id];
        let mut best: Option<(ViolationKind, WriteId)> = None;
        for &w in self.writes_of(key) {
            if w == x || !past.contains(w) {
                continue;
            }
            if self.before(x, w) {
                let kind = self.classify(id, w);
                if best.is_none_or(|(k, _)| kind < k) {
                    best = Some((kind, w));
                }
            } else if !self.before(w, x) && self.writes[w].value.is_some() {
                // Concurrent and both held by the serving replica: it chose X.
                if let Some(&other) = beats.get(&(w, x)) {
                    out.push(Violation {
                        kind: ViolationKind::ArbitrationFlip,
                        op: id,
                        detail: format!(
                            "GET {key} chose {v} over {} although op #{other} chose the opposite \
                             with both writes in its causal past",
                            self.describe_write(w)
                        ),
                    });
                }
                beats.entry((x, w)).or_insert(id);
            }
        }
        if let Some((kind, w)) = best {
            out.push(Violation {
                kind,
                op: id,
                detail: format!(
                    "session {} GET {key} at {} returned {v} (op #{}), causally older than {} \
                     which it had already observed",
                    op.session,
                    op.replica,
                    self.writes[x].op,
                    self.describe_write(w)
                ),
            });
        }
    }

    fn describe_write(&self, w: WriteId) -> String {
        let write = &self.writes[w];
        match &write.value {
            Some(v) => format!("{v} (op #{})", write.op),
            None => format!("the DELETE of {} (op #{})", write.key, write.op),
        }
    }

    /// An answer that says the key had no live value at the replica.
    fn check_absent(&self, id: OpId, what: &str, out: &mut Vec<Violation>) {
        let op = &self.history.ops[id];
        let key = op.kind.key();
        let past = &self.past[id];
        let mut best: Option<(ViolationKind, WriteId)> = None;
        for &w in self.writes_of(key) {
            if !past.contains(w) || self.writes[w].value.is_none() {
                continue;
            }
            let beatable = self.tombstones_of(key).iter().any(|&d| {
                self.history.ops[self.writes[d].op].invoke_us <= op.complete_us
                    && !self.before(d, w)
            });
            if !beatable {
                let kind = self.classify(id, w);
                if best.is_none_or(|(k, _)| kind < k) {
                    best = Some((kind, w));
                }
            }
        }
        if let Some((kind, w)) = best {
            out.push(Violation {
                kind,
                op: id,
                detail: format!(
                    "session {} {what} at {} for {key}, but it had observed {} and no DELETE \
                     could have overwritten it",
                    op.session,
                    op.replica,
                    self.describe_write(w)
                ),
            });
        }
    }

    /// How write `w` entered the causal past of operation `id`.
    fn classify(&self, id: OpId, w: WriteId) -> ViolationKind {
        let ops = &self.history.ops;
        let op = &ops[id];
        let wop = &ops[self.writes[w].op];
        let key = &self.writes[w].key;
        let earlier: Vec<OpId> = self.sessions[&op.session]
            .iter()
            .copied()
            .filter(|&o| ops[o].invoke_us < op.invoke_us && ops[o].outcome.is_ok())
            .collect();
        if wop.session == op.session && earlier.contains(&self.writes[w].op) {
            return ViolationKind::ReadYourWrites;
        }
        // Read W itself, or a later write of the same key.
        let read_it = earlier.iter().any(|&o| {
            self.read_write(&ops[o])
                .is_some_and(|y| y == w || (&self.writes[y].key == key && self.before(w, y)))
        });
        // Or saw, in a 404, the delete W or a later delete of the key.
        let saw_deleted = earlier.iter().any(|o| {
            self.observed_deletes
                .get(o)
                .into_iter()
                .flatten()
                .any(|&d| d == w || (&self.writes[d].key == key && self.before(w, d)))
        });
        if read_it || saw_deleted {
            return ViolationKind::MonotonicReads;
        }
        // The first read (or 404 that saw a delete) that brought W in: did
        // its writer write W itself?
        for &o in &earlier {
            let observed = self
                .read_write(&ops[o])
                .into_iter()
                .chain(self.observed_deletes.get(&o).into_iter().flatten().copied());
            for y in observed {
                if self.before(w, y) {
                    let yop = &ops[self.writes[y].op];
                    return if wop.session == yop.session && wop.invoke_us < yop.invoke_us {
                        ViolationKind::MonotonicWrites
                    } else {
                        ViolationKind::WritesFollowReads
                    };
                }
            }
        }
        ViolationKind::Causal
    }

    /// Checks the converged state (`final_values`: key to value, `None` for
    /// absent) against the acknowledged writes. `kills` lists
    /// (replica, time in µs) of every SIGKILL.
    pub fn durability(
        &self,
        final_values: &BTreeMap<String, Option<Value>>,
        kills: &[(String, u64)],
    ) -> Durability {
        let ops = &self.history.ops;
        let mut report = Durability::default();
        // Which write each converged value came from (None: key absent).
        let mut final_write: HashMap<&str, Option<WriteId>> = HashMap::new();
        for (key, fin) in final_values {
            let Some(v) = fin else {
                final_write.insert(key, None);
                continue;
            };
            match self.by_value.get(&value_key(v)) {
                Some(&x) if self.writes[x].key == *key => {
                    if let Outcome::Fail(why) = &ops[self.writes[x].op].outcome {
                        report.bad_final_values.push(format!(
                            "{key}: converged on {v}, the value of op #{} which failed ({why})",
                            self.writes[x].op
                        ));
                    }
                    final_write.insert(key, Some(x));
                }
                _ => report.bad_final_values.push(format!(
                    "{key}: converged on {v}, which no PUT of that key wrote"
                )),
            }
        }
        for (w, write) in self.writes.iter().enumerate() {
            let op = &ops[write.op];
            if !op.outcome.is_ok() {
                continue;
            }
            let Some(&fx) = final_write.get(write.key.as_str()) else {
                continue;
            };
            let lost = match (&write.value, fx) {
                (Some(_), Some(x)) => (x != w && self.before(x, w)).then(|| {
                    format!(
                        "acknowledged PUT {} of {} lost: converged on older {}",
                        self.describe_write(w),
                        write.key,
                        self.describe_write(x)
                    )
                }),
                (Some(_), None) => {
                    let beatable = self
                        .tombstones_of(&write.key)
                        .iter()
                        .any(|&d| !self.before(d, w));
                    (!beatable).then(|| {
                        format!(
                            "acknowledged PUT {} of {} lost: key absent everywhere and no DELETE \
                             could have overwritten it",
                            self.describe_write(w),
                            write.key
                        )
                    })
                }
                (None, Some(x)) => self.before(x, w).then(|| {
                    format!(
                        "acknowledged {} lost: key came back with older {}",
                        self.describe_write(w),
                        self.describe_write(x)
                    )
                }),
                (None, None) => None,
            };
            if let Some(detail) = lost {
                let excused = self.died_with_kill(w, kills);
                let lw = LostWrite {
                    op: write.op,
                    excused_by_kill: excused,
                    detail,
                };
                if excused {
                    report.lost_to_kill.push(lw);
                } else {
                    report.lost.push(lw);
                }
            }
        }
        report
    }

    /// Was `w`'s replica SIGKILLed after acknowledging it, with no sign that
    /// `w` ever reached another replica?
    fn died_with_kill(&self, w: WriteId, kills: &[(String, u64)]) -> bool {
        let ops = &self.history.ops;
        let wop = &ops[self.writes[w].op];
        let killed = kills
            .iter()
            .any(|(r, t)| *r == wop.replica && *t >= wop.complete_us);
        if !killed {
            return false;
        }
        // Another replica that answered a request whose causal past held
        // `w` must have had `w` (or it broke causality, which the causal
        // rules report); so did one that served a read of `w`.
        let seen_elsewhere = ops.iter().enumerate().any(|(id, o)| {
            o.replica != wop.replica
                && o.outcome.is_ok()
                && (self.past[id].contains(w)
                    || self
                        .read_write(o)
                        .is_some_and(|y| y == w || self.before(w, y)))
        });
        !seen_elsewhere
    }
}

/// Counts violations by kind, for summaries.
pub fn count_by_kind(violations: &[Violation]) -> BTreeMap<ViolationKind, usize> {
    let mut counts = BTreeMap::new();
    for v in violations {
        *counts.entry(v.kind).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    //! Hand-made histories: each rule is shown one history that breaks it
    //! and the checker must name that rule; valid histories must pass clean.

    use super::*;
    use crate::history::Op;
    use serde_json::json;
    use std::time::Duration;

    /// Builds histories; ops are sequential (each 10 µs) unless timed by hand.
    #[derive(Default)]
    struct H {
        ops: Vec<Op>,
        clock: u64,
    }

    const R: &str = "alice";

    impl H {
        fn push(&mut self, session: usize, kind: OpKind, outcome: Outcome) -> &mut Self {
            let t = self.clock;
            self.clock += 10;
            self.at(session, kind, outcome, t, t + 5)
        }
        fn at(
            &mut self,
            session: usize,
            kind: OpKind,
            outcome: Outcome,
            inv: u64,
            done: u64,
        ) -> &mut Self {
            self.ops.push(Op {
                session,
                kind,
                replica: R.into(),
                invoke_us: inv,
                complete_us: done,
                outcome,
                metadata: None,
            });
            self
        }
        /// Sets the `causal-metadata` the last op's answer carried.
        fn meta(&mut self, metadata: Value) -> &mut Self {
            self.ops.last_mut().expect("an op").metadata = Some(metadata);
            self
        }
        fn put(&mut self, s: usize, k: &str, v: &str) -> &mut Self {
            self.push(s, put(k, v), Outcome::Ok(Reply::Written { created: false }))
        }
        fn get(&mut self, s: usize, k: &str, v: Option<&str>) -> &mut Self {
            self.push(s, get(k), Outcome::Ok(Reply::Read(v.map(|v| json!(v)))))
        }
        fn del(&mut self, s: usize, k: &str) -> &mut Self {
            self.push(
                s,
                OpKind::Delete { key: k.into() },
                Outcome::Ok(Reply::Deleted { existed: true }),
            )
        }
        fn history(&self) -> History {
            History {
                ops: self.ops.clone(),
            }
        }
    }

    fn put(k: &str, v: &str) -> OpKind {
        OpKind::Put {
            key: k.into(),
            value: json!(v),
        }
    }
    fn get(k: &str) -> OpKind {
        OpKind::Get { key: k.into() }
    }

    fn kinds(h: &H) -> Vec<ViolationKind> {
        let hist = h.history();
        let mut k: Vec<_> = Checker::new(&hist)
            .violations()
            .iter()
            .map(|v| v.kind)
            .collect();
        k.sort();
        k.dedup();
        k
    }

    #[test]
    fn valid_single_session() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .get(1, "a", Some("a1"))
            .put(1, "a", "a2")
            .get(1, "a", Some("a2"));
        h.get(1, "b", None)
            .del(1, "a")
            .get(1, "a", None)
            .put(1, "a", "a3")
            .get(1, "a", Some("a3"));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn read_your_writes_stale_value() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .put(1, "a", "a2")
            .get(1, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn read_your_writes_missing() {
        let mut h = H::default();
        h.put(1, "a", "a1").get(1, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn read_your_delete() {
        let mut h = H::default();
        h.put(1, "a", "a1").del(1, "a").get(1, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn created_over_own_write() {
        let mut h = H::default();
        h.put(1, "a", "a1");
        h.push(
            1,
            put("a", "a2"),
            Outcome::Ok(Reply::Written { created: true }),
        );
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn monotonic_reads() {
        let mut h = H::default();
        h.put(1, "a", "a1").put(1, "a", "a2");
        h.get(2, "a", Some("a2")).get(2, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicReads]);
    }

    #[test]
    fn monotonic_reads_missing() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .get(2, "a", Some("a1"))
            .get(2, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicReads]);
    }

    #[test]
    fn monotonic_writes() {
        let mut h = H::default();
        h.put(1, "a", "a1").put(1, "a", "a2").put(1, "b", "b1");
        h.get(2, "b", Some("b1")).get(2, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicWrites]);
    }

    #[test]
    fn monotonic_writes_missing() {
        let mut h = H::default();
        h.put(1, "a", "a1").put(1, "b", "b1");
        h.get(2, "b", Some("b1")).get(2, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicWrites]);
    }

    #[test]
    fn writes_follow_reads() {
        let mut h = H::default();
        h.put(1, "a", "a1").put(1, "a", "a2");
        h.get(2, "a", Some("a2")).put(2, "b", "b1");
        h.get(3, "b", Some("b1")).get(3, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::WritesFollowReads]);
    }

    #[test]
    fn writes_follow_reads_missing() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .get(2, "a", Some("a1"))
            .put(2, "b", "b1");
        h.get(3, "b", Some("b1")).get(3, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::WritesFollowReads]);
    }

    #[test]
    fn fixpoint_reads_write_invoked_after_read() {
        // Session 2's read of b is invoked before b1's PUT (it waited at the
        // replica); the causal past of b1 must still reach session 2.
        let mut h = H::default();
        h.at(
            1,
            put("a", "a1"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            5,
        );
        h.at(
            2,
            get("b"),
            Outcome::Ok(Reply::Read(Some(json!("b1")))),
            6,
            100,
        );
        h.at(
            1,
            put("b", "b1"),
            Outcome::Ok(Reply::Written { created: true }),
            10,
            20,
        );
        h.at(2, get("a"), Outcome::Ok(Reply::Read(None)), 110, 120);
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicWrites]);
    }

    #[test]
    fn phantom_value() {
        let mut h = H::default();
        h.put(1, "a", "a1").get(2, "a", Some("zzz"));
        assert_eq!(kinds(&h), vec![ViolationKind::Phantom]);
        let mut h = H::default();
        h.put(1, "a", "a1").get(2, "b", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::Phantom]);
    }

    #[test]
    fn failed_write_read() {
        let mut h = H::default();
        h.push(1, put("a", "a1"), Outcome::Fail("503".into()));
        h.get(2, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::FailedWriteRead]);
    }

    #[test]
    fn future_read() {
        let mut h = H::default();
        h.at(
            2,
            get("a"),
            Outcome::Ok(Reply::Read(Some(json!("a1")))),
            0,
            5,
        );
        h.at(
            1,
            put("a", "a1"),
            Outcome::Ok(Reply::Written { created: true }),
            10,
            20,
        );
        assert_eq!(kinds(&h), vec![ViolationKind::FutureRead]);
    }

    #[test]
    fn duplicate_values_are_a_harness_error() {
        let mut h = H::default();
        h.put(1, "a", "x").put(2, "a", "x");
        assert_eq!(kinds(&h), vec![ViolationKind::DuplicateValue]);
    }

    #[test]
    fn concurrent_writes_either_value() {
        let mut h = H::default();
        h.at(
            1,
            put("a", "a1"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        h.at(
            2,
            put("a", "a2"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        h.at(
            3,
            get("a"),
            Outcome::Ok(Reply::Read(Some(json!("a1")))),
            20,
            30,
        );
        h.at(
            4,
            get("a"),
            Outcome::Ok(Reply::Read(Some(json!("a2")))),
            20,
            30,
        );
        // Session 3 moves on to the other value: allowed, it is no older.
        h.at(
            3,
            get("a"),
            Outcome::Ok(Reply::Read(Some(json!("a2")))),
            40,
            50,
        );
        // Session 1 sees the other session's concurrent write: allowed.
        h.at(
            1,
            get("a"),
            Outcome::Ok(Reply::Read(Some(json!("a2")))),
            40,
            50,
        );
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn arbitration_flip() {
        let mut h = H::default();
        h.at(
            1,
            put("a", "a1"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        h.at(
            2,
            put("a", "a2"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        // Reading a2 with a1 in its past says a2 wins; a replica holding
        // both must not pick a1 later.
        h.get(3, "a", Some("a1"))
            .get(3, "a", Some("a2"))
            .get(3, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::ArbitrationFlip]);
    }

    #[test]
    fn not_found_is_no_information_with_a_concurrent_delete() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .get(2, "a", Some("a1"))
            .del(2, "a")
            .get(1, "a", None);
        assert_eq!(kinds(&h), vec![]);
        // An unanswered DELETE may have happened too.
        let mut h = H::default();
        h.put(1, "a", "a1");
        h.push(
            2,
            OpKind::Delete { key: "a".into() },
            Outcome::Unknown("timeout".into()),
        );
        h.get(1, "a", None);
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn delete_before_write_cannot_explain_not_found() {
        let mut h = H::default();
        h.put(1, "a", "a0")
            .del(1, "a")
            .put(1, "a", "a1")
            .get(1, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn failed_and_unknown_ops_do_not_advance_the_session() {
        let mut h = H::default();
        h.push(1, put("a", "a1"), Outcome::Unknown("timeout".into()));
        h.get(1, "a", None); // the write may not have happened
        h.push(1, get("a"), Outcome::Fail("503".into()));
        h.get(2, "a", Some("a1")); // or it did
                                   // Once read, a1 is in session 1's past like any other write.
        h.get(1, "a", Some("a1"));
        h.get(1, "a", None);
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicReads]);
    }

    #[test]
    fn a_404_covering_a_delete_makes_an_older_value_a_stale_read() {
        // Session 1 writes a1 then deletes a at one replica; session 2 is
        // told 404 with metadata covering the delete, then reads a1 at a
        // replica that had not had the delete: monotonic reads broken.
        let mut h = H::default();
        h.put(1, "a", "a1").meta(json!({"r1@1": 1}));
        h.del(1, "a").meta(json!({"r1@1": 2}));
        h.get(2, "a", None).meta(json!({"r1@1": 2, "r2@1": 5}));
        h.get(2, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicReads]);
        // The same through a DELETE answered 404.
        let mut h = H::default();
        h.put(1, "a", "a1").meta(json!({"r1@1": 1}));
        h.del(1, "a").meta(json!({"r1@1": 2}));
        h.push(
            2,
            OpKind::Delete { key: "a".into() },
            Outcome::Ok(Reply::Deleted { existed: false }),
        )
        .meta(json!({"r1@1": 2}));
        h.get(2, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicReads]);
    }

    #[test]
    fn a_404_that_does_not_cover_a_delete_observes_nothing() {
        let mut h = H::default();
        h.put(1, "a", "a1").meta(json!({"r1@1": 1}));
        h.del(1, "a").meta(json!({"r1@1": 2}));
        // Metadata short of the delete (another replica's 404, or one from
        // a store that sends none): reading a1 afterwards is allowed.
        h.get(2, "a", None).meta(json!({"r1@1": 1}));
        h.get(2, "a", Some("a1"));
        h.get(3, "a", None);
        h.get(3, "a", Some("a1"));
        // A 404 of another key observes no delete of this one.
        h.get(4, "b", None).meta(json!({"r1@1": 2}));
        h.get(4, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_delete_observed_in_a_404_passes_on_its_causal_past() {
        // The delete followed session 1's write of b1: once session 2 saw
        // the delete, b0 (older than b1) is stale too — session 1 wrote b1
        // and then the delete, so this is monotonic writes.
        let mut h = H::default();
        h.put(1, "b", "b0").meta(json!({"r1@1": 1}));
        h.put(1, "b", "b1").meta(json!({"r1@1": 2}));
        h.put(1, "a", "a1").meta(json!({"r1@1": 3}));
        h.del(1, "a").meta(json!({"r1@1": 4}));
        h.get(2, "a", None).meta(json!({"r1@1": 4}));
        h.get(2, "b", Some("b0"));
        assert_eq!(kinds(&h), vec![ViolationKind::MonotonicWrites]);
    }

    #[test]
    fn read_your_writes_holds_across_404_answers() {
        // A 404 in between (here of another key) does not let the session
        // lose its own write.
        let mut h = H::default();
        h.put(1, "a", "a1").meta(json!({"r1@1": 1}));
        h.put(1, "a", "a2").meta(json!({"r1@1": 2}));
        h.get(1, "b", None).meta(json!({"r1@1": 2}));
        h.get(1, "a", Some("a1"));
        assert_eq!(kinds(&h), vec![ViolationKind::ReadYourWrites]);
    }

    #[test]
    fn metadata_covers_entry_by_entry() {
        let m = json!({"a@1": 2, "b@1": 1});
        assert!(metadata_covers(&m, &json!({"a@1": 2})));
        assert!(metadata_covers(&m, &json!({})));
        assert!(!metadata_covers(&m, &json!({"a@1": 3})));
        assert!(!metadata_covers(&m, &json!({"c@1": 1})));
        assert!(!metadata_covers(&json!(null), &json!({})));
    }

    fn fin(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Value>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| json!(v))))
            .collect()
    }

    #[test]
    fn durability_accepts_converged_state() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .put(1, "a", "a2")
            .put(2, "b", "b1")
            .del(2, "b");
        let hist = h.history();
        let d = Checker::new(&hist).durability(&fin(&[("a", Some("a2")), ("b", None)]), &[]);
        assert!(
            d.lost.is_empty() && d.lost_to_kill.is_empty() && d.bad_final_values.is_empty(),
            "{d:?}"
        );
    }

    #[test]
    fn durability_concurrent_loser_is_not_lost() {
        let mut h = H::default();
        h.at(
            1,
            put("a", "a1"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        h.at(
            2,
            put("a", "a2"),
            Outcome::Ok(Reply::Written { created: true }),
            0,
            10,
        );
        let hist = h.history();
        let d = Checker::new(&hist).durability(&fin(&[("a", Some("a1"))]), &[]);
        assert!(d.lost.is_empty(), "{d:?}");
    }

    #[test]
    fn durability_finds_lost_writes() {
        let mut h = H::default();
        h.put(1, "a", "a1")
            .put(1, "a", "a2")
            .put(1, "b", "b1")
            .put(1, "c", "c1")
            .del(1, "c");
        let hist = h.history();
        let c = Checker::new(&hist);
        let d = c.durability(
            &fin(&[("a", Some("a1")), ("b", None), ("c", Some("c1"))]),
            &[],
        );
        let lost: Vec<OpId> = d.lost.iter().map(|l| l.op).collect();
        assert_eq!(lost, vec![1, 2, 4], "{d:?}");
        assert!(d.lost_to_kill.is_empty());
    }

    #[test]
    fn durability_excuses_writes_that_died_with_a_killed_replica() {
        let mut h = H::default();
        h.put(1, "a", "a1");
        let hist = h.history();
        let c = Checker::new(&hist);
        let kills = vec![("alice".to_string(), 100)];
        let d = c.durability(&fin(&[("a", None)]), &kills);
        assert!(d.lost.is_empty());
        assert_eq!(d.lost_to_kill.len(), 1);
        // Killed before the write: no excuse.
        let d = c.durability(&fin(&[("a", None)]), &[("alice".to_string(), 0)]);
        assert_eq!(d.lost.len(), 1);
        // Another replica served it, so it had spread: no excuse.
        let mut h = H::default();
        h.put(1, "a", "a1");
        h.ops.push(Op {
            replica: "bob".into(),
            ..h.ops[0].clone()
        });
        h.ops[1].kind = get("a");
        h.ops[1].outcome = Outcome::Ok(Reply::Read(Some(json!("a1"))));
        let hist = h.history();
        let d = Checker::new(&hist).durability(&fin(&[("a", None)]), &kills);
        assert_eq!(d.lost.len(), 1, "{d:?}");
    }

    #[test]
    fn durability_flags_bad_final_values() {
        let mut h = H::default();
        h.push(1, put("a", "a1"), Outcome::Fail("503".into()));
        let hist = h.history();
        let d = Checker::new(&hist).durability(&fin(&[("a", Some("a1")), ("b", Some("zz"))]), &[]);
        assert_eq!(d.bad_final_values.len(), 2, "{d:?}");
    }

    /// A single-copy store that applies each operation atomically produces
    /// only causally consistent histories: the checker must accept every
    /// one of them (no false positives), and quickly at suite scale.
    #[test]
    fn histories_of_a_single_copy_store_pass() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..3u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut store: BTreeMap<String, Value> = BTreeMap::new();
            let mut h = H::default();
            let mut n = 0;
            for _ in 0..6_000 {
                let s = rng.random_range(0..6);
                let k = format!("k{}", rng.random_range(0..8));
                match rng.random_range(0..100) {
                    0..45 => {
                        let v = store.get(&k).cloned();
                        h.push(s, get(&k), Outcome::Ok(Reply::Read(v)));
                    }
                    45..92 => {
                        n += 1;
                        let v = json!(format!("v{n}"));
                        let created = store.insert(k.clone(), v.clone()).is_none();
                        h.push(
                            s,
                            OpKind::Put { key: k, value: v },
                            Outcome::Ok(Reply::Written { created }),
                        );
                    }
                    _ => {
                        let existed = store.remove(&k).is_some();
                        h.push(
                            s,
                            OpKind::Delete { key: k },
                            Outcome::Ok(Reply::Deleted { existed }),
                        );
                    }
                }
            }
            let hist = h.history();
            let started = std::time::Instant::now();
            let c = Checker::new(&hist);
            assert_eq!(c.violations(), vec![], "seed {seed}");
            let fin: BTreeMap<String, Option<Value>> = (0..8)
                .map(|i| format!("k{i}"))
                .map(|k| (k.clone(), store.get(&k).cloned()))
                .collect();
            let d = c.durability(&fin, &[]);
            assert!(d.lost.is_empty() && d.bad_final_values.is_empty(), "{d:?}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "checker too slow: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn bitset_basics() {
        let mut a = BitSet::new(130);
        assert!(a.insert(0) && a.insert(129) && !a.insert(129));
        let mut b = BitSet::new(130);
        b.insert(64);
        assert!(a.union_with(&b) && !a.union_with(&b));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 64, 129]);
        assert!(a.contains(64) && !a.contains(1));
    }
}
