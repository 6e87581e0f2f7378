//! Convergence: how long after a write is acknowledged by one replica it is
//! visible on every other, with no client carrying metadata across (so what
//! is measured is gossip, not the causal pull a client's metadata triggers).
//!
//! Each sample writes a fresh key at a random replica, takes the instant of
//! the acknowledgement, then polls every other replica with `null` metadata
//! until it returns that value; the sample is the slowest replica's time.
//! Samples run one after another so polling stays a light load; "loaded"
//! samples run beside a background read/write load.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::client::{Outcome, Session};
use crate::cluster::{wait_views, ClusterArgs, LocalCluster};
use crate::load::{random_value, Background, Workload};

#[derive(clap::Args, Clone, Debug)]
pub struct ConvergenceArgs {
    /// Cluster sizes to measure (local clusters; ignored with --targets).
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5, 7])]
    pub sizes: Vec<usize>,
    /// Writes measured per cluster size and phase.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// How often each replica is polled for the written value.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5ms")]
    pub poll_interval: Duration,
    /// A sample not visible everywhere by then counts as not converged.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub sample_timeout: Duration,
    /// Sessions of the background load in the "loaded" phase (0: idle only).
    #[arg(long, default_value_t = 16)]
    pub load_sessions: usize,
    /// hearsay's gossip interval, to express times in rounds
    /// [default: from `hearsay config` with the replicas' settings, else 100 ms].
    #[arg(long)]
    pub gossip_interval_ms: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ConvergenceResult {
    pub replicas: usize,
    pub phase: String,
    pub samples: usize,
    pub converged: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub gossip_interval_ms: f64,
    /// Where the interval came from.
    pub gossip_interval_source: String,
    pub p50_rounds: f64,
    pub p99_rounds: f64,
    /// ⌈log2 N⌉ + 2, the project's goal for p99.
    pub goal_rounds: u32,
    pub meets_goal: bool,
    /// Throughput of the background load, when there was one.
    pub background_ops_per_s: Option<f64>,
    pub samples_ms: Vec<f64>,
}

/// The gossip interval: the flag, else what `hearsay config` reports for the
/// replicas' settings, else the documented default of 100 ms.
pub fn gossip_interval(flag: Option<f64>, cluster: &ClusterArgs) -> (f64, String) {
    if let Some(ms) = flag {
        return (ms, "--gossip-interval-ms".into());
    }
    match cluster
        .hearsay_setting("gossip_interval_ms")
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(ms) => (ms, "`hearsay config`".into()),
        None => (100.0, "assumed default".into()),
    }
}

pub fn goal_rounds(n: usize) -> u32 {
    (n.max(1) as f64).log2().ceil() as u32 + 2
}

/// Value at quantile `q` of `sorted` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Run every configured size and phase; starts its own clusters unless
/// `cluster.targets` is given.
pub async fn run(
    args: &ConvergenceArgs,
    cluster: &ClusterArgs,
    log_dir: &std::path::Path,
) -> Result<Vec<ConvergenceResult>> {
    let mut out = Vec::new();
    if !cluster.targets.is_empty() {
        out.extend(measure_cluster(args, cluster, &cluster.targets).await?);
        return Ok(out);
    }
    for &n in &args.sizes {
        eprintln!("convergence: starting {n} replicas");
        let local = LocalCluster::start(cluster.hearsay_spec(log_dir)?, n).await?;
        out.extend(measure_cluster(args, cluster, &local.addrs()).await?);
    }
    Ok(out)
}

async fn measure_cluster(
    args: &ConvergenceArgs,
    cluster: &ClusterArgs,
    addrs: &[String],
) -> Result<Vec<ConvergenceResult>> {
    let n = addrs.len();
    let probe = crate::cluster::probe_client();
    // Measure only once membership has settled; a store without membership
    // reports the start-up VIEW, which settles at once.
    if wait_views(&probe, addrs, Duration::from_secs(20), |v| v.len() >= n)
        .await
        .is_none()
    {
        eprintln!("convergence: views of the {n} replicas did not all list {n} members within 20 s; measuring anyway");
    }
    let (interval_ms, source) = gossip_interval(args.gossip_interval_ms, cluster);
    let mut results = vec![measure_phase(args, addrs, "idle", interval_ms, &source).await?];
    if args.load_sessions > 0 {
        let w = Workload {
            sessions: args.load_sessions,
            read_ratio: 0.5,
            keys: 1000,
            seed: args.seed,
            ..Workload::default()
        };
        let bg = Background::start(addrs, &w);
        // Let the background load get past its preload before sampling.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let phase = measure_phase(args, addrs, "loaded", interval_ms, &source).await;
        let load = bg.finish().await.context("background load")?;
        let mut phase = phase?;
        phase.background_ops_per_s = Some(load.throughput);
        results.push(phase);
    }
    Ok(results)
}

async fn measure_phase(
    args: &ConvergenceArgs,
    addrs: &[String],
    phase: &str,
    interval_ms: f64,
    source: &str,
) -> Result<ConvergenceResult> {
    let n = addrs.len();
    let mut rng = SmallRng::seed_from_u64(args.seed ^ n as u64);
    let mut samples = Vec::new();
    let mut failed = 0;
    let run_id: u32 = rng.random();
    for i in 0..args.samples {
        let writer = rng.random_range(0..n);
        let key = format!("conv-{run_id:08x}-{phase}-{i}");
        let value = random_value(&mut rng, 16);
        match sample(addrs, writer, &key, &value, args).await {
            Some(ms) => samples.push(ms),
            None => failed += 1,
        }
    }
    if failed > 0 {
        eprintln!("convergence: {failed} of {} samples at {n} replicas ({phase}) did not converge within {:?}", args.samples, args.sample_timeout);
    }
    samples.sort_by(f64::total_cmp);
    let (p50, p99) = (quantile(&samples, 0.5), quantile(&samples, 0.99));
    let goal = goal_rounds(n);
    let result = ConvergenceResult {
        replicas: n,
        phase: phase.into(),
        samples: args.samples,
        converged: samples.len(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
        gossip_interval_ms: interval_ms,
        gossip_interval_source: source.into(),
        p50_rounds: p50 / interval_ms,
        p99_rounds: p99 / interval_ms,
        goal_rounds: goal,
        meets_goal: failed == 0 && p99 / interval_ms <= goal as f64,
        background_ops_per_s: None,
        samples_ms: samples,
    };
    eprintln!(
        "convergence: {n} replicas {phase}: p50 {:.1} ms ({:.2} rounds), p99 {:.1} ms ({:.2} rounds; goal ≤ {goal})",
        result.p50_ms, result.p50_rounds, result.p99_ms, result.p99_rounds
    );
    Ok(result)
}

/// One write and the time until every other replica shows it, in ms.
async fn sample(
    addrs: &[String],
    writer: usize,
    key: &str,
    value: &serde_json::Value,
    args: &ConvergenceArgs,
) -> Option<f64> {
    let mut w = Session::new(&addrs[writer]);
    if !matches!(w.put(key, value).await, Outcome::Ok(_)) {
        return None;
    }
    let acked = Instant::now();
    let pollers =
        addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != writer)
            .map(|(_, addr)| async move {
                let mut r = Session::with_timeout(addr, Duration::from_secs(2));
                loop {
                    // Null metadata every time, so the replica answers from
                    // what gossip has brought it rather than pulling.
                    r.metadata = serde_json::Value::Null;
                    if let Outcome::Ok(Some(v)) = r.get(key).await {
                        if &v == value {
                            return Some(acked.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    if acked.elapsed() > args.sample_timeout {
                        return None;
                    }
                    tokio::time::sleep(args.poll_interval).await;
                }
            });
    let times = futures::future::join_all(pollers).await;
    times
        .into_iter()
        .try_fold(0.0f64, |acc, t| t.map(|t| acc.max(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_rounds_follow_the_issue() {
        assert_eq!(goal_rounds(3), 4);
        assert_eq!(goal_rounds(5), 5);
        assert_eq!(goal_rounds(7), 5);
        assert_eq!(goal_rounds(8), 5);
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
    }
}
