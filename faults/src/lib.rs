//! Fault-injection harness for hearsay.
//!
//! A black-box client of the public HTTP API (`docs/API.md`) and of Docker:
//! it does not link the server's crate, so it sees only what any client of
//! the store sees (statuses, bodies, causal metadata) and can judge any
//! implementation of the same contract.
//!
//! The pieces, each in its own module:
//!
//! * [`history`] — the record of what client sessions did and saw;
//! * [`checker`] — causal-consistency and durability rules over a history
//!   (pure; unit-tested on hand-made histories);
//! * [`client`] — HTTP sessions that pass causal metadata along and record
//!   every operation;
//! * [`docker`] — a three-replica cluster in Docker and the commands that
//!   break it (stop, kill, pause, disconnect, iptables and tc in a
//!   container's network namespace);
//! * [`nemesis`] — faults, healing, and seeded schedules of them;
//! * [`scenario`] — one run: cluster, clients, schedule, convergence,
//!   verdict and summary line;
//! * [`wire`] — the cluster's random key and a capture of every frame on
//!   its bridge, proving the key never crosses the wire.
//!
//! The scenarios themselves live in `faults/tests/`, one test per fault
//! type plus a seeded random schedule; see `docs/FAULTS.md`.

pub mod checker;
pub mod client;
pub mod docker;
pub mod history;
pub mod nemesis;
pub mod scenario;
pub mod wire;
