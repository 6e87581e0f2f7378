//! Client histories: what every session asked, of which replica, when, and
//! what came back.
//!
//! This module owns the data model the checker reads ([`Op`], [`OpKind`],
//! [`Outcome`]) and the thread-safe [`Recorder`] that client sessions append
//! to while faults are injected. It knows nothing about HTTP or Docker, so
//! the checker's unit tests can build histories by hand.
//!
//! Times are microseconds since the recorder was created (one monotonic
//! clock for all sessions), so "invoked before completed" comparisons across
//! sessions are meaningful.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Index of an operation in a [`History`].
pub type OpId = usize;

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpKind {
    /// `PUT /kvs/<key>` with a value no other write in the history uses.
    Put { key: String, value: Value },
    /// `GET /kvs/<key>`.
    Get { key: String },
    /// `DELETE /kvs/<key>`.
    Delete { key: String },
}

impl OpKind {
    /// The key the operation is about.
    pub fn key(&self) -> &str {
        match self {
            OpKind::Put { key, .. } | OpKind::Get { key } | OpKind::Delete { key } => key,
        }
    }
}

/// What a successful answer said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// PUT answered 201 (`created == true`) or 200.
    Written { created: bool },
    /// GET answered 200 with this value, or 404 (`None`).
    Read(Option<Value>),
    /// DELETE answered 200 (`existed == true`) or 404 `Key does not exist`.
    /// A 404's metadata ([`Op::metadata`]) may cover a delete: the session
    /// has then observed it.
    Deleted { existed: bool },
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The replica answered with a success (or the documented 404).
    Ok(Reply),
    /// Definitely had no effect: an error status such as 503, or the
    /// connection was refused before anything was sent.
    Fail(String),
    /// No answer (timeout, connection reset after sending): a write may or
    /// may not have taken effect.
    Unknown(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// One completed client operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Client session (one causal-metadata chain).
    pub session: usize,
    pub kind: OpKind,
    /// Name of the replica the request was sent to.
    pub replica: String,
    /// Microseconds since the recorder started.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    /// The `causal-metadata` of a successful answer (404s included), as the
    /// replica sent it; `None` when it carried none.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// A whole recorded history, ops in the order they were recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Counts of (ok, fail, unknown) outcomes.
    pub fn outcome_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for op in &self.ops {
            match op.outcome {
                Outcome::Ok(_) => counts.0 += 1,
                Outcome::Fail(_) => counts.1 += 1,
                Outcome::Unknown(_) => counts.2 += 1,
            }
        }
        counts
    }

    /// Every key any operation touched, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.ops.iter().map(|o| o.kind.key().to_owned()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Shared, append-only recorder. Cloning shares the same history.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Microseconds since the recorder was created.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The instant all recorded times are relative to.
    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn record(&self, op: Op) {
        // A poisoned lock only means another session panicked mid-push; the
        // history is still a valid list of whole ops.
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> History {
        History {
            ops: self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
