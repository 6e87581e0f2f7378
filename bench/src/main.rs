//! `hearsay-bench`: command-line entry point. Parses the subcommand, runs it,
//! and turns Ctrl-C into an ordinary early return so that the local clusters
//! the run owns are dropped, and so killed, on the way out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use hearsay::config::CpuScheduling;
use hearsay_bench::acks::{self, AcksArgs};
use hearsay_bench::cluster::{ClusterArgs, LocalCluster};
use hearsay_bench::compare::compare_with;
use hearsay_bench::convergence::{self, ConvergenceArgs};
use hearsay_bench::durability::{self, DurabilityArgs};
use hearsay_bench::failover::{self, FailoverArgs};
use hearsay_bench::gossip_cost::{self, GossipCostArgs};
use hearsay_bench::load::Workload;
use hearsay_bench::memory::{self, MemoryArgs};
use hearsay_bench::others::Others;
use hearsay_bench::report::{out_dir, Report};
use hearsay_bench::state_transfer::{self, StateTransferArgs};
use hearsay_bench::suite::{self, SuiteArgs};
use hearsay_bench::{ceiling, report};

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks for hearsay, measured beside a ceiling server in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum System {
    Both,
    Hearsay,
    Ceiling,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop load against hearsay and the ceiling; latency, throughput, ratios.
    Load {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        workload: Workload,
        /// Which systems to drive.
        #[arg(long, value_enum, default_value_t = System::Both)]
        system: System,
        /// Back-to-back runs (alternating systems); the report gives the spread.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Name of the workload in the report.
        #[arg(long, default_value = "load")]
        name: String,
        /// Do not start Redis and etcd beside hearsay even when installed.
        #[arg(long)]
        no_others: bool,
        /// Report directory [default: bench/results/<timestamp>].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write at one replica, time until every replica shows it (idle and loaded).
    Convergence {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: ConvergenceArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Gossip bytes and messages per round, idle and loaded, few and many keys.
    GossipCost {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: GossipCostArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Kill, stall and restart replicas; time detection and rejoin.
    Failover {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: FailoverArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time a new replica's state transfer from a loaded cluster.
    StateTransfer {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: StateTransferArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// PUT throughput with a data directory (sync always / interval) vs in
    /// memory, restart-to-ready with many keys on disk, bytes on disk per key.
    Durability {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: DurabilityArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// PUT throughput and p99 for each `ack_replicas` setting, as ratios to
    /// the default (`1`) in the same round.
    Acks {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: AcksArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Throughput, convergence and gossip bytes for several cluster sizes, one table.
    Scale {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: hearsay_bench::scale::ScaleArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Small-value clients' latency and gossip while one client writes 1 MB values.
    Large {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: hearsay_bench::large::LargeArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Resident memory per key of one replica (and of redis-server when installed).
    Memory {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        args: MemoryArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The standard set against a local 3-replica cluster, into one report directory.
    Suite(SuiteArgs),
    /// Re-read DIR/report.json, recompute the summaries and rewrite DIR/summary.md
    /// (e.g. after a newer bench adds a table); plots are not redrawn.
    Render { dir: PathBuf },
    /// Serve the ceiling (used by the bench itself; listens on --listen or $SOCKET_ADDRESS).
    Ceiling {
        #[arg(long, env = "SOCKET_ADDRESS", default_value = "127.0.0.1:8090")]
        listen: String,
        /// Scheduling class of its threads (see `--ceiling-cpu-scheduling`).
        #[arg(long, value_enum, default_value = "normal")]
        cpu_scheduling: CpuScheduling,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Ceiling { cpu_scheduling, .. } = &cli.command {
        // Before the runtime starts its threads: they inherit the class.
        hearsay::cli::use_cpu_scheduling(*cpu_scheduling);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run_until_interrupted(cli)),
        Err(e) => {
            eprintln!("hearsay-bench: no runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_until_interrupted(cli: Cli) -> ExitCode {
    let result = tokio::select! {
        r = run(cli.command) => r,
        _ = tokio::signal::ctrl_c() => {
            // Leaving the select drops `run`'s future and with it every
            // LocalCluster, whose Drop kills the child processes.
            eprintln!("hearsay-bench: interrupted; stopped the servers it started");
            return ExitCode::from(130);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearsay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Write a single-mode report and print its summary.
fn finish(report: &Report, dir: &std::path::Path) -> Result<()> {
    let summary = report.write(dir)?;
    println!("{summary}");
    eprintln!("report in {}", dir.display());
    Ok(())
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Ceiling { listen, .. } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            ceiling::serve(listener).await?;
            Ok(())
        }
        Command::Render { dir } => {
            let text = std::fs::read_to_string(dir.join("report.json"))?;
            let mut report: Report = serde_json::from_str(&text)?;
            for cmp in &mut report.load {
                cmp.summarise();
            }
            let summary = report.summary_md();
            std::fs::write(dir.join("summary.md"), &summary)?;
            println!("{summary}");
            Ok(())
        }
        Command::Scale { cluster, args, out } => {
            let dir = out_dir(out)?;
            let rows = hearsay_bench::scale::run(&args, &cluster, &dir.join("logs")).await?;
            std::fs::write(dir.join("scale.json"), serde_json::to_vec_pretty(&rows)?)?;
            let summary = hearsay_bench::scale::summary_md(&rows);
            std::fs::write(dir.join("scale.md"), &summary)?;
            println!("{summary}");
            Ok(())
        }
        Command::Large { cluster, args, out } => {
            let dir = out_dir(out)?;
            let rows = hearsay_bench::large::run(&args, &cluster, &dir.join("logs")).await?;
            std::fs::write(dir.join("large.json"), serde_json::to_vec_pretty(&rows)?)?;
            let summary = hearsay_bench::large::summary_md(&rows, &args);
            std::fs::write(dir.join("large.md"), &summary)?;
            println!("{summary}");
            Ok(())
        }
        Command::Suite(args) => suite::run(&args).await.map(|_| ()),
        Command::Load {
            cluster,
            workload,
            system,
            repeat,
            name,
            no_others,
            out,
        } => {
            let dir = out_dir(out)?;
            let log_dir = cluster.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
            let ceiling = match system {
                System::Hearsay => None,
                _ => Some(LocalCluster::start(cluster.ceiling_spec(&log_dir)?, 1).await?),
            };
            let local;
            let hearsay = match system {
                System::Ceiling => None,
                _ if !cluster.targets.is_empty() => Some(cluster.targets.clone()),
                _ => {
                    local = LocalCluster::start(cluster.hearsay_spec(&log_dir)?, cluster.replicas)
                        .await?;
                    Some(local.addrs())
                }
            };
            let ceiling_addrs = ceiling.as_ref().map(LocalCluster::addrs);
            let others = if no_others || system != System::Both {
                Others::none()
            } else {
                let replicas = hearsay.as_ref().map_or(0, Vec::len);
                Others::start_installed(&log_dir, replicas, &cluster).await
            };
            let cmp = compare_with(
                &name,
                &workload,
                ceiling_addrs.as_deref(),
                hearsay.as_deref(),
                &others,
                repeat,
            )
            .await?;
            let mut report = Report::new();
            report.load.push(cmp);
            finish(&report, &dir)
        }
        Command::Convergence { cluster, args, out } => {
            let dir = out_dir(out)?;
            let mut report = report::Report::new();
            report.convergence = convergence::run(&args, &cluster, &dir.join("logs")).await?;
            finish(&report, &dir)
        }
        Command::GossipCost { cluster, args, out } => {
            let dir = out_dir(out)?;
            let mut report = Report::new();
            report.gossip_cost = gossip_cost::run(&args, &cluster, &dir.join("logs")).await?;
            finish(&report, &dir)
        }
        Command::Failover { cluster, args, out } => {
            let dir = out_dir(out)?;
            let mut report = Report::new();
            report.failover = Some(failover::run(&args, &cluster, &dir.join("logs")).await?);
            finish(&report, &dir)
        }
        Command::Durability { cluster, args, out } => {
            let dir = out_dir(out)?;
            let result = durability::run(&args, &cluster, &dir.join("logs")).await?;
            std::fs::write(
                dir.join("durability.json"),
                serde_json::to_vec_pretty(&result)?,
            )?;
            let summary = durability::summary_md(&result);
            std::fs::write(dir.join("durability.md"), &summary)?;
            println!("{summary}");
            eprintln!("report in {}", dir.display());
            Ok(())
        }
        Command::Acks { cluster, args, out } => {
            let dir = out_dir(out)?;
            let result = acks::run(&args, &cluster, &dir.join("logs")).await?;
            std::fs::write(dir.join("acks.json"), serde_json::to_vec_pretty(&result)?)?;
            let summary = acks::summary_md(&result);
            std::fs::write(dir.join("acks.md"), &summary)?;
            println!("{summary}");
            eprintln!("report in {}", dir.display());
            Ok(())
        }
        Command::Memory { cluster, args, out } => {
            let dir = out_dir(out)?;
            let (results, notes) = memory::run(&args, &cluster, &dir.join("logs")).await?;
            let summary = memory::summary_md(&results, &notes);
            std::fs::write(dir.join("memory.md"), &summary)?;
            println!("{summary}");
            eprintln!("report in {}", dir.display());
            Ok(())
        }
        Command::StateTransfer { cluster, args, out } => {
            let dir = out_dir(out)?;
            let mut report = Report::new();
            report.state_transfer =
                Some(state_transfer::run(&args, &cluster, &dir.join("logs")).await?);
            finish(&report, &dir)
        }
    }
}
