//! State transfer: a new replica joins a cluster that holds many keys; how
//! long until it is ready (`GET /ready` 200) and until it serves the last key
//! written before it started. Also states memory per key, from the growth of
//! the replicas' resident set while the keys were loaded.
//!
//! Needs a local cluster: the bench starts the new replica itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::client::{wait_visible, Outcome, Session};
use crate::cluster::{is_ready, probe_client, ClusterArgs, LocalCluster};
use crate::fmt::{fmt_ms, millis as ms};
use crate::load::preload;
use crate::wait::poll_until;

#[derive(clap::Args, Clone, Debug)]
pub struct StateTransferArgs {
    /// Keys in the store when the new replica starts.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Bound on each wait.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub timeout: Duration,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct StateTransferResult {
    pub replicas: usize,
    pub keys: u64,
    pub value_size: usize,
    pub preload_s: f64,
    pub preload_ops_per_s: f64,
    /// Mean growth of the original replicas' RSS per key loaded.
    pub rss_bytes_per_key: Option<f64>,
    /// RSS of the new replica once it served the last key, per key.
    pub new_replica_rss_bytes_per_key: Option<f64>,
    /// Start → `GET /ready` 200 (None: not within timeout or no endpoint).
    pub ready_ms: Option<f64>,
    /// Start → serves the last key written (with null metadata).
    pub serves_last_key_ms: Option<f64>,
}

pub async fn run(
    args: &StateTransferArgs,
    cluster: &ClusterArgs,
    log_dir: &std::path::Path,
) -> Result<StateTransferResult> {
    if !cluster.targets.is_empty() {
        bail!("state-transfer needs a local cluster (it starts the new replica); drop --targets");
    }
    let n = cluster.replicas.max(1);
    eprintln!(
        "state-transfer: starting {n} replicas, loading {} keys",
        args.keys
    );
    let mut local = LocalCluster::start(cluster.hearsay_spec(log_dir)?, n).await?;
    let addrs = local.addrs();
    let rss_before: Vec<Option<u64>> = (0..n).map(|i| local.rss_bytes(i)).collect();
    let started = Instant::now();
    let (last_key, last_value) =
        preload(&addrs, args.keys, args.value_size, 64, args.seed, true).await?;
    let preload_s = started.elapsed().as_secs_f64();
    wait_visible(&addrs, &last_key, &last_value, args.timeout).await;
    let growth: Vec<f64> = (0..n)
        .filter_map(|i| Some(local.rss_bytes(i)?.saturating_sub(rss_before[i]?) as f64))
        .collect();
    let rss_bytes_per_key = (!growth.is_empty())
        .then(|| growth.iter().sum::<f64>() / growth.len() as f64 / args.keys as f64);

    let new = local.add()?;
    let new_addr = local.replicas[new].addr.clone();
    let probe = probe_client();
    let ready = poll_until(args.timeout, || {
        let (probe, addr) = (probe.clone(), new_addr.clone());
        async move { is_ready(&probe, &addr).await }
    });
    let serves = poll_until(args.timeout, || {
        let (addr, key, value) = (new_addr.clone(), last_key.clone(), last_value.clone());
        async move { matches!(Session::new(&addr).get(&key).await, Outcome::Ok(Some(v)) if v == value) }
    });
    let (ready, serves) = tokio::join!(ready, serves);
    let result = StateTransferResult {
        replicas: n,
        keys: args.keys,
        value_size: args.value_size,
        preload_s,
        preload_ops_per_s: args.keys as f64 / preload_s,
        rss_bytes_per_key,
        new_replica_rss_bytes_per_key: local.rss_bytes(new).map(|b| b as f64 / args.keys as f64),
        ready_ms: ready.map(ms),
        serves_last_key_ms: serves.map(ms),
    };
    eprintln!(
        "state-transfer: {} keys: ready after {}, serves last key after {}, {} B/key of RSS",
        args.keys,
        fmt_ms(result.ready_ms),
        fmt_ms(result.serves_last_key_ms),
        result
            .rss_bytes_per_key
            .map_or("unknown".to_string(), |b| format!("{b:.0}"))
    );
    Ok(result)
}
