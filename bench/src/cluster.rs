//! Local processes under test: a hearsay cluster (or the ceiling server) started
//! as child processes on 127.0.0.1, waited for, signalled and torn down.
//!
//! [`LocalCluster`] owns its children and kills them in `Drop`, so a panic or an
//! early return (Ctrl-C is turned into one in `main`) never leaves replicas
//! running and holding ports.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use hearsay::config::CpuScheduling;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Options shared by every mode that starts or drives a cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Drive an existing cluster at these addresses instead of starting one
    /// (comma-separated `IP:PORT`). Modes that must kill or start replicas
    /// (failover, state-transfer) need a local cluster and refuse this.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// The hearsay binary for local clusters [default: `hearsay` next to this binary].
    #[arg(long)]
    pub hearsay_bin: Option<PathBuf>,
    /// Number of replicas in a local cluster.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Extra environment for every local replica, `KEY=VALUE` (repeatable),
    /// e.g. to set hearsay's gossip interval.
    #[arg(long = "replica-env", value_name = "KEY=VALUE")]
    pub replica_env: Vec<String>,
    /// How long a local replica may take to answer its first request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub ready_timeout: Duration,
    /// Where replica logs go [default: a `logs/` folder in the report directory].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Scheduling class of the ceiling's threads (and the split ceiling's):
    /// `normal`, a bare server as its user would run it (what the ratios are
    /// against), or `batch`, hearsay's default, to see how much of a ratio
    /// the class itself explains.
    #[arg(long, value_enum, default_value = "normal")]
    pub ceiling_cpu_scheduling: CpuScheduling,
}

impl ClusterArgs {
    /// The hearsay binary: the flag, else `hearsay` beside the running bench
    /// binary (cargo puts both in the same `target/<profile>/`).
    pub fn hearsay_bin(&self) -> Result<PathBuf> {
        if let Some(bin) = &self.hearsay_bin {
            return Ok(bin.clone());
        }
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        // Test binaries live one level down, in target/<profile>/deps.
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(dir.join("hearsay"))
    }

    /// Parsed `--replica-env` pairs.
    pub fn env_pairs(&self) -> Result<Vec<(String, String)>> {
        self.replica_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--replica-env {kv:?} is not KEY=VALUE"))
            })
            .collect()
    }

    /// A setting's effective value as `hearsay config` prints it for replicas
    /// started with these options (`key = value   # source` lines).
    pub fn hearsay_setting(&self, key: &str) -> Option<String> {
        let out = Command::new(self.hearsay_bin().ok()?)
            .arg("config")
            // Placeholders: `config` validates the addresses it is given.
            .env("SOCKET_ADDRESS", "127.0.0.1:1")
            .env("VIEW", "127.0.0.1:1")
            .envs(self.env_pairs().ok()?)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let (k, rest) = line.split_once('=')?;
                let value = rest.split('#').next()?.trim();
                (k.trim() == key).then(|| value.to_string())
            })
    }

    /// The runtime threads every replica is set to run, when set
    /// (`worker_threads` other than 0, its "every core" default).
    pub fn hearsay_worker_threads(&self) -> Option<usize> {
        self.hearsay_setting("worker_threads")?
            .parse()
            .ok()
            .filter(|&threads| threads > 0)
    }

    /// A spec for starting the ceiling with these options.
    pub fn ceiling_spec(&self, log_dir: &Path) -> Result<ProcSpec> {
        ProcSpec::ceiling(log_dir, self.ready_timeout, self.ceiling_cpu_scheduling)
    }

    /// A spec for starting hearsay replicas with these options.
    pub fn hearsay_spec(&self, log_dir: &Path) -> Result<ProcSpec> {
        let bin = self.hearsay_bin()?;
        if !bin.exists() {
            bail!(
                "hearsay binary {} not found: build it with `cargo build --release --bin hearsay` \
                 or pass --hearsay-bin",
                bin.display()
            );
        }
        let mut env = vec![("RUST_LOG".to_string(), "warn".to_string())];
        env.extend(self.env_pairs()?);
        Ok(ProcSpec {
            name: "hearsay".into(),
            program: bin,
            args: vec![],
            env,
            log_dir: self
                .log_dir
                .clone()
                .unwrap_or_else(|| log_dir.to_path_buf()),
            ready_timeout: self.ready_timeout,
        })
    }
}

/// In a [`ProcSpec`] environment value, replaced by the replica's port, so
/// that each replica of one spec gets its own data directory.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// How to start one kind of server process.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    /// Used in log file names and messages.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
    pub ready_timeout: Duration,
}

impl ProcSpec {
    /// The ceiling server: this very binary's `ceiling` subcommand, so that it
    /// runs in its own process exactly like a replica does.
    pub fn ceiling(
        log_dir: &Path,
        ready_timeout: Duration,
        scheduling: CpuScheduling,
    ) -> Result<Self> {
        let class = scheduling
            .to_possible_value()
            .expect("every class has a name");
        Ok(ProcSpec {
            name: "ceiling".into(),
            program: std::env::current_exe().context("locating the bench binary")?,
            args: vec![
                "ceiling".into(),
                "--cpu-scheduling".into(),
                class.get_name().into(),
            ],
            env: vec![],
            log_dir: log_dir.to_path_buf(),
            ready_timeout,
        })
    }
}

/// One child process and the address it serves.
pub struct Replica {
    pub addr: String,
    child: Option<Child>,
}

impl Replica {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A set of local server processes that share one `VIEW`.
pub struct LocalCluster {
    spec: ProcSpec,
    pub replicas: Vec<Replica>,
    /// Restarts get a fresh log file each, numbered by this counter.
    spawns: usize,
}

/// Reserve `n` distinct free ports on 127.0.0.1. The listeners are dropped
/// before the servers bind, which is racy in principle but fine on a machine
/// where nothing else grabs ephemeral ports in that instant.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reserving local ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

impl LocalCluster {
    /// Start `n` processes on fresh local ports, each told about all of them,
    /// and wait until every one answers.
    pub async fn start(spec: ProcSpec, n: usize) -> Result<Self> {
        std::fs::create_dir_all(&spec.log_dir)
            .with_context(|| format!("creating {}", spec.log_dir.display()))?;
        let addrs: Vec<String> = free_ports(n)?
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut cluster = LocalCluster {
            spec,
            replicas: Vec::new(),
            spawns: 0,
        };
        let view = addrs.join(",");
        for addr in &addrs {
            let child = cluster.spawn(addr, &view)?;
            cluster.replicas.push(Replica {
                addr: addr.clone(),
                child: Some(child),
            });
        }
        for i in 0..n {
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.clone()).collect()
    }

    fn spawn(&mut self, addr: &str, view: &str) -> Result<Child> {
        self.spawns += 1;
        let log_path = self.spec.log_dir.join(format!(
            "{}-{}-{}.log",
            self.spec.name,
            addr.replace([':', '.'], "_"),
            self.spawns
        ));
        let log = File::create(&log_path)
            .with_context(|| format!("creating log {}", log_path.display()))?;
        let port = addr.rsplit(':').next().unwrap_or_default();
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .env("SOCKET_ADDRESS", addr)
            .env("VIEW", view)
            .envs(
                self.spec
                    .env
                    .iter()
                    .map(|(k, v)| (k, v.replace(PORT_PLACEHOLDER, port))),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
            .with_context(|| format!("starting {}", self.spec.program.display()))
    }

    /// Poll until replica `i` answers `GET /health` or `GET /view` with 200
    /// (early store versions have no `/health`), failing early if it exited.
    pub async fn wait_ready(&mut self, i: usize) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + self.spec.ready_timeout;
        let http = probe_client();
        let addr = self.replicas[i].addr.clone();
        loop {
            if let Some(child) = self.replicas[i].child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{} at {addr} exited with {status} before answering (logs in {})",
                        self.spec.name,
                        self.spec.log_dir.display()
                    );
                }
            }
            for path in ["/health", "/view"] {
                if let Ok(resp) = http.get(format!("http://{addr}{path}")).send().await {
                    if resp.status().is_success() {
                        return Ok(started.elapsed());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} at {addr} did not answer within {:?}",
                    self.spec.name,
                    self.spec.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Start one more process whose `VIEW` names every existing member and
    /// itself; returns its index. Does not wait for it.
    pub fn add(&mut self) -> Result<usize> {
        let port = free_ports(1)?[0];
        let addr = format!("127.0.0.1:{port}");
        let mut view = self.addrs();
        view.push(addr.clone());
        let child = self.spawn(&addr, &view.join(","))?;
        self.replicas.push(Replica {
            addr,
            child: Some(child),
        });
        Ok(self.replicas.len() - 1)
    }

    /// SIGKILL replica `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.replicas[i].child.take() {
            // A stopped process still dies on SIGKILL, so no SIGCONT first.
            child.kill().ok();
            child.wait()?;
        }
        Ok(())
    }

    /// Send `sig` (e.g. SIGSTOP / SIGCONT / SIGTERM) to replica `i`.
    pub fn signal(&self, i: usize, sig: Signal) -> Result<()> {
        let pid = self.replicas[i]
            .pid()
            .with_context(|| format!("replica {i} is not running"))?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("sending {sig} to {pid}"))
    }

    /// Start replica `i` again at the same address (after [`Self::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let view = self.addrs().join(",");
        let addr = self.replicas[i].addr.clone();
        let child = self.spawn(&addr, &view)?;
        self.replicas[i].child = Some(child);
        Ok(())
    }

    /// Resident set size of replica `i` in bytes, from /proc.
    pub fn rss_bytes(&self, i: usize) -> Option<u64> {
        let pid = self.replicas[i].pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            let _ = self.kill(i);
        }
    }
}

/// A client for probes (readiness, views, metrics): short timeouts so a stalled
/// replica never stalls the bench, and no connection reuse so a killed replica's
/// pooled sockets cannot confuse the next probe.
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .pool_max_idle_per_host(0)
        .build()
        .expect("building an HTTP client with static settings cannot fail")
}

/// Whether the replica at `addr` answers `GET /ready` with 200 (false also
/// when the endpoint is missing or the replica does not answer).
pub async fn is_ready(http: &reqwest::Client, addr: &str) -> bool {
    matches!(http.get(format!("http://{addr}/ready")).send().await, Ok(r) if r.status().is_success())
}

/// `GET /view` of one replica, or `None` if it does not answer.
pub async fn get_view(http: &reqwest::Client, addr: &str) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct View {
        view: Vec<String>,
    }
    let resp = http.get(format!("http://{addr}/view")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<View>().await.ok().map(|v| v.view)
}

/// Wait until `check` holds for the views of every replica in `observers`
/// (each view must be answered); polls every 10 ms until `timeout`.
/// Returns the time it took, or `None` on timeout.
pub async fn wait_views(
    http: &reqwest::Client,
    observers: &[String],
    timeout: Duration,
    check: impl Fn(&[String]) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let views = futures::future::join_all(observers.iter().map(|a| get_view(http, a))).await;
        if views.iter().all(|v| v.as_deref().is_some_and(&check)) {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(replica_env: &[&str]) -> ClusterArgs {
        ClusterArgs {
            targets: Vec::new(),
            hearsay_bin: None,
            replicas: 3,
            replica_env: replica_env.iter().map(|kv| kv.to_string()).collect(),
            ready_timeout: Duration::from_secs(20),
            log_dir: None,
            ceiling_cpu_scheduling: CpuScheduling::Normal,
        }
    }

    /// Runs only where the workspace built `hearsay` beside the tests (as
    /// `cargo nextest run --workspace` does).
    #[test]
    fn the_replicas_thread_setting_is_read_from_hearsay_config() {
        let every_core = args(&[]);
        let bin = every_core.hearsay_bin().unwrap();
        if !bin.is_file() {
            eprintln!("skipped: {} not built", bin.display());
            return;
        }
        assert_eq!(every_core.hearsay_worker_threads(), None);
        let one = args(&["HEARSAY_WORKER_THREADS=1"]);
        assert_eq!(one.hearsay_worker_threads(), Some(1));
        let three = args(&["HEARSAY_WORKER_THREADS=3"]);
        assert_eq!(three.hearsay_worker_threads(), Some(3));
    }
    #[test]
    fn the_ceiling_runs_in_the_class_it_is_given() {
        let dir = std::env::temp_dir();
        for (class, arg) in [
            (CpuScheduling::Normal, "normal"),
            (CpuScheduling::Batch, "batch"),
        ] {
            let spec = ProcSpec::ceiling(&dir, Duration::from_secs(1), class).unwrap();
            assert_eq!(spec.args, ["ceiling", "--cpu-scheduling", arg]);
        }
    }
}
