//! A three-replica hearsay cluster in Docker, and the fault primitives the
//! nemesis uses on it.
//!
//! This module owns every `docker`, `nsenter`, `iptables` and `tc` command
//! the suite runs. The cluster uses its own network, container names and
//! published ports (not the compose file's), so it does not collide with a
//! cluster a developer has running or with the assignment's scripts; a
//! leftover from a crashed run is removed before a new one starts. Dropping
//! a [`Cluster`] removes its containers and network unless
//! `HEARSAY_FAULT_KEEP=1` is set (to inspect a failure).
//!
//! Clients on the host reach replicas only through `127.0.0.1:PORT`; the
//! 10.x addresses are used only inside the Docker network and for the
//! iptables rules that cut replicas off from each other.
//!
//! Every cluster runs with a fresh random cluster key, and a
//! [`Capture`](crate::wire::Capture) reads every frame on the network's
//! bridge from just after the network exists until the cluster is checked
//! or dropped (see [`crate::wire`]). The key reaches `docker run` through
//! the environment of the `docker` process, never its arguments, so no
//! command line or error message shows it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::client::{self, Endpoint};
use crate::wire::{self, Capture, ClusterKey, Tally};

/// Docker image the suite runs.
pub const DEFAULT_IMAGE: &str = "hearsay:latest";

/// Where the cluster lives. The defaults stay clear of the compose file's
/// 10.10.0.0/16 and ports 8082–8084.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub image: String,
    pub network: String,
    /// Name of the network's Linux bridge (at most 15 characters), where
    /// the wire capture listens.
    pub bridge: String,
    /// First three octets; replicas get `.2`, `.3`, `.4`, the gateway `.1`.
    pub subnet_prefix: String,
    pub container_prefix: String,
    pub names: Vec<String>,
    pub first_host_port: u16,
    /// Extra `-e KEY=VALUE` settings for every replica.
    pub env: Vec<(String, String)>,
    /// Give every replica a data directory (`HEARSAY_DATA_DIR=/data`) on
    /// its own named volume, so a killed and restarted container recovers
    /// from disk. The volumes live as long as the cluster.
    pub data_volumes: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            image: std::env::var("HEARSAY_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned()),
            network: "hearsay-faults".to_owned(),
            bridge: "br-hs-faults".to_owned(),
            subnet_prefix: "10.88.0".to_owned(),
            container_prefix: "hearsay-faults-".to_owned(),
            names: ["alice", "bob", "carol"].map(String::from).to_vec(),
            first_host_port: 18082,
            env: vec![("RUST_LOG".to_owned(), "info".to_owned())],
            data_volumes: false,
        }
    }
}

/// One replica container.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub container: String,
    pub ip: String,
    /// Published port on 127.0.0.1.
    pub host_port: u16,
    pub endpoint: Endpoint,
}

impl Node {
    pub fn socket_address(&self) -> String {
        format!("{}:8090", self.ip)
    }

    /// Name of the replica's data volume (used when the spec asks for one).
    pub fn volume(&self) -> String {
        format!("{}-data", self.container)
    }
}

/// Error from a command the harness ran.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct CmdError {
    pub command: String,
    pub detail: String,
}

/// Runs a command, returning its stdout; a non-zero exit is an error
/// carrying stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, CmdError> {
    run_with_env(program, args, &[]).await
}

/// Like [`run`], with extra environment variables for the program. They
/// are not part of the command shown in errors (secrets go here).
pub async fn run_with_env(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, CmdError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CmdError {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CmdError {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Like [`run`] from synchronous code (`Drop`).
fn run_sync(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks that Docker, the image and the host tools are there. Panics with
/// what to run when not: the suite must fail, not skip, without Docker.
pub async fn preflight(image: &str) {
    if let Err(e) = run("docker", &["info", "--format", "{{.ServerVersion}}"]).await {
        panic!(
            "Docker is not available ({e}).\n\
             Run `scripts/ensure-docker` (installs and starts the engine) and then \
             `scripts/build-image` (builds the static binary and the `{image}` image)."
        );
    }
    if let Err(e) = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", image],
    )
    .await
    {
        panic!(
            "The image `{image}` is missing ({e}).\n\
             Run `scripts/build-image` first: it builds the static hearsay binary and the image."
        );
    }
    for tool in ["nsenter", "iptables"] {
        if run("sh", &["-c", &format!("command -v {tool}")])
            .await
            .is_err()
        {
            panic!("`{tool}` is missing on the host; run `scripts/ensure-docker`.");
        }
    }
    if let Err(e) = wire::probe() {
        panic!(
            "The wire capture cannot open a raw packet socket ({e}).\n\
             The fault suite must run as root (or with CAP_NET_RAW): every scenario \
             captures the cluster's bridge to prove the cluster key never crosses it, \
             and it fails rather than skip that proof."
        );
    }
    warn_if_image_stale(image).await;
}

/// A stale image silently tests old code: say so loudly.
async fn warn_if_image_stale(image: &str) {
    let bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/x86_64-unknown-linux-gnu/release/hearsay"
    );
    let Ok(meta) = std::fs::metadata(bin) else {
        return;
    };
    let Ok(modified) = meta.modified() else {
        return;
    };
    let Ok(created) = run(
        "docker",
        &["image", "inspect", "--format", "{{.Created}}", image],
    )
    .await
    else {
        return;
    };
    // Compare as Unix seconds via `date`, which parses Docker's RFC 3339.
    if let Ok(secs) = run("date", &["-d", created.trim(), "+%s"]).await {
        if let (Ok(img), Ok(bin_time)) = (
            secs.trim().parse::<u64>(),
            modified.duration_since(std::time::UNIX_EPOCH),
        ) {
            if bin_time.as_secs() > img + 5 {
                eprintln!(
                    "WARNING: {bin} is newer than the image `{image}`; \
                     run `scripts/build-image` to test the current code."
                );
            }
        }
    }
}

/// The first of `count` consecutive loopback ports, at `preferred` or in
/// steps of 100 above it, that nothing listens on right now (a developer's
/// `hearsay cluster` may hold the preferred ones).
fn free_port_block(preferred: u16, count: usize) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    (0..50u16)
        .map(|i| preferred.saturating_add(i * 100))
        .find(|&base| (0..count as u16).all(|i| free(base + i)))
        .unwrap_or(preferred)
}

/// A running cluster; removed on drop.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<Node>,
    keep: bool,
    /// Fault-injection tool for packet loss, found on first use.
    loss_with_tc: Option<bool>,
    /// This cluster's key (`HEARSAY_CLUSTER_KEY` of every replica).
    pub key: ClusterKey,
    /// The wire capture, until [`Cluster::finish_capture`] takes it.
    capture: Option<Capture>,
}

impl Cluster {
    /// Starts the replicas and waits until every one lists all of them in
    /// its view.
    pub async fn start(mut spec: ClusterSpec) -> Cluster {
        preflight(&spec.image).await;
        // A crashed run's containers would hold the ports: remove them first.
        for name in &spec.names {
            let container = format!("{}{name}", spec.container_prefix);
            run_sync("docker", &["rm", "-f", &container]);
            // A crashed durable run's data must not leak into this one.
            run_sync(
                "docker",
                &["volume", "rm", "-f", &format!("{container}-data")],
            );
        }
        run_sync("docker", &["network", "rm", &spec.network]);
        assert!(
            spec.bridge.len() <= 15,
            "bridge name {:?} is longer than Linux allows (15)",
            spec.bridge
        );
        spec.first_host_port = free_port_block(spec.first_host_port, spec.names.len());
        let nodes: Vec<Node> = spec
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let host_port = spec.first_host_port + i as u16;
                Node {
                    name: name.clone(),
                    container: format!("{}{name}", spec.container_prefix),
                    ip: format!("{}.{}", spec.subnet_prefix, i + 2),
                    host_port,
                    endpoint: Endpoint::new(name, host_port),
                }
            })
            .collect();
        let mut cluster = Cluster {
            keep: std::env::var("HEARSAY_FAULT_KEEP").is_ok_and(|v| v == "1"),
            spec,
            nodes,
            loss_with_tc: None,
            key: ClusterKey::random(),
            capture: None,
        };
        eprintln!("cluster key: {}", cluster.key);
        let subnet = format!("--subnet={}.0/24", cluster.spec.subnet_prefix);
        let bridge = format!("com.docker.network.bridge.name={}", cluster.spec.bridge);
        run(
            "docker",
            &[
                "network",
                "create",
                &subnet,
                "-o",
                &bridge,
                &cluster.spec.network,
            ],
        )
        .await
        .expect("creating the Docker network");
        let replica_ips = cluster
            .nodes
            .iter()
            .map(|n| n.ip.parse().expect("replica addresses are IPv4"))
            .collect();
        match Capture::start(&cluster.spec.bridge, &cluster.key, replica_ips) {
            Ok(capture) => cluster.capture = Some(capture),
            Err(e) => panic!(
                "cannot capture the bridge {} of network {}: {e}",
                cluster.spec.bridge, cluster.spec.network
            ),
        }
        let view = cluster
            .nodes
            .iter()
            .map(Node::socket_address)
            .collect::<Vec<_>>()
            .join(",");
        for node in &cluster.nodes {
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &node.container,
                "--net",
                &cluster.spec.network,
                "--ip",
                &node.ip,
                "-p",
                &format!("127.0.0.1:{}:8090", node.host_port),
                "-e",
                &format!("SOCKET_ADDRESS={}", node.socket_address()),
                "-e",
                &format!("VIEW={view}"),
                // Without a value: Docker takes it from its own environment.
                "-e",
                "HEARSAY_CLUSTER_KEY",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if cluster.spec.data_volumes {
                args.push("-v".into());
                args.push(format!("{}:/data", node.volume()));
                args.push("-e".into());
                args.push("HEARSAY_DATA_DIR=/data".into());
            }
            for (k, v) in &cluster.spec.env {
                args.push("-e".into());
                args.push(format!("{k}={v}"));
            }
            args.push(cluster.spec.image.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_with_env(
                "docker",
                &args,
                &[("HEARSAY_CLUSTER_KEY", cluster.key.expose())],
            )
            .await
            .expect("starting a replica");
        }
        if let Err(e) = cluster.wait_full_views(Duration::from_secs(30)).await {
            cluster.dump_logs(40).await;
            panic!("cluster did not come up: {e}");
        }
        cluster
    }

    fn remove_leftovers(&self) {
        for node in &self.nodes {
            run_sync("docker", &["rm", "-f", &node.container]);
            if self.spec.data_volumes {
                run_sync("docker", &["volume", "rm", "-f", &node.volume()]);
            }
        }
        run_sync("docker", &["network", "rm", &self.spec.network]);
    }

    /// Stops the wire capture and returns what it saw (`None` once taken).
    pub fn finish_capture(&mut self) -> Option<Tally> {
        self.capture.take().map(Capture::finish)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes.iter().map(|n| n.endpoint.clone()).collect()
    }

    /// Every replica's address, sorted as `/view` sorts them.
    pub fn full_view(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(Node::socket_address).collect();
        v.sort();
        v
    }

    /// Polls until every replica answers `/view` with all replicas.
    pub async fn wait_full_views(&self, deadline: Duration) -> Result<Duration, String> {
        let http = client::http_client(Duration::from_secs(1));
        let start = Instant::now();
        let want = self.full_view();
        loop {
            let mut last = Ok(());
            for node in &self.nodes {
                match client::view(&http, &node.endpoint).await {
                    Ok(v) if v == want => {}
                    Ok(v) => last = Err(format!("{} has view {v:?}", node.name)),
                    Err(e) => last = Err(format!("{}: {e}", node.name)),
                }
            }
            match last {
                Ok(()) => return Ok(start.elapsed()),
                Err(e) if start.elapsed() > deadline => {
                    return Err(format!("after {deadline:?}: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn docker(&self, args: &[&str]) -> Result<(), CmdError> {
        run("docker", args).await.map(|_| ())
    }

    /// `docker stop` (SIGTERM, then SIGKILL after a grace period). A replica
    /// must leave by itself and exit 0: a non-zero exit (137 when Docker had
    /// to SIGKILL it after the grace period) is an error.
    pub async fn stop(&self, node: &Node) -> Result<(), CmdError> {
        self.stop_many(std::slice::from_ref(node)).await
    }

    async fn check_exit_code(&self, node: &Node, took: Duration) -> Result<(), CmdError> {
        let code = run(
            "docker",
            &[
                "inspect",
                "--format",
                "{{.State.ExitCode}}",
                &node.container,
            ],
        )
        .await?;
        if code.trim() == "0" {
            Ok(())
        } else {
            Err(CmdError {
                command: format!("docker stop {}", node.container),
                detail: format!(
                    "replica exited with code {} after {:.1}s instead of leaving cleanly on SIGTERM",
                    code.trim(),
                    took.as_secs_f64()
                ),
            })
        }
    }

    /// One `docker stop` for several containers: Docker signals them all
    /// at once and waits for each.
    pub async fn stop_many(&self, nodes: &[Node]) -> Result<(), CmdError> {
        let mut args = vec!["stop", "-t", "5"];
        args.extend(nodes.iter().map(|n| n.container.as_str()));
        let started = Instant::now();
        self.docker(&args).await?;
        for node in nodes {
            self.check_exit_code(node, started.elapsed()).await?;
        }
        Ok(())
    }

    pub async fn start_node(&self, node: &Node) -> Result<(), CmdError> {
        self.docker(&["start", &node.container]).await
    }

    /// `docker kill` (SIGKILL): the replica's memory is gone.
    pub async fn kill(&self, node: &Node) -> Result<(), CmdError> {
        self.kill_many(std::slice::from_ref(node)).await
    }

    /// One `docker kill` (SIGKILL) of several containers: no replica gets
    /// to hand anything to another, as in a power cut of the whole cluster
    /// (except that the OS keeps what the processes had written).
    pub async fn kill_many(&self, nodes: &[Node]) -> Result<(), CmdError> {
        let mut args = vec!["kill", "-s", "KILL"];
        args.extend(nodes.iter().map(|n| n.container.as_str()));
        self.docker(&args).await
    }

    /// One `docker start` of several containers.
    pub async fn start_many(&self, nodes: &[Node]) -> Result<(), CmdError> {
        let mut args = vec!["start"];
        args.extend(nodes.iter().map(|n| n.container.as_str()));
        self.docker(&args).await
    }

    pub async fn pause(&self, node: &Node) -> Result<(), CmdError> {
        self.docker(&["pause", &node.container]).await
    }

    pub async fn unpause(&self, node: &Node) -> Result<(), CmdError> {
        self.docker(&["unpause", &node.container]).await
    }

    pub async fn disconnect(&self, node: &Node) -> Result<(), CmdError> {
        self.docker(&["network", "disconnect", &self.spec.network, &node.container])
            .await
    }

    /// Reconnects with the same address, so the replica keeps its identity.
    pub async fn connect(&self, node: &Node) -> Result<(), CmdError> {
        self.docker(&[
            "network",
            "connect",
            "--ip",
            &node.ip,
            &self.spec.network,
            &node.container,
        ])
        .await
    }

    /// Host PID of the container's init process, to enter its namespaces.
    async fn pid(&self, node: &Node) -> Result<String, CmdError> {
        let pid = run(
            "docker",
            &["inspect", "--format", "{{.State.Pid}}", &node.container],
        )
        .await?;
        let pid = pid.trim().to_owned();
        if pid == "0" {
            return Err(CmdError {
                command: format!("docker inspect {}", node.container),
                detail: "container is not running".into(),
            });
        }
        Ok(pid)
    }

    /// Runs a host tool inside the container's network namespace (the image
    /// has no tools of its own).
    pub async fn in_netns(&self, node: &Node, args: &[&str]) -> Result<String, CmdError> {
        let pid = self.pid(node).await?;
        let mut full = vec!["-t", pid.as_str(), "-n"];
        full.extend_from_slice(args);
        run("nsenter", &full).await
    }

    /// `node` drops every packet from `peer` (one direction of a cut).
    pub async fn drop_from(&self, node: &Node, peer: &Node) -> Result<(), CmdError> {
        self.in_netns(
            node,
            &["iptables", "-I", "INPUT", "-s", &peer.ip, "-j", "DROP"],
        )
        .await
        .map(|_| ())
    }

    /// `node` sends nothing to `peer`.
    pub async fn drop_to(&self, node: &Node, peer: &Node) -> Result<(), CmdError> {
        self.in_netns(
            node,
            &["iptables", "-I", "OUTPUT", "-d", &peer.ip, "-j", "DROP"],
        )
        .await
        .map(|_| ())
    }

    /// Random loss of `percent` % of the node's incoming packets (peers and
    /// clients alike): `tc netem` where the kernel has it, else iptables'
    /// `statistic` match.
    pub async fn lossy(&mut self, node: &Node, percent: u32) -> Result<&'static str, CmdError> {
        if self.loss_with_tc != Some(false) {
            let pct = format!("{percent}%");
            let tc = self
                .in_netns(
                    node,
                    &[
                        "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", &pct,
                    ],
                )
                .await;
            match tc {
                Ok(_) => {
                    self.loss_with_tc = Some(true);
                    return Ok("tc-netem");
                }
                Err(_) if self.loss_with_tc.is_none() => self.loss_with_tc = Some(false),
                Err(e) => return Err(e),
            }
        }
        let p = format!("{:.3}", f64::from(percent) / 100.0);
        self.in_netns(
            node,
            &[
                "iptables",
                "-I",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
        .await?;
        Ok("iptables-statistic")
    }

    /// Removes every network fault from the node (no error if it has none
    /// or is not running: a restarted container has a fresh namespace).
    pub async fn heal_net(&self, node: &Node) {
        let _ = self.in_netns(node, &["iptables", "-F", "INPUT"]).await;
        let _ = self.in_netns(node, &["iptables", "-F", "OUTPUT"]).await;
        if self.loss_with_tc == Some(true) {
            let _ = self
                .in_netns(node, &["tc", "qdisc", "del", "dev", "eth0", "root"])
                .await;
        }
    }

    /// Container state as Docker reports it (`running`, `paused`, `exited`).
    pub async fn state(&self, node: &Node) -> String {
        run(
            "docker",
            &["inspect", "--format", "{{.State.Status}}", &node.container],
        )
        .await
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
    }

    /// Every container's state, in node order, with one `docker inspect`.
    pub async fn states(&self) -> Vec<String> {
        let mut args = vec!["inspect", "--format", "{{.State.Status}}"];
        args.extend(self.nodes.iter().map(|n| n.container.as_str()));
        match run("docker", &args).await {
            Ok(out) => out.lines().map(|l| l.trim().to_owned()).collect(),
            Err(e) => vec![format!("unknown ({e})")],
        }
    }

    /// Prints the last lines of every replica's log (for failures).
    pub async fn dump_logs(&self, tail: usize) {
        for node in &self.nodes {
            let tail = tail.to_string();
            let logs = Command::new("docker")
                .args(["logs", "--tail", &tail, &node.container])
                .output()
                .await;
            eprintln!("----- last {tail} log lines of {} -----", node.container);
            if let Ok(out) = logs {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A cluster whose scenario never judged its capture (it ended some
        // other way) is judged here, without the history: any workload
        // value between replicas counts as the positive control.
        let verdict = self
            .finish_capture()
            .map(|tally| tally.verdict("(cluster dropped before its check)", |_| true));
        self.remove_containers();
        if let Some(Err(e)) = verdict {
            if !std::thread::panicking() {
                panic!("{e}");
            }
            eprintln!("{e}");
        }
    }
}

impl Cluster {
    fn remove_containers(&mut self) {
        if self.keep {
            eprintln!(
                "HEARSAY_FAULT_KEEP=1: leaving containers {} (and their volumes) and network {}",
                self.nodes
                    .iter()
                    .map(|n| n.container.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.spec.network
            );
            return;
        }
        self.remove_leftovers();
    }
}
