//! Other stores measured beside hearsay and the ceiling: Redis and etcd, when
//! their servers (`redis-server`, `etcd`; Debian packages `redis-server` and
//! `etcd-server`) are on the `PATH`. Each is started here on free 127.0.0.1
//! ports with a temporary directory, and killed (and its directory removed)
//! when the [`Others`] is dropped. A store that is not installed or does not
//! come up is left out with a note, and the run goes on.
//!
//! - Redis: one `redis-server`, persistence off (`--save '' --appendonly no`):
//!   the in-memory single-node reference.
//! - etcd: three members (a replicated store, like hearsay's three replicas),
//!   driven through the v3 HTTP/JSON gateway. Their data directories are in
//!   `/dev/shm` when it exists, so that etcd's fsync per write measures etcd,
//!   not this machine's disk.
//!
//! Beside them, when hearsay runs as several local replicas, the **split
//! ceiling**: one ceiling process per replica, every one preloaded with every
//! key, driven in the same shape. It does no replication and keeps no
//! causality, so what it loses against the one-process ceiling is the price
//! of splitting the same cores among several processes (more wake-ups and
//! context switches per request); that bounds what hearsay's spread shape can
//! reach on a machine whose replicas share cores. With all load on one
//! replica it would only repeat the ceiling, so it is not run in that shape.
//! When hearsay's replicas run a set number of threads (`worker_threads`,
//! e.g. through `--replica-env HEARSAY_WORKER_THREADS=1`), each split
//! ceiling process runs as many (`TOKIO_WORKER_THREADS`), so the bound is
//! for the same split of the cores; otherwise each uses every core, as
//! hearsay does by default.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::{Outcome, Session};
use crate::cluster::{free_ports, ClusterArgs, LocalCluster, ProcSpec};
use hearsay::config::CpuScheduling;

/// The split ceiling's name among [`Others::systems`].
pub const SPLIT_CEILING: &str = "split-ceiling";

/// How long a store may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The other stores running for this bench, and why any is missing.
#[derive(Default)]
pub struct Others {
    /// Name and session targets (`redis://…`, `etcd://…`) of each running store.
    pub systems: Vec<(String, Vec<String>)>,
    /// One line per store left out.
    pub notes: Vec<String>,
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
    /// The split ceiling's processes, stopped when this is dropped.
    split_ceiling: Option<LocalCluster>,
}

impl Others {
    /// No other store (the caller asked for none).
    pub fn none() -> Self {
        Others::default()
    }

    /// Start every installed one, and a split ceiling of `replicas`
    /// processes (each with the replicas' `worker_threads` when set, in the
    /// ceiling's scheduling class) when that is more than one; never fails (a
    /// failure becomes a note).
    pub async fn start_installed(log_dir: &Path, replicas: usize, cluster: &ClusterArgs) -> Self {
        let mut others = Others::default();
        if let Err(e) = std::fs::create_dir_all(log_dir) {
            others.notes.push(format!("others: no log directory: {e}"));
            return others;
        }
        if replicas > 1 {
            if let Err(e) = others
                .start_split_ceiling(
                    log_dir,
                    replicas,
                    cluster.hearsay_worker_threads(),
                    cluster.ceiling_cpu_scheduling,
                )
                .await
            {
                others
                    .notes
                    .push(format!("{SPLIT_CEILING}: skipped: {e:#}"));
            }
        }
        match which("redis-server") {
            None => others
                .notes
                .push("redis: skipped: not installed (redis-server not on PATH)".into()),
            Some(bin) => {
                if let Err(e) = others.start_redis(&bin, log_dir).await {
                    others.notes.push(format!("redis: skipped: {e:#}"));
                }
            }
        }
        match which("etcd") {
            None => others
                .notes
                .push("etcd: skipped: not installed (etcd not on PATH)".into()),
            Some(bin) => {
                if let Err(e) = others.start_etcd(&bin, log_dir).await {
                    others.notes.push(format!("etcd: skipped: {e:#}"));
                }
            }
        }
        for note in &others.notes {
            eprintln!("{note}");
        }
        others
    }

    fn spawn(&mut self, mut cmd: Command, log: &Path) -> Result<()> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        self.children.push(child);
        Ok(())
    }

    async fn start_split_ceiling(
        &mut self,
        log_dir: &Path,
        processes: usize,
        worker_threads: Option<usize>,
        scheduling: CpuScheduling,
    ) -> Result<()> {
        let mut spec = ProcSpec::ceiling(log_dir, READY_TIMEOUT, scheduling)?;
        spec.name = SPLIT_CEILING.into();
        if let Some(threads) = worker_threads {
            spec.env
                .push(("TOKIO_WORKER_THREADS".into(), threads.to_string()));
        }
        let cluster = LocalCluster::start(spec, processes).await?;
        self.systems.push((SPLIT_CEILING.into(), cluster.addrs()));
        self.split_ceiling = Some(cluster);
        Ok(())
    }

    async fn start_redis(&mut self, bin: &Path, log_dir: &Path) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let port = free_ports(1)?[0];
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path());
        self.dirs.push(dir);
        self.spawn(cmd, &log_dir.join("redis.log"))?;
        let target = format!("redis://127.0.0.1:{port}");
        wait_answers(&target).await?;
        self.systems.push(("redis".into(), vec![target]));
        Ok(())
    }

    async fn start_etcd(&mut self, bin: &Path, log_dir: &Path) -> Result<()> {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(&shm)?
        } else {
            tempfile::tempdir()?
        };
        let ports = free_ports(6)?;
        let (client, peer) = ports.split_at(3);
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let cluster: Vec<String> = peer
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={}", url(*p)))
            .collect();
        let data = dir.path().to_path_buf();
        self.dirs.push(dir);
        for i in 0..3 {
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    data.join(format!("m{i}")).display()
                ))
                .arg(format!("--listen-client-urls={}", url(client[i])))
                .arg(format!("--advertise-client-urls={}", url(client[i])))
                .arg(format!("--listen-peer-urls={}", url(peer[i])))
                .arg(format!("--initial-advertise-peer-urls={}", url(peer[i])))
                .arg(format!("--initial-cluster={}", cluster.join(",")))
                .arg("--initial-cluster-token=hearsay-bench")
                .arg("--initial-cluster-state=new")
                .arg("--logger=zap")
                .arg("--log-level=warn");
            self.spawn(cmd, &log_dir.join(format!("etcd-m{i}.log")))?;
        }
        let targets: Vec<String> = client
            .iter()
            .map(|p| format!("etcd://127.0.0.1:{p}"))
            .collect();
        for t in &targets {
            wait_answers(t).await?;
        }
        self.systems.push(("etcd".into(), targets));
        Ok(())
    }
}

impl Drop for Others {
    fn drop(&mut self) {
        for child in &mut self.children {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// Poll with a small write until the store at `target` accepts it.
async fn wait_answers(target: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut s = Session::with_timeout(target, Duration::from_secs(1));
        if let Outcome::Ok(_) = s.put("bench-ready", &"1".into()).await {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{target} did not accept a write within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The program `name` on the `PATH`, if any.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
