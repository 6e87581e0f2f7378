//! hearsay: a replicated, fault-tolerant, causally consistent key-value store.
//!
//! Code map (see `ARCHITECTURE.md` for data flow and invariants):
//!
//! * [`core`] — the pure replica: clocks, store, membership, rules. No I/O.
//! * [`node`] — the shell: timers, peer choice, causal waits, life cycle.
//! * [`transport`] — how replicas reach each other (HTTP, or in memory).
//! * [`proto`] — replica-to-replica messages.
//! * [`api`] — the public HTTP API and operator endpoints.
//! * [`config`] — layered configuration with provenance.
//! * [`connections`] — the accept loop: connection cap and time bounds.
//! * [`telemetry`] — logs and Prometheus metrics.
//! * [`server`], [`cli`], [`client`] — the binary's entry points and its
//!   command-line client.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod connections;
#[warn(missing_docs)]
pub mod core;
pub mod launcher;
pub mod node;
#[warn(missing_docs)]
pub mod proto;
pub mod server;
pub mod telemetry;
pub mod transport;
