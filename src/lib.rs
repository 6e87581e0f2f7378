//! hearsay: a replicated, fault-tolerant, causally consistent key-value store.
//!
//! Code map (see `ARCHITECTURE.md` for data flow and invariants):
//!
//! * [`core`] — the pure replica: clocks, store, membership, exchange
//!   protocol, rules. No I/O.
//! * [`node`] — the shell: timers, peer choice, causal waits, life cycle.
//! * [`transport`] — how replicas reach each other (HTTP, or in memory).
//! * [`proto`] — replica-to-replica messages.
//! * [`api`] — the public HTTP API and operator endpoints.
//! * [`config`] — layered configuration with provenance.
//! * [`keyring`] — cluster keys: validation, keyring files, key ids.
//! * [`server`], [`cli`] — the binary's entry points; [`launcher`] — local
//!   replicas as child processes (`hearsay cluster`, the e2e harness).
//!
//! Private to the crate: `connections` (the accept loop: connection cap and
//! time bounds), `telemetry` (logs and Prometheus metrics) and `client` (the
//! command-line client behind `hearsay get/put/delete/view`).
//!
//! The public modules are what the binary, the simulations, the model check
//! and the end-to-end tests use; everything else is `pub(crate)` or private.

pub mod api;
pub mod cli;
mod client;
pub mod config;
mod connections;
#[warn(missing_docs)]
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod launcher;
pub mod node;
#[warn(missing_docs)]
pub mod proto;
pub mod server;
pub mod storage;
mod telemetry;
pub mod transport;
