//! The `hearsay` command line: serving (the default), a local cluster for
//! trying it out, a health probe for container health checks, printing the
//! effective configuration, and a client (`get`, `put`, `delete`, `view`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{self, ClientArgs, Operation, ViewCommand};
use crate::config::{self, CpuScheduling, Overrides};
use crate::launcher;
use crate::telemetry;

#[derive(Parser, Debug)]
#[command(
    name = "hearsay",
    version,
    about = "A replicated, causally consistent key-value store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve one replica (the default): reads SOCKET_ADDRESS and VIEW.
    Serve(SettingsArgs),
    /// Start N replicas on 127.0.0.1 as child processes; Ctrl-C stops them.
    Cluster(ClusterArgs),
    /// Exit 0 if the replica answers GET /health (or /ready) with 200, else 1.
    Probe(ProbeArgs),
    /// Print the effective configuration and where each value came from.
    Config(SettingsArgs),
    /// Read a key (keeps causal metadata between calls).
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a key; VALUE is JSON if it parses, else a string.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show or change a replica's view.
    View {
        #[command(subcommand)]
        action: Option<ViewCommand>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Configuration layers given on the command line.
#[derive(Args, Debug, Default, Clone)]
pub struct SettingsArgs {
    /// TOML configuration file (also HEARSAY_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// This replica's IP:PORT (overrides SOCKET_ADDRESS).
    #[arg(long, value_name = "IP:PORT")]
    pub socket_address: Option<String>,
    /// Initial view, comma-separated (overrides VIEW).
    #[arg(long, value_name = "A,B,C")]
    pub view: Option<String>,
    /// Bind address, if different from the socket address.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Any setting as KEY=VALUE (repeatable), e.g. --set gossip_interval_ms=200.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl SettingsArgs {
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let mut pairs = Vec::new();
        for (key, value) in [
            ("socket_address", &self.socket_address),
            ("view", &self.view),
            ("listen", &self.listen),
            ("log_format", &self.log_format),
        ] {
            if let Some(value) = value {
                pairs.push((key.to_string(), value.clone()));
            }
        }
        for item in &self.set {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got `{item}`"))?;
            pairs.push((key.trim().to_string(), value.trim().to_string()));
        }
        Ok(Overrides {
            file: self.config.clone(),
            pairs,
        })
    }
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// How many replicas.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub replicas: u16,
    /// Port of the first replica; the others follow.
    #[arg(long, default_value_t = 8082)]
    pub base_port: u16,
    /// Extra settings passed to every replica (KEY=VALUE, repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Replica to probe (default: SOCKET_ADDRESS, else 127.0.0.1:8090).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<String>,
    /// Probe readiness (/ready) instead of liveness (/health).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        None => serve(cli.settings),
        Some(Command::Serve(settings)) => serve(settings),
        Some(Command::Config(settings)) => show_config(settings),
        Some(Command::Cluster(args)) => on_runtime(cluster(args)),
        Some(Command::Probe(args)) => on_runtime(probe(args)),
        Some(Command::Get { key, client }) => {
            on_runtime(client::run(client, Operation::Get { key }))
        }
        Some(Command::Put { key, value, client }) => {
            on_runtime(client::run(client, Operation::Put { key, value }))
        }
        Some(Command::Delete { key, client }) => {
            on_runtime(client::run(client, Operation::Delete { key }))
        }
        Some(Command::View { action, client }) => on_runtime(client::run(
            client,
            Operation::View(action.unwrap_or(ViewCommand::List)),
        )),
    }
}

/// Runs a client-side command (anything but serving) to completion.
fn on_runtime<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Serves one replica on a runtime sized by its `worker_threads` setting.
fn serve(settings: SettingsArgs) -> anyhow::Result<std::process::ExitCode> {
    let loaded = config::load(&settings.overrides()?)?;
    telemetry::init_logging(loaded.config.log_format);
    keep_heap_in_small_pages();
    // Before the runtime exists: its threads inherit the class.
    use_cpu_scheduling(loaded.config.cpu_scheduling);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = loaded.config.effective_worker_threads(cores);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(crate::server::serve(
            loaded.config,
            crate::server::termination_signal(),
        ))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Turns transparent huge pages off for this process before the store
/// grows. Resident memory per key is a fully replicated store's capacity,
/// and a huge page becomes resident 2 MiB at a time, however little of it
/// is in use, while memory freed inside one cannot be handed back page by
/// page. Measured with 200,000 small keys (bench/RESULTS.md): resident size
/// grew 132-137 bytes per key without huge pages against 150-153 with them,
/// and CPU per operation did not change.
///
/// mimalloc is built without its request for huge pages (the `no_thp`
/// feature: no `madvise(MADV_HUGEPAGE)` on its arenas), which is all a
/// kernel in `madvise` mode needs, from the first allocation on; this call
/// covers kernels in `always` mode for everything faulted in from here on.
fn keep_heap_in_small_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory
    // map; it reads no pointers.
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    if refused {
        // Old or non-Linux kernels: the store still works, only larger.
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off: resident size per key may be larger"
        );
    }
}

/// Puts the calling thread, and so every thread it starts from here on, in
/// the scheduling class `scheduling` names (see [`CpuScheduling`] for why
/// batch is the default). Needs no privilege; where the kernel refuses, the
/// replica runs in the class it has, with a warning.
pub fn use_cpu_scheduling(scheduling: CpuScheduling) {
    #[cfg(target_os = "linux")]
    {
        let policy = match scheduling {
            CpuScheduling::Batch => libc::SCHED_BATCH,
            CpuScheduling::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call;
        // pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            tracing::warn!(
                ?scheduling,
                error = %std::io::Error::last_os_error(),
                "could not set the threads' scheduling class; keeping the current one"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = scheduling;
}

fn show_config(settings: SettingsArgs) -> anyhow::Result<std::process::ExitCode> {
    let loaded = config::load(&settings.overrides()?)?;
    let rows = loaded.explain();
    let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    for (key, value, source) in rows {
        println!("{key:<width$} = {value:<24} # {source}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn probe(args: ProbeArgs) -> anyhow::Result<std::process::ExitCode> {
    let addr = args
        .addr
        .or_else(|| std::env::var("SOCKET_ADDRESS").ok())
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let path = if args.ready { "ready" } else { "health" };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()?;
    match client.get(format!("http://{addr}/{path}")).send().await {
        Ok(response) if response.status().is_success() => Ok(std::process::ExitCode::SUCCESS),
        Ok(response) => {
            eprintln!("{addr}/{path}: {}", response.status());
            Ok(std::process::ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("{addr}/{path}: {error}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// How long `hearsay cluster` waits for all its replicas to become ready.
const CLUSTER_READY_WITHIN: Duration = Duration::from_secs(10);

async fn cluster(args: ClusterArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let exe = std::env::current_exe()?;
    let addresses = launcher::consecutive_addresses(args.base_port, args.replicas)?;
    let view = launcher::view_of(&addresses);
    let mut children = Vec::new();
    for address in &addresses {
        // Replica output goes to this terminal, and the user's HEARSAY_*
        // variables apply to every replica.
        let command = launcher::ReplicaCommand::new(&exe, address, view.as_str())
            .settings(args.set.iter().cloned())
            .build()?;
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        children.push(command.spawn()?);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let deadline = tokio::time::Instant::now() + CLUSTER_READY_WITHIN;
    for (address, child) in addresses.iter().zip(&mut children) {
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let exited = || child.try_wait().ok().flatten();
        match launcher::wait_ready(&client, address, within, Duration::from_millis(50), exited)
            .await
        {
            Ok(_) => {}
            Err(launcher::NotReady::Exited(status)) => {
                anyhow::bail!("{address} exited with {status} before it was ready")
            }
            Err(launcher::NotReady::TimedOut) => {
                anyhow::bail!("{address} did not become ready in 10 s")
            }
        }
    }
    let first = &addresses[0];
    let last = addresses.last().expect("at least one replica");
    println!(
        "hearsay: {} replicas up: {}",
        addresses.len(),
        addresses.join(" ")
    );
    println!("try (the client keeps the causal metadata between calls, so the read at");
    println!("another replica waits for the write instead of answering from older state):");
    println!("  hearsay put greeting hello --addr {first}");
    println!("  hearsay get greeting --addr {last}");
    println!("  curl -s http://{first}/view");
    println!("Ctrl-C stops the cluster.");
    crate::server::termination_signal().await;
    for child in &children {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for mut child in children {
        let _ = tokio::time::timeout(Duration::from_secs(3), child.wait()).await;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
