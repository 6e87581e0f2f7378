//! Large values: what a big write does to everyone else.
//!
//! For the ceiling and for hearsay, alternating (ABBA) `--repeat` times,
//! two phases of the same small-value load (`--sessions`, 50 % PUTs, 64-byte
//! values, spread over the replicas):
//! - `baseline`: the small load alone;
//! - `big`: the same, while one more client writes a `--big-bytes` value to
//!   one key at the first replica every `--big-every` (after the previous
//!   one was answered).
//!
//! Reported per system and phase: the small clients' GET and PUT p99, how
//! many big writes completed and their median latency, and (hearsay only)
//! convergence of small writes during the phase: every 100 ms a fresh small
//! key is written at the second replica and the others are polled with
//! `null` metadata until it shows, so a gossip stalled behind a big
//! transfer shows as a long convergence time.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::client::{Outcome, Session};
use crate::cluster::{ClusterArgs, LocalCluster};
use crate::convergence::quantile;
use crate::load::{self, Workload};

#[derive(clap::Args, Clone, Debug)]
pub struct LargeArgs {
    /// Small-value client sessions.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Size of the big values, in characters of a JSON string.
    #[arg(long, default_value_t = 1_000_000)]
    pub big_bytes: usize,
    /// Pause between the end of one big write and the start of the next
    /// (0: back to back, a stress far beyond "one big value now and then").
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub big_every: Duration,
    /// Measured time of each phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Rounds of both systems.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
}

/// One phase of one system in one round.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LargeRow {
    pub round: usize,
    pub system: String,
    pub phase: String,
    pub small_ops_per_s: f64,
    pub small_get_p99_ms: f64,
    pub small_put_p99_ms: f64,
    pub small_errors: u64,
    pub big_writes: usize,
    pub big_write_p50_ms: Option<f64>,
    pub big_errors: usize,
    /// Small writes probed for convergence, and how many never showed.
    pub probes: usize,
    pub probes_lost: usize,
    pub convergence_p99_ms: Option<f64>,
    pub convergence_max_ms: Option<f64>,
}

pub async fn run(args: &LargeArgs, cluster: &ClusterArgs, log_dir: &Path) -> Result<Vec<LargeRow>> {
    let ceiling = LocalCluster::start(cluster.ceiling_spec(log_dir)?, 1).await?;
    let hearsay = LocalCluster::start(cluster.hearsay_spec(log_dir)?, cluster.replicas).await?;
    let systems = [("ceiling", ceiling.addrs()), ("hearsay", hearsay.addrs())];
    let w = Workload {
        sessions: args.sessions,
        read_ratio: 0.5,
        duration: args.duration,
        ..Workload::default()
    };
    let mut rows = Vec::new();
    for round in 0..args.repeat.max(1) {
        let mut order: Vec<usize> = vec![0, 1];
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (system, addrs) = &systems[i];
            for big in [false, true] {
                let row = phase(args, &w, system, addrs, big, round + 1).await?;
                eprintln!(
                    "large #{}: {system:>7} {:>8}: small GET p99 {:.2} ms PUT p99 {:.2} ms, {} big writes (p50 {} ms), convergence p99 {} ms",
                    round + 1,
                    row.phase,
                    row.small_get_p99_ms,
                    row.small_put_p99_ms,
                    row.big_writes,
                    row.big_write_p50_ms.map_or("–".into(), |v| format!("{v:.0}")),
                    row.convergence_p99_ms.map_or("–".into(), |v| format!("{v:.0}")),
                );
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

async fn phase(
    args: &LargeArgs,
    w: &Workload,
    system: &str,
    addrs: &[String],
    big: bool,
    round: usize,
) -> Result<LargeRow> {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = big.then(|| {
        let stop = stop.clone();
        let addr = addrs[0].clone();
        let size = args.big_bytes;
        let pause = args.big_every;
        tokio::spawn(async move {
            let value = serde_json::Value::String("b".repeat(size));
            let mut s = Session::with_timeout(&addr, Duration::from_secs(30));
            let (mut times, mut errors) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match s.put("big", &value).await {
                    Outcome::Ok(_) => times.push(sent.elapsed().as_secs_f64() * 1000.0),
                    _ => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                // Drop metadata so the next big write waits for nothing.
                s.metadata = serde_json::Value::Null;
                tokio::time::sleep(pause).await;
            }
            (times, errors)
        })
    });
    let prober = (addrs.len() > 1).then(|| {
        let stop = stop.clone();
        let addrs = addrs.to_vec();
        tokio::spawn(async move { probe_convergence(&addrs, &stop).await })
    });
    let small = load::run(system, addrs, w, Arc::new(AtomicBool::new(false)), false).await;
    stop.store(true, Ordering::Relaxed);
    let (mut big_times, big_errors) = match writer {
        Some(t) => t.await?,
        None => (Vec::new(), 0),
    };
    let (mut conv, lost) = match prober {
        Some(t) => t.await?,
        None => (Vec::new(), 0),
    };
    let small = small?;
    big_times.sort_by(f64::total_cmp);
    conv.sort_by(f64::total_cmp);
    Ok(LargeRow {
        round,
        system: system.into(),
        phase: if big { "big" } else { "baseline" }.into(),
        small_ops_per_s: small.throughput,
        small_get_p99_ms: small.get.p99_ms,
        small_put_p99_ms: small.put.p99_ms,
        small_errors: small.errors + small.unavailable_503,
        big_writes: big_times.len(),
        big_write_p50_ms: (!big_times.is_empty()).then(|| quantile(&big_times, 0.5)),
        big_errors,
        probes: conv.len() + lost,
        probes_lost: lost,
        convergence_p99_ms: (!conv.is_empty()).then(|| quantile(&conv, 0.99)),
        convergence_max_ms: conv.last().copied(),
    })
}

/// Every 100 ms until `stop`: a small write at the second replica, then
/// poll every other one (null metadata) until it shows; times in ms, and
/// how many never showed within 10 s.
async fn probe_convergence(addrs: &[String], stop: &AtomicBool) -> (Vec<f64>, usize) {
    let (mut times, mut lost) = (Vec::new(), 0);
    let mut writer = Session::new(&addrs[1]);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("probe-{i}");
        let value = serde_json::Value::String(format!("p{i}"));
        writer.metadata = serde_json::Value::Null;
        if !matches!(writer.put(&key, &value).await, Outcome::Ok(_)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let acked = Instant::now();
        let polls = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != 1)
            .map(|(_, addr)| {
                let (key, value) = (&key, &value);
                async move {
                    let mut r = Session::with_timeout(addr, Duration::from_secs(2));
                    while acked.elapsed() < Duration::from_secs(10) {
                        r.metadata = serde_json::Value::Null;
                        if let Outcome::Ok(Some(v)) = r.get(key).await {
                            if &v == value {
                                return Some(acked.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    None
                }
            });
        let all = futures::future::join_all(polls).await;
        match all.into_iter().try_fold(0.0f64, |m, t| t.map(|t| m.max(t))) {
            Some(ms) => times.push(ms),
            None => lost += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (times, lost)
}

/// One table, every row.
pub fn summary_md(rows: &[LargeRow], args: &LargeArgs) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Large values: {} small-value sessions (50 % PUT, 64 B) alone, and beside one client writing a {}-character value every {:?}\n", args.sessions, args.big_bytes, args.big_every);
    let _ = writeln!(s, "| round | system | phase | small ops/s | small GET p99 ms | small PUT p99 ms | small errors | big writes | big write p50 ms | convergence p99 ms (max) | probes lost |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} ({}) | {} |",
            r.round,
            r.system,
            r.phase,
            r.small_ops_per_s,
            r.small_get_p99_ms,
            r.small_put_p99_ms,
            r.small_errors,
            r.big_writes,
            ms(r.big_write_p50_ms),
            ms(r.convergence_p99_ms),
            ms(r.convergence_max_ms),
            r.probes_lost
        );
    }
    s
}
