//! Failure detection and rejoin, seen from the outside through `GET /view`:
//! - kill: SIGKILL one replica; time until no survivor lists it;
//! - stall: SIGSTOP one replica for a while, then SIGCONT; was it removed
//!   (by any survivor, at any poll), and how long until all views list it again;
//! - restart: start the killed replica again at its address; time until every
//!   replica lists it, until `GET /ready` answers 200, and until it serves a
//!   key written while it was down (caught up).
//!
//! Needs a local cluster: the bench must own the processes to signal them.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::client::{Outcome, Session};
use crate::cluster::{get_view, is_ready, probe_client, wait_views, ClusterArgs, LocalCluster};
use crate::fmt::{fmt_ms, millis as ms};
use crate::load::random_value;
use crate::wait::poll_until;

#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    /// How long the stalled replica stays stopped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub stall: Duration,
    /// Bound on every wait (detection, rejoin, catch-up).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct FailoverResult {
    pub replicas: usize,
    /// SIGKILL → gone from every survivor's view (None: not within timeout).
    pub kill_detected_ms: Option<f64>,
    /// Restart → listed in every replica's view, its own included.
    pub restart_in_views_ms: Option<f64>,
    /// Restart → `GET /ready` 200 (None also when the endpoint is missing).
    pub restart_ready_ms: Option<f64>,
    /// Restart → serves the key written while it was down.
    pub restart_caught_up_ms: Option<f64>,
    pub stall_ms: f64,
    /// Whether any survivor dropped the stalled replica from its view.
    pub stall_removed: bool,
    /// SIGCONT → listed in every view again (0 when never removed).
    pub stall_back_in_views_ms: Option<f64>,
}

pub async fn run(
    args: &FailoverArgs,
    cluster: &ClusterArgs,
    log_dir: &std::path::Path,
) -> Result<FailoverResult> {
    if !cluster.targets.is_empty() {
        bail!("failover needs a local cluster (it kills and restarts replicas); drop --targets");
    }
    let n = cluster.replicas.max(3);
    eprintln!("failover: starting {n} replicas");
    let mut local = LocalCluster::start(cluster.hearsay_spec(log_dir)?, n).await?;
    let addrs = local.addrs();
    let probe = probe_client();
    if wait_views(&probe, &addrs, args.timeout, |v| v.len() >= n)
        .await
        .is_none()
    {
        bail!("the {n} replicas never all listed each other in /view");
    }
    let mut result = FailoverResult {
        replicas: n,
        stall_ms: ms(args.stall),
        ..Default::default()
    };

    // Kill the last replica; survivors must drop it.
    let victim = n - 1;
    let victim_addr = addrs[victim].clone();
    let survivors: Vec<String> = addrs[..victim].to_vec();
    local.kill(victim)?;
    result.kill_detected_ms = wait_views(&probe, &survivors, args.timeout, |v| {
        !v.contains(&victim_addr)
    })
    .await
    .map(ms);
    eprintln!(
        "failover: kill detected after {}",
        fmt_ms(result.kill_detected_ms)
    );

    // Write while it is down, then restart it and watch it come back.
    let key = "failover-marker";
    let value = random_value(&mut rand::rng(), 16);
    if !matches!(
        Session::new(&survivors[0]).put(key, &value).await,
        Outcome::Ok(_)
    ) {
        bail!("could not write the marker key to {}", survivors[0]);
    }
    local.restart(victim)?;
    let in_views = wait_views(&probe, &addrs, args.timeout, |v| v.contains(&victim_addr));
    let ready = poll_until(args.timeout, || {
        let probe = probe.clone();
        let addr = victim_addr.clone();
        async move { is_ready(&probe, &addr).await }
    });
    let caught_up = poll_until(args.timeout, || {
        let (addr, value) = (victim_addr.clone(), value.clone());
        async move { matches!(Session::new(&addr).get(key).await, Outcome::Ok(Some(v)) if v == value) }
    });
    let (in_views, ready, caught_up) = tokio::join!(in_views, ready, caught_up);
    // The three polls start together right after the restart, so each
    // elapsed time is measured from the restart.
    result.restart_in_views_ms = in_views.map(ms);
    result.restart_ready_ms = ready.map(ms);
    result.restart_caught_up_ms = caught_up.map(ms);
    eprintln!(
        "failover: restart in views after {}, ready after {}, caught up after {}",
        fmt_ms(result.restart_in_views_ms),
        fmt_ms(result.restart_ready_ms),
        fmt_ms(result.restart_caught_up_ms)
    );

    // Stall a different replica: SIGSTOP, watch the survivors' views, SIGCONT.
    wait_views(&probe, &addrs, args.timeout, |v| v.len() >= n).await;
    let stalled = 0;
    let stalled_addr = addrs[stalled].clone();
    let others: Vec<String> = addrs[1..].to_vec();
    local.signal(stalled, Signal::SIGSTOP)?;
    let stop_until = Instant::now() + args.stall;
    let mut removed = false;
    while Instant::now() < stop_until {
        removed |= any_view_lacks(&probe, &others, &stalled_addr).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    local.signal(stalled, Signal::SIGCONT)?;
    let resumed = Instant::now();
    // A removal may still land just after SIGCONT (the detector's verdict was
    // already due), so keep looking for a moment before judging.
    while resumed.elapsed() < Duration::from_millis(300) {
        removed |= any_view_lacks(&probe, &others, &stalled_addr).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    result.stall_removed = removed;
    result.stall_back_in_views_ms = if removed {
        wait_views(&probe, &addrs, args.timeout, |v| v.contains(&stalled_addr))
            .await
            .map(|_| ms(resumed.elapsed()))
    } else {
        Some(0.0)
    };
    eprintln!(
        "failover: stall {:?}: removed={} back in views after {}",
        args.stall,
        result.stall_removed,
        fmt_ms(result.stall_back_in_views_ms)
    );
    Ok(result)
}

async fn any_view_lacks(probe: &reqwest::Client, observers: &[String], addr: &str) -> bool {
    for o in observers {
        if let Some(v) = get_view(probe, o).await {
            if !v.iter().any(|a| a == addr) {
                return true;
            }
        }
    }
    false
}
