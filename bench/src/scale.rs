//! Scale with N: for each cluster size, throughput beside the ceiling,
//! convergence in gossip rounds and gossip bytes per replica, in one table.
//!
//! Each size gets fresh clusters from the other modes ([`crate::compare`],
//! [`crate::convergence`], [`crate::gossip_cost`]); this module only runs
//! them per size and puts their figures side by side.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterArgs, LocalCluster};
use crate::compare::{compare, Spread};
use crate::convergence::{self, ConvergenceArgs, ConvergenceResult};
use crate::gossip_cost::{self, GossipCostArgs, GossipCostResult};
use crate::load::Workload;
use crate::noise::load_average;

#[derive(clap::Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5, 7, 9])]
    pub sizes: Vec<usize>,
    /// Throughput: measured time of each load run (90/10 mix, 64 sessions spread).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
    pub duration: Duration,
    /// Throughput: rounds of ceiling and hearsay per size (ABBA order).
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Convergence samples per size and phase.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// Keys in the store while gossip cost is measured.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Gossip cost: length of the idle and the loaded window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
    pub window: Duration,
    /// hearsay's gossip interval [default: from `hearsay config`, else 100 ms].
    #[arg(long)]
    pub gossip_interval_ms: Option<f64>,
}

/// One cluster size.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ScaleRow {
    pub replicas: usize,
    pub hearsay_ops_per_s: Option<Spread>,
    pub ceiling_ops_per_s: Option<Spread>,
    pub throughput_ratio: Option<Spread>,
    pub server_cpu_per_op_ratio: Option<Spread>,
    pub convergence: Vec<ConvergenceResult>,
    pub gossip: Vec<GossipCostResult>,
    /// ⌈log₂ N⌉ + 1: issue 14's bound on convergence p99, in rounds.
    pub goal_rounds: u32,
    /// The 1-minute load average when this size was done (shared machine).
    pub load_average: Option<f64>,
}

pub async fn run(args: &ScaleArgs, cluster: &ClusterArgs, log_dir: &Path) -> Result<Vec<ScaleRow>> {
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let sized = ClusterArgs {
            replicas: n,
            ..cluster.clone()
        };
        eprintln!("scale: {n} replicas");
        let w = Workload {
            read_ratio: 0.9,
            duration: args.duration,
            ..Workload::default()
        };
        let cmp = {
            let ceiling = LocalCluster::start(cluster.ceiling_spec(log_dir)?, 1).await?;
            let hearsay = LocalCluster::start(sized.hearsay_spec(log_dir)?, n).await?;
            compare(
                &format!("scale-{n}"),
                &w,
                Some(&ceiling.addrs()),
                Some(&hearsay.addrs()),
                args.repeat,
            )
            .await?
        };
        let conv = convergence::run(
            &ConvergenceArgs {
                sizes: vec![n],
                samples: args.samples,
                poll_interval: Duration::from_millis(5),
                sample_timeout: Duration::from_secs(10),
                load_sessions: 16,
                gossip_interval_ms: args.gossip_interval_ms,
                seed: 1,
            },
            &sized,
            log_dir,
        )
        .await?;
        let gossip = gossip_cost::run(
            &GossipCostArgs {
                key_counts: vec![args.keys],
                window: args.window,
                load_sessions: 8,
                seed: 1,
            },
            &sized,
            log_dir,
        )
        .await?;
        rows.push(ScaleRow {
            replicas: n,
            hearsay_ops_per_s: cmp.summary.hearsay_throughput.clone(),
            ceiling_ops_per_s: cmp.summary.ceiling_throughput.clone(),
            throughput_ratio: cmp.summary.throughput_ratio.clone(),
            server_cpu_per_op_ratio: cmp.summary.server_cpu_per_op_ratio.clone(),
            convergence: conv,
            gossip,
            goal_rounds: goal_rounds(n),
            load_average: load_average(),
        });
    }
    Ok(rows)
}

/// ⌈log₂ N⌉ + 1.
pub fn goal_rounds(n: usize) -> u32 {
    (n.max(1) as f64).log2().ceil() as u32 + 1
}

/// The table: one row per size.
pub fn summary_md(rows: &[ScaleRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Scale with N (90/10 mix at 64 sessions spread over the replicas; convergence with null metadata; gossip over {} keys)\n", rows.first().and_then(|r| r.gossip.first()).map_or(0, |g| g.keys));
    let _ = writeln!(s, "| replicas | hearsay ops/s | ratio to ceiling | server CPU/op ratio | conv. p99 rounds idle | conv. p99 rounds loaded | goal ⌈log₂N⌉+1 | gossip B/s/replica idle | gossip B/s/replica loaded | gossip B/round loaded | heartbeat B/s/replica | load avg |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let spread = |x: &Option<Spread>, d: usize| match x {
        Some(x) if x.n > 1 => format!("{:.d$} ({:.d$}–{:.d$})", x.mean, x.min, x.max),
        Some(x) => format!("{:.d$}", x.mean),
        None => "–".into(),
    };
    for r in rows {
        let conv = |phase: &str| {
            r.convergence
                .iter()
                .find(|c| c.phase.starts_with(phase))
                .map_or("–".into(), |c| format!("{:.2}", c.p99_rounds))
        };
        let gossip = |phase: &str| r.gossip.iter().find(|g| g.phase == phase);
        let num = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.replicas,
            spread(&r.hearsay_ops_per_s, 0),
            spread(&r.throughput_ratio, 2),
            spread(&r.server_cpu_per_op_ratio, 2),
            conv("idle"),
            conv("loaded"),
            r.goal_rounds,
            num(gossip("idle").map(|g| g.bytes_per_s_per_replica)),
            num(gossip("loaded").map(|g| g.bytes_per_s_per_replica)),
            num(gossip("loaded").map(|g| g.bytes_per_round)),
            num(gossip("idle").map(|g| g.heartbeat_bytes_per_s_per_replica)),
            r.load_average.map_or("–".into(), |v| format!("{v:.1}")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn goal_is_ceil_log2_plus_one() {
        assert_eq!([3, 5, 7, 9].map(super::goal_rounds), [3, 4, 4, 5]);
    }
}
