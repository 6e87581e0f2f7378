//! A deterministic simulated cluster: real [`Node`]s on the in-memory
//! [`SimNetwork`], under tokio's paused clock on one thread.
//!
//! Everything random (peer choice, jitter, message fate, the workload) draws
//! from seeds derived from one `u64`, and virtual time only moves when every
//! task is idle, so a seed replays the same run. A failing test prints
//! `HEARSAY_SIM_SEED=<seed>`; setting that variable reruns just that seed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hearsay::config::Config;
use hearsay::node::Node;
use hearsay::transport::memory::{Faults, SimNetwork};

/// Seeds to run: `HEARSAY_SIM_SEED` alone if set, else `count` seeds from `base`.
pub fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("HEARSAY_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("HEARSAY_SIM_SEED must be a u64")],
        Err(_) => (base..base + count).collect(),
    }
}

/// Runs `scenario(seed)` on a fresh paused current-thread runtime; on failure
/// reports the seed to replay.
pub fn run_seeded<F, Fut>(seed: u64, scenario: F)
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    match runtime.block_on(scenario(seed)) {
        Ok(summary) => println!("seed={seed} {summary}"),
        Err(failure) => panic!("seed={seed} FAILED: {failure}\nreplay: HEARSAY_SIM_SEED={seed} cargo test --test <this test>"),
    }
}

pub fn address(i: usize) -> String {
    format!("127.0.1.{}:7000", i + 1)
}

/// Default settings for simulated replicas (same as production).
pub fn sim_config(addr: &str, view: &[String]) -> Config {
    Config::for_address(addr, view)
}

pub struct Cluster {
    pub net: Arc<SimNetwork>,
    pub addresses: Vec<String>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    pub config: Config,
    seed: u64,
    next_incarnation: u64,
    /// Processes started so far: each gets its own seed, as each real
    /// process draws its own randomness (even with the same incarnation).
    spawned: u64,
}

impl Cluster {
    /// `n` replicas that all know each other; returns once every one is ready.
    pub async fn start(n: usize, seed: u64) -> Cluster {
        Self::start_with(n, seed, |_| {}).await
    }

    pub async fn start_with(n: usize, seed: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let addresses: Vec<String> = (0..n).map(address).collect();
        let mut config = sim_config(&addresses[0], &addresses);
        tweak(&mut config);
        let mut cluster = Cluster {
            net: SimNetwork::new(seed),
            addresses: addresses.clone(),
            nodes: BTreeMap::new(),
            config,
            seed,
            next_incarnation: 1,
            spawned: 0,
        };
        let mut starting = Vec::new();
        for addr in &addresses {
            let node = cluster.spawn_node(addr);
            starting.push(node);
        }
        for node in starting {
            node.start().await;
        }
        cluster
    }

    /// Creates and registers a node (not started).
    fn spawn_node(&mut self, addr: &str) -> Arc<Node> {
        let view = self.config.view.clone();
        let incarnation = self.next_incarnation;
        self.spawn_node_with(addr, &view, incarnation)
    }

    /// Creates and registers a node started with `view` as its `VIEW` and
    /// `incarnation` as the incarnation its own clock suggests (not started).
    fn spawn_node_with(&mut self, addr: &str, view: &[String], incarnation: u64) -> Arc<Node> {
        let mut config = self.config.clone();
        config.socket_address = addr.to_string();
        config.view = view.to_vec();
        self.next_incarnation = self.next_incarnation.max(incarnation) + 1;
        self.spawned += 1;
        let node_seed = self.seed.wrapping_mul(1_000_003).wrapping_add(self.spawned);
        let node = Node::new(config, self.net.endpoint(addr), incarnation, node_seed);
        let weak = Arc::downgrade(&node);
        self.net.register(
            addr,
            Arc::new(move |request| match weak.upgrade() {
                Some(node) => node.handle(request),
                None => hearsay::proto::Response::Ack,
            }),
        );
        self.nodes.insert(addr.to_string(), node.clone());
        node
    }

    pub fn node(&self, addr: &str) -> &Arc<Node> {
        &self.nodes[addr]
    }

    pub fn live(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The process dies: no hand-off, no goodbye.
    pub fn kill(&mut self, addr: &str) {
        if let Some(node) = self.nodes.remove(addr) {
            node.halt();
            self.net.unregister(addr);
        }
    }

    /// A new process at `addr` (new incarnation, empty memory); returns when ready.
    pub async fn restart(&mut self, addr: &str) {
        self.kill(addr);
        let node = self.spawn_node(addr);
        node.start().await;
    }

    /// A new process at `addr` started with `view` as its `VIEW` and with a
    /// wall clock that suggests `incarnation` (which may not have grown:
    /// clocks step back or stand still); returns when ready.
    pub async fn restart_with(&mut self, addr: &str, view: &[String], incarnation: u64) {
        self.kill(addr);
        let node = self.spawn_node_with(addr, view, incarnation);
        node.start().await;
    }

    /// Like [`Cluster::restart_with`], but returns at once with the start-up
    /// (join, state transfer) running as a task: the caller can step time and
    /// kill the new process part-way through its transfer.
    pub fn begin_restart_with(
        &mut self,
        addr: &str,
        view: &[String],
        incarnation: u64,
    ) -> tokio::task::JoinHandle<()> {
        self.kill(addr);
        let node = self.spawn_node_with(addr, view, incarnation);
        tokio::spawn(async move { node.start().await })
    }

    /// The incarnation the next started node's wall clock would suggest.
    pub fn next_incarnation(&self) -> u64 {
        self.next_incarnation
    }

    /// SIGTERM: drain, hand off, leave.
    pub async fn stop_gracefully(&mut self, addr: &str) {
        if let Some(node) = self.nodes.get(addr).cloned() {
            node.leave().await;
            self.nodes.remove(addr);
            self.net.unregister(addr);
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.net.set_faults(faults);
    }

    pub fn view_of(&self, addr: &str) -> Vec<String> {
        self.nodes[addr].view()
    }

    /// Every live replica's store as `key → value text` (tombstones omitted).
    pub fn contents(&self, addr: &str) -> BTreeMap<String, String> {
        self.nodes[addr].inspect(|r| {
            r.store()
                .versions()
                .map(|v| v.to_version())
                .filter_map(|v| {
                    v.value
                        .as_ref()
                        .map(|value| (v.key.to_string(), value.to_string()))
                })
                .collect()
        })
    }

    /// Checks the core invariants on every live replica.
    pub fn check_invariants(&self) -> Result<(), String> {
        for node in self.nodes.values() {
            node.inspect(|r| r.check_invariants())?;
        }
        Ok(())
    }

    /// Checks *reflection* (I1) on every live replica against every write
    /// that `ledger` has seen anywhere: a replica whose clock covers a write
    /// holds it, or a version of its key with a greater stamp, or collected
    /// such a tombstone (the key is absent and its horizon covers the write);
    /// and *closure* (C1): it covers that write's dependencies too.
    /// Call [`Ledger::observe`] often so that it sees writes before they are
    /// overwritten everywhere.
    pub fn check_reflection(&self, ledger: &Ledger) -> Result<(), String> {
        for (addr, node) in &self.nodes {
            node.inspect(|r| {
                for (dot, (key, stamp, deps)) in &ledger.writes {
                    if !r.clock().covers_dot(dot) {
                        continue;
                    }
                    // C1: covering a write means covering its dependencies.
                    if !r.clock().covers(deps) {
                        return Err(format!(
                            "{addr}: clock {:?} covers {dot:?} but not its dependencies {deps:?}",
                            r.clock()
                        ));
                    }
                    // Held, or beaten by a tombstone it collected (below its
                    // horizon): I1's "or held such a tombstone and collected it".
                    let collected = || {
                        ledger.writes.iter().any(|(t_dot, (t_key, t_stamp, _))| {
                            t_key == key
                                && ledger.tombstones.contains(t_dot)
                                && t_stamp >= stamp
                                && r.horizon().covers_dot(t_dot)
                        })
                    };
                    match r.store().get(key) {
                        Some(held) if held.stamp() >= *stamp => {}
                        None if r.horizon().covers_dot(dot) || collected() => {}
                        held => {
                            return Err(format!(
                                "{addr}: clock {:?} covers {dot:?} ({key}) but holds {:?}",
                                r.clock(),
                                held.map(|v| v.dot())
                            ))
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Whether every live replica holds the same versions and clock.
    pub fn converged(&self) -> bool {
        let mut states = self.nodes.values().map(|n| {
            n.inspect(|r| {
                let versions: Vec<_> = r
                    .store()
                    .versions()
                    .map(|v| (v.key().to_string(), v.dot()))
                    .collect();
                (versions, r.clock().clone())
            })
        });
        let Some(first) = states.next() else {
            return true;
        };
        states.all(|s| s == first)
    }

    /// Advances virtual time until `condition` holds, polling every `step`;
    /// returns the virtual time it took, or `None` at the deadline.
    pub async fn wait_for(
        &self,
        limit: Duration,
        step: Duration,
        condition: impl Fn(&Cluster) -> bool,
    ) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        loop {
            if condition(self) {
                return Some(started.elapsed());
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(step).await;
        }
    }
}

/// Every write seen in any replica's store: its key, stamp and dependencies, by dot.
#[derive(Default)]
pub struct Ledger {
    pub writes: BTreeMap<hearsay::core::Dot, (String, hearsay::core::Stamp, hearsay::core::VClock)>,
    /// The dots of the writes that are deletes.
    pub tombstones: std::collections::BTreeSet<hearsay::core::Dot>,
}

impl Ledger {
    /// Records every version currently held by a live replica.
    pub fn observe(&mut self, cluster: &Cluster) {
        for node in cluster.nodes.values() {
            node.inspect(|r| {
                for v in r.store().versions() {
                    if v.is_tombstone() {
                        self.tombstones.insert(v.dot());
                    }
                    self.writes
                        .entry(v.dot())
                        .or_insert_with(|| (v.key().to_string(), v.stamp(), v.deps()));
                }
            });
        }
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
