//! The standard suite: every mode against a local 3-replica cluster, one
//! report directory. A section that cannot run (e.g. the store has no
//! `/metrics` yet) is recorded under "Not measured" and the rest goes on; the
//! report is rewritten after each section so an interrupted suite still
//! leaves what it measured.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cluster::{ClusterArgs, LocalCluster};
use crate::compare::compare_with;
use crate::convergence::{self, ConvergenceArgs};
use crate::failover::{self, FailoverArgs};
use crate::gossip_cost::{self, GossipCostArgs};
use crate::load::{Shape, Workload};
use crate::report::{out_dir, Report};
use crate::state_transfer::{self, StateTransferArgs};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Load,
    Convergence,
    GossipCost,
    Failover,
    StateTransfer,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Back-to-back runs of each load workload (the stability check wants 6).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Measured time of each load run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Concurrent sessions for the load workloads.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Before each load run, wait until other processes use at most this %
    /// of the CPU (bounded; see `load --wait-quiet`).
    #[arg(long, value_name = "PCT")]
    pub wait_quiet: Option<f64>,
    /// Load shapes to run each workload in (comma-separated): `spread`
    /// (sessions over every replica) and/or `one` (all on the first replica).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "spread")]
    pub shape: Vec<Shape>,
    /// Do not start Redis and etcd beside hearsay even when installed.
    #[arg(long)]
    pub no_others: bool,
    /// Everything shorter and smaller: a check that the suite works, not numbers.
    #[arg(long)]
    pub quick: bool,
    /// Sections to leave out.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Section>,
    /// hearsay's gossip interval [default: from `hearsay config`, else 100 ms].
    #[arg(long)]
    pub gossip_interval_ms: Option<f64>,
    /// Report directory [default: bench/results/<timestamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The load workloads of the suite: read-only and write-only give the GET
/// and PUT ratios the project's goals name; the 90/10 mix is the headline.
pub fn workloads(
    sessions: usize,
    duration: Duration,
    quick: bool,
    wait_quiet: Option<f64>,
) -> Vec<(&'static str, Workload)> {
    let base = Workload {
        sessions,
        duration,
        wait_quiet,
        warmup: if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(1)
        },
        ..Workload::default()
    };
    vec![
        (
            "get-only",
            Workload {
                read_ratio: 1.0,
                ..base.clone()
            },
        ),
        (
            "put-only",
            Workload {
                read_ratio: 0.0,
                ..base.clone()
            },
        ),
        (
            "mixed-90-10",
            Workload {
                read_ratio: 0.9,
                ..base.clone()
            },
        ),
        (
            "mixed-zipf",
            Workload {
                read_ratio: 0.9,
                dist: crate::load::KeyDist::Zipf,
                ..base
            },
        ),
    ]
}

pub async fn run(args: &SuiteArgs) -> Result<PathBuf> {
    let dir = out_dir(args.out.clone())?;
    let log_dir = dir.join("logs");
    let mut report = Report::new();
    let wants = |s: Section| !args.skip.contains(&s);
    let duration = if args.quick {
        Duration::from_secs(2)
    } else {
        args.duration
    };
    let repeat = if args.quick { 1 } else { args.repeat };
    eprintln!("suite: writing to {}", dir.display());

    if wants(Section::Load) {
        if let Err(e) = load_section(args, &mut report, &log_dir, duration, repeat).await {
            report.skipped.push(format!("load: {e:#}"));
        }
        report.write(&dir)?;
    }
    if wants(Section::Convergence) {
        let c = ConvergenceArgs {
            sizes: if args.quick { vec![3] } else { vec![3, 5, 7] },
            samples: if args.quick { 10 } else { 40 },
            poll_interval: Duration::from_millis(5),
            sample_timeout: Duration::from_secs(10),
            load_sessions: 16,
            gossip_interval_ms: args.gossip_interval_ms,
            seed: 1,
        };
        match convergence::run(&c, &args.cluster, &log_dir).await {
            Ok(r) => report.convergence = r,
            Err(e) => report.skipped.push(format!("convergence: {e:#}")),
        }
        report.write(&dir)?;
    }
    if wants(Section::GossipCost) {
        let g = GossipCostArgs {
            key_counts: if args.quick {
                vec![10, 1000]
            } else {
                vec![10, 100_000]
            },
            window: if args.quick {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(5)
            },
            load_sessions: 8,
            seed: 1,
        };
        match gossip_cost::run(&g, &args.cluster, &log_dir).await {
            Ok(r) => report.gossip_cost = r,
            Err(e) => report.skipped.push(format!("gossip cost: {e:#}")),
        }
        report.write(&dir)?;
    }
    if wants(Section::Failover) && args.cluster.targets.is_empty() {
        let f = FailoverArgs {
            stall: Duration::from_secs(1),
            timeout: if args.quick {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(30)
            },
        };
        match failover::run(&f, &args.cluster, &log_dir).await {
            Ok(r) => report.failover = Some(r),
            Err(e) => report.skipped.push(format!("failover: {e:#}")),
        }
        report.write(&dir)?;
    }
    if wants(Section::StateTransfer) && args.cluster.targets.is_empty() {
        let s = StateTransferArgs {
            keys: if args.quick { 5_000 } else { 100_000 },
            value_size: 64,
            timeout: Duration::from_secs(if args.quick { 20 } else { 120 }),
            seed: 1,
        };
        match state_transfer::run(&s, &args.cluster, &log_dir).await {
            Ok(r) => report.state_transfer = Some(r),
            Err(e) => report.skipped.push(format!("state transfer: {e:#}")),
        }
    }
    let summary = report.write(&dir)?;
    println!("{summary}");
    eprintln!("suite: report in {}", dir.display());
    Ok(dir)
}

async fn load_section(
    args: &SuiteArgs,
    report: &mut Report,
    log_dir: &std::path::Path,
    duration: Duration,
    repeat: usize,
) -> Result<()> {
    let ceiling = LocalCluster::start(args.cluster.ceiling_spec(log_dir)?, 1).await?;
    let local;
    let hearsay = if args.cluster.targets.is_empty() {
        local =
            LocalCluster::start(args.cluster.hearsay_spec(log_dir)?, args.cluster.replicas).await?;
        local.addrs()
    } else {
        args.cluster.targets.clone()
    };
    let others = if args.no_others {
        crate::others::Others::none()
    } else {
        crate::others::Others::start_installed(log_dir, hearsay.len(), &args.cluster).await
    };
    for &shape in &args.shape {
        for (name, mut w) in workloads(args.sessions, duration, args.quick, args.wait_quiet) {
            w.shape = shape;
            let name = match shape {
                Shape::Spread => name.to_string(),
                Shape::One => format!("{name} (one replica)"),
            };
            let cmp = compare_with(
                &name,
                &w,
                Some(&ceiling.addrs()),
                Some(&hearsay),
                &others,
                repeat,
            )
            .await?;
            report.load.push(cmp);
        }
    }
    Ok(())
}
