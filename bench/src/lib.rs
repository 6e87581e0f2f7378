//! hearsay-bench: measures a hearsay cluster beside a minimal "ceiling" server.
//!
//! Every throughput figure is taken side by side with the ceiling in the same
//! run, because the machines this runs on are shared and noisy: only ratios
//! measured together mean anything.
//!
//! The bench is a black-box client of the public HTTP API (`docs/API.md`)
//! and `GET /metrics`: it does not link the server's crate, only runs its
//! binary as child processes, so it measures exactly what a client gets and
//! can measure any store that speaks the same API.
//!
//! Module map. No module imports itself back through others: result types
//! flow one way, into [`report`], and helpers several modes share live in
//! modules that import no other bench module ([`fmt`], [`wait`], [`client`],
//! [`cluster`]).
//! - [`cluster`]: local child processes (hearsay replicas or the ceiling), readiness, signals, teardown.
//! - [`client`]: one client session speaking hearsay's JSON API (`docs/API.md`) and carrying its causal metadata.
//! - [`ceiling`]: the minimal in-memory axum server that bounds what any store could do here.
//! - [`load`]: the closed-loop load generator and its statistics.
//! - [`compare`]: the same workload against ceiling and hearsay, alternating, with ratios and spreads.
//! - [`convergence`], [`gossip_cost`], [`failover`], [`state_transfer`], [`durability`], [`acks`], [`memory`]: the other bench modes.
//! - [`metrics`]: scraping `GET /metrics` (Prometheus text) and the metric names we rely on.
//! - [`others`]: Redis and etcd, started beside hearsay when installed, for the same workload.
//! - [`noise`]: how much CPU other processes took during a run (shared machines).
//! - [`report`], [`plot`]: JSON/CSV/Markdown output and SVG plots.
//! - [`fmt`], [`wait`]: formatting of durations and bounded polling, shared by the modes.
//! - [`large`]: small clients' p99 and gossip convergence while one client writes 1 MB values.
//! - [`scale`]: throughput, convergence and gossip bytes per cluster size, one table.
//! - [`suite`]: the standard set, run against a local 3-replica cluster.

pub mod acks;
pub mod ceiling;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod convergence;
pub mod durability;
pub mod failover;
pub mod fmt;
pub mod gossip_cost;
pub mod large;
pub mod load;
pub mod memory;
pub mod metrics;
pub mod noise;
pub mod others;
pub mod plot;
pub mod report;
pub mod scale;
pub mod state_transfer;
pub mod suite;
pub mod wait;
