//! Gossip cost: bytes and messages each gossip round costs, idle and under
//! load, with few and with many keys. ARCHITECTURE.md says an idle round
//! costs bytes proportional to the number of replicas, not keys; this mode
//! checks it.
//!
//! Figures come from the replicas' own counters (see [`crate::metrics`]),
//! scraped at the start and end of a window: the bench cannot see
//! replica-to-replica traffic any other way without capturing packets.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::client::wait_visible;
use crate::cluster::{probe_client, ClusterArgs, LocalCluster};
use crate::load::{preload, Background, Workload};
use crate::metrics::{self, Scrape};

#[derive(clap::Args, Clone, Debug)]
pub struct GossipCostArgs {
    /// Store sizes to measure at (a fresh local cluster each).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100_000])]
    pub key_counts: Vec<u64>,
    /// Length of each measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub window: Duration,
    /// Sessions of the background load in the "loaded" phase (0: idle only).
    #[arg(long, default_value_t = 8)]
    pub load_sessions: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ReplicaCost {
    pub addr: String,
    /// Gossip rounds it started.
    pub rounds: f64,
    /// Bytes of gossip (pull/push) requests it served and its replies.
    pub gossip_bytes: f64,
    /// Gossip requests it served (each has a reply).
    pub gossip_requests: f64,
    /// Bytes of heartbeat requests it served and its replies.
    pub heartbeat_bytes: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct GossipCostResult {
    pub keys: u64,
    pub phase: String,
    pub replicas: usize,
    pub window_s: f64,
    /// Gossip rounds started per replica per second.
    pub rounds_per_s_per_replica: f64,
    /// Gossip bytes (requests and replies, all replicas) divided by gossip
    /// rounds (all replicas): what one round costs, both directions. Message
    /// bodies only; HTTP framing adds roughly 150 bytes per message.
    pub bytes_per_round: f64,
    /// Gossip messages (requests and replies) per round.
    pub messages_per_round: f64,
    /// Gossip bytes per replica per second, both directions.
    pub bytes_per_s_per_replica: f64,
    /// Heartbeat bytes per replica per second, both directions (failure
    /// detection, reported apart from gossip).
    pub heartbeat_bytes_per_s_per_replica: f64,
    pub background_ops_per_s: Option<f64>,
    pub per_replica: Vec<ReplicaCost>,
}

pub async fn run(
    args: &GossipCostArgs,
    cluster: &ClusterArgs,
    log_dir: &std::path::Path,
) -> Result<Vec<GossipCostResult>> {
    let mut out = Vec::new();
    for &keys in &args.key_counts {
        let local;
        let addrs = if cluster.targets.is_empty() {
            eprintln!(
                "gossip-cost: starting {} replicas for {keys} keys",
                cluster.replicas
            );
            local = LocalCluster::start(cluster.hearsay_spec(log_dir)?, cluster.replicas).await?;
            local.addrs()
        } else {
            cluster.targets.clone()
        };
        // Fail before spending time on a preload if there is nothing to read.
        let probe = probe_client();
        let first = metrics::scrape(&probe, &addrs[0]).await?;
        // Counters may only appear once first incremented, so give the
        // cluster a few rounds before judging that a name is missing.
        let mut first = first;
        for _ in 0..20 {
            if first.get(metrics::GOSSIP_ROUNDS).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            first = metrics::scrape(&probe, &addrs[0]).await?;
        }
        if first.get(metrics::GOSSIP_ROUNDS).is_none() {
            bail!(
                "{}/metrics has no {} counter: set the names in bench/src/metrics.rs",
                addrs[0],
                metrics::GOSSIP_ROUNDS
            );
        }
        let (last_key, last_value) = preload(&addrs, keys, 64, 32, args.seed, true).await?;
        // Idle must mean idle: wait until the preload has reached every replica.
        wait_visible(&addrs, &last_key, &last_value, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        out.push(measure(&addrs, keys, "idle", args.window).await?);
        if args.load_sessions > 0 {
            let w = Workload {
                sessions: args.load_sessions,
                read_ratio: 0.5,
                keys,
                no_preload: true,
                seed: args.seed,
                ..Workload::default()
            };
            let bg = Background::start(&addrs, &w);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let r = measure(&addrs, keys, "loaded", args.window).await;
            let load = bg.finish().await?;
            let mut r = r?;
            r.background_ops_per_s = Some(load.throughput);
            out.push(r);
        }
        for r in &out[out.len().saturating_sub(2)..] {
            eprintln!(
                "gossip-cost: {} keys {}: {:.0} B/round, {:.1} msgs/round, {:.1} rounds/s/replica",
                r.keys,
                r.phase,
                r.bytes_per_round,
                r.messages_per_round,
                r.rounds_per_s_per_replica
            );
        }
    }
    Ok(out)
}

async fn scrape_all(addrs: &[String]) -> Result<Vec<Scrape>> {
    let http = probe_client();
    let mut out = Vec::new();
    for a in addrs {
        out.push(metrics::scrape(&http, a).await?);
    }
    Ok(out)
}

async fn measure(
    addrs: &[String],
    keys: u64,
    phase: &str,
    window: Duration,
) -> Result<GossipCostResult> {
    let before = scrape_all(addrs).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = scrape_all(addrs).await?;
    let window_s = started.elapsed().as_secs_f64();
    let delta = |b: &Scrape, a: &Scrape, f: &dyn Fn(&Scrape) -> Option<f64>| {
        f(a).unwrap_or(0.0) - f(b).unwrap_or(0.0)
    };
    let kinds = |name: &'static str, kinds: &'static [&'static str]| {
        move |s: &Scrape| s.sum_label(name, metrics::KIND_LABEL, kinds)
    };
    let per_replica: Vec<ReplicaCost> = addrs
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(addr, (b, a))| ReplicaCost {
            addr: addr.clone(),
            rounds: delta(b, a, &|s| s.get(metrics::GOSSIP_ROUNDS)),
            gossip_bytes: delta(b, a, &kinds(metrics::INTERNAL_BYTES, metrics::GOSSIP_KINDS)),
            gossip_requests: delta(
                b,
                a,
                &kinds(metrics::INTERNAL_MESSAGES, metrics::GOSSIP_KINDS),
            ),
            heartbeat_bytes: delta(
                b,
                a,
                &kinds(metrics::INTERNAL_BYTES, metrics::HEARTBEAT_KINDS),
            ),
        })
        .collect();
    let rounds: f64 = per_replica.iter().map(|r| r.rounds).sum();
    let bytes: f64 = per_replica.iter().map(|r| r.gossip_bytes).sum();
    // Each request served has a reply: two messages.
    let msgs: f64 = per_replica.iter().map(|r| 2.0 * r.gossip_requests).sum();
    let heartbeat: f64 = per_replica.iter().map(|r| r.heartbeat_bytes).sum();
    let n = addrs.len() as f64;
    Ok(GossipCostResult {
        keys,
        phase: phase.into(),
        replicas: addrs.len(),
        window_s,
        rounds_per_s_per_replica: rounds / n / window_s,
        bytes_per_round: bytes / rounds.max(1.0),
        messages_per_round: msgs / rounds.max(1.0),
        bytes_per_s_per_replica: bytes / n / window_s,
        heartbeat_bytes_per_s_per_replica: heartbeat / n / window_s,
        background_ops_per_s: None,
        per_replica,
    })
}
