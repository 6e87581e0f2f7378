//! Durability: what a data directory costs. PUT throughput of a local
//! cluster with `sync = "always"` and `sync = "interval"` as ratios to the
//! same cluster in memory, measured in the same run and alternated; the time
//! a replica with N keys on disk takes from a SIGKILL-and-start to ready
//! (`GET /ready` 200) and to serving its last key; and bytes on disk per key.
//!
//! Needs a local cluster (it gives each replica its own data directory under
//! a temporary directory, removed at the end).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::{Outcome, Session};
use crate::cluster::{is_ready, probe_client, ClusterArgs, LocalCluster, PORT_PLACEHOLDER};
use crate::compare::median;
use crate::fmt::{fmt_ms, millis as ms};
use crate::load::{preload, PutWorkloadArgs};
use crate::noise::load_average_line;
use crate::wait::poll_until;

#[derive(clap::Args, Clone, Debug)]
pub struct DurabilityArgs {
    /// The throughput runs' workload (the restart preload uses its value
    /// size and seed too).
    #[command(flatten)]
    pub put: PutWorkloadArgs,
    /// Rounds of (memory, always, interval); ratios are taken per round.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// `sync_interval_ms` of the interval runs.
    #[arg(long, default_value_t = 100)]
    pub sync_interval_ms: u64,
    /// Keys on disk for the restart measurement (comma-separated; 0 skips it).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    pub restart_keys: Vec<u64>,
    /// Deep mode: also restart with 1,000,000 keys (loading them takes minutes).
    #[arg(long)]
    pub deep: bool,
    /// Bound on each wait (preload visibility, restart).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub timeout: Duration,
}

/// PUT throughput of one round, operations per second.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ThroughputRound {
    pub memory: f64,
    pub always: f64,
    pub interval: f64,
    pub errors: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct RestartResult {
    pub keys: u64,
    pub preload_s: f64,
    /// Total size of the replica's data directory after the restart.
    pub disk_bytes: u64,
    pub disk_bytes_per_key: f64,
    /// Spawn → `GET /ready` 200 after a SIGKILL.
    pub ready_ms: Option<f64>,
    /// Spawn → serves the last key written before the kill.
    pub serves_last_key_ms: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct DurabilityResult {
    pub replicas: usize,
    pub sessions: usize,
    pub sync_interval_ms: u64,
    pub rounds: Vec<ThroughputRound>,
    /// Medians over the rounds of always / memory and interval / memory.
    pub always_ratio: f64,
    pub interval_ratio: f64,
    pub restarts: Vec<RestartResult>,
    /// 1-minute load average when the run ended (shared machine).
    pub loadavg: Option<String>,
}

/// Every replica's environment for one sync mode (`None`: in memory). The
/// data directory names the replica's port, so each has its own.
fn mode_env(base: &Path, mode: Option<&str>, interval_ms: u64) -> Vec<(String, String)> {
    let Some(mode) = mode else {
        return vec![];
    };
    let dir = base.join(format!("{mode}-{PORT_PLACEHOLDER}"));
    vec![
        ("HEARSAY_DATA_DIR".into(), dir.display().to_string()),
        ("HEARSAY_SYNC".into(), mode.into()),
        ("HEARSAY_SYNC_INTERVAL_MS".into(), interval_ms.to_string()),
    ]
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn put_throughput(
    args: &DurabilityArgs,
    cluster: &ClusterArgs,
    log_dir: &Path,
    base: &Path,
    mode: Option<&str>,
) -> Result<(f64, u64)> {
    let name = mode.unwrap_or("memory");
    let env = mode_env(base, mode, args.sync_interval_ms);
    let r = args
        .put
        .run_on_fresh_cluster(name, cluster, log_dir, env)
        .await?;
    if let Some(mode) = mode {
        // The next run starts empty; the disk stays bounded.
        for entry in std::fs::read_dir(base)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(mode) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    eprintln!(
        "durability: PUT {name}: {:.0} ops/s ({} errors)",
        r.throughput, r.errors
    );
    Ok((r.throughput, r.errors + r.unavailable_503))
}

async fn restart(
    args: &DurabilityArgs,
    cluster: &ClusterArgs,
    log_dir: &Path,
    base: &Path,
    keys: u64,
) -> Result<RestartResult> {
    let mut spec = cluster.hearsay_spec(log_dir)?;
    // Interval: the preload is faster, and recovery reads the same data.
    spec.env
        .extend(mode_env(base, Some("interval"), args.sync_interval_ms));
    let mut local = LocalCluster::start(spec, 1).await?;
    let addr = local.addrs()[0].clone();
    eprintln!("durability: loading {keys} keys into one replica");
    let started = Instant::now();
    let (last_key, last_value) = preload(
        std::slice::from_ref(&addr),
        keys,
        args.put.value_size,
        64,
        args.put.seed,
        true,
    )
    .await?;
    let preload_s = started.elapsed().as_secs_f64();
    // Let the interval fsync pass: this measures recovery, not a power loss.
    tokio::time::sleep(Duration::from_millis(args.sync_interval_ms * 3)).await;
    // The polls start right after the spawn, so their times are from it.
    local.restart(0)?;
    let probe = probe_client();
    let ready = poll_until(args.timeout, || {
        let (probe, addr) = (probe.clone(), addr.clone());
        async move { is_ready(&probe, &addr).await }
    });
    let serves = poll_until(args.timeout, || {
        let (addr, key, value) = (addr.clone(), last_key.clone(), last_value.clone());
        async move { matches!(Session::new(&addr).get(&key).await, Outcome::Ok(Some(v)) if v == value) }
    });
    let (ready, serves) = tokio::join!(ready, serves);
    let disk_bytes = dir_bytes(base);
    drop(local);
    let _ = std::fs::remove_dir_all(base.join(format!(
        "interval-{}",
        addr.rsplit(':').next().unwrap_or_default()
    )));
    let result = RestartResult {
        keys,
        preload_s,
        disk_bytes,
        disk_bytes_per_key: disk_bytes as f64 / keys as f64,
        ready_ms: ready.map(ms),
        serves_last_key_ms: serves.map(ms),
    };
    eprintln!(
        "durability: {keys} keys: ready {} after SIGKILL and start, serves last key after {}, {:.0} B/key on disk",
        fmt_ms(result.ready_ms),
        fmt_ms(result.serves_last_key_ms),
        result.disk_bytes_per_key
    );
    Ok(result)
}

pub async fn run(
    args: &DurabilityArgs,
    cluster: &ClusterArgs,
    log_dir: &Path,
) -> Result<DurabilityResult> {
    if !cluster.targets.is_empty() {
        bail!("durability needs a local cluster (it owns the data directories); drop --targets");
    }
    let tmp = tempfile::tempdir().context("creating a directory for the data directories")?;
    let base: PathBuf = tmp.path().to_path_buf();
    let mut rounds = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let (memory, e1) = put_throughput(args, cluster, log_dir, &base, None).await?;
        let (always, e2) = put_throughput(args, cluster, log_dir, &base, Some("always")).await?;
        let (interval, e3) =
            put_throughput(args, cluster, log_dir, &base, Some("interval")).await?;
        rounds.push(ThroughputRound {
            memory,
            always,
            interval,
            errors: e1 + e2 + e3,
        });
    }
    let ratio = |f: fn(&ThroughputRound) -> f64| {
        median(
            rounds
                .iter()
                .filter(|r| r.memory > 0.0)
                .map(|r| f(r) / r.memory)
                .collect(),
        )
    };
    let always_ratio = ratio(|r| r.always);
    let interval_ratio = ratio(|r| r.interval);
    let mut keys: Vec<u64> = args
        .restart_keys
        .iter()
        .copied()
        .filter(|&k| k > 0)
        .collect();
    if args.deep && !keys.contains(&1_000_000) {
        keys.push(1_000_000);
    }
    let mut restarts = Vec::new();
    for k in keys {
        restarts.push(restart(args, cluster, log_dir, &base, k).await?);
    }
    Ok(DurabilityResult {
        replicas: cluster.replicas.max(1),
        sessions: args.put.sessions,
        sync_interval_ms: args.sync_interval_ms,
        rounds,
        always_ratio,
        interval_ratio,
        restarts,
        loadavg: load_average_line(),
    })
}

/// The Markdown summary of a durability run.
pub fn summary_md(r: &DurabilityResult) -> String {
    let mut s = format!(
        "## Durability\n\n{} replicas, {} PUT sessions, sync_interval_ms {}; load average at the end: {}\n\n\
         | round | memory ops/s | always ops/s | interval ops/s | always / memory | interval / memory |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        r.replicas,
        r.sessions,
        r.sync_interval_ms,
        r.loadavg.as_deref().unwrap_or("unknown")
    );
    for (i, x) in r.rounds.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            i + 1,
            x.memory,
            x.always,
            x.interval,
            x.always / x.memory.max(f64::MIN_POSITIVE),
            x.interval / x.memory.max(f64::MIN_POSITIVE)
        ));
    }
    s.push_str(&format!(
        "\nMedian ratios: always {:.2}× (goal ≥ 0.5×), interval {:.2}× (goal ≥ 0.9×)\n\n\
         | keys on disk | preload | SIGKILL + start → ready | → serves last key | bytes on disk | bytes per key |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        r.always_ratio, r.interval_ratio
    ));
    for x in &r.restarts {
        s.push_str(&format!(
            "| {} | {:.1} s | {} | {} | {} | {:.0} |\n",
            x.keys,
            x.preload_s,
            fmt_ms(x.ready_ms),
            fmt_ms(x.serves_last_key_ms),
            x.disk_bytes,
            x.disk_bytes_per_key
        ));
    }
    s
}
