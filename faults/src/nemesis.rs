//! Faults, how to start and heal each, and seeded schedules of them.
//!
//! A [`Fault`] names what breaks; [`Nemesis`] applies and heals faults on a
//! [`Cluster`], remembers what is active so it can heal everything at the
//! end, counts faults by type for the summary line, and notes the time of
//! every SIGKILL (the durability check needs them). A [`Schedule`] is a list
//! of timed rounds (faults on, then all healed) made from a seed, so a
//! failing run replays with the same seed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::docker::{Cluster, CmdError};
use crate::history::Recorder;

/// One fault; nodes are named (`alice`, `bob`, `carol`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `docker stop` (graceful leave), healed by `docker start`.
    Stop(String),
    /// One `docker stop` of two replicas, which Docker stops in parallel:
    /// both leave at once, so neither may count on the other to take its
    /// hand-off.
    StopTogether(String, String),
    /// `docker kill` (SIGKILL), healed by `docker start`.
    Kill(String),
    /// One `docker kill` of every replica, healed by one `docker start` of
    /// all: nothing survives in any replica's memory (durability runs).
    KillAll,
    /// `docker pause` (frozen, sockets still accept), healed by unpause.
    Pause(String),
    /// `docker network disconnect`, healed by connect with the same address.
    Disconnect(String),
    /// `a` and `b` cannot talk; both still talk to the third replica.
    Partition { a: String, b: String },
    /// Packets from `from` to `to` are dropped; the other way works.
    OneWay { from: String, to: String },
    /// `node` can reach no other replica (and none reaches it), but clients
    /// still reach it: the fault that tests causal waits and 503s hardest.
    Isolate(String),
    /// `node` loses `percent` % of its incoming packets.
    Loss { node: String, percent: u32 },
}

impl Fault {
    /// The type name used in summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Stop(_) => "stop",
            Fault::StopTogether(..) => "stop-together",
            Fault::Kill(_) => "kill",
            Fault::KillAll => "kill-all",
            Fault::Pause(_) => "pause",
            Fault::Disconnect(_) => "disconnect",
            Fault::Partition { .. } => "partition",
            Fault::OneWay { .. } => "one-way",
            Fault::Isolate(_) => "isolate",
            Fault::Loss { .. } => "loss",
        }
    }

    /// Nodes whose process or network attachment the fault changes (two
    /// such faults on one node at once would heal each other's state).
    fn exclusive_node(&self) -> Option<&str> {
        match self {
            Fault::Stop(n) | Fault::Kill(n) | Fault::Pause(n) | Fault::Disconnect(n) => Some(n),
            _ => None,
        }
    }

    /// Every node the fault touches.
    fn nodes(&self) -> Vec<&str> {
        match self {
            Fault::Stop(n)
            | Fault::Kill(n)
            | Fault::Pause(n)
            | Fault::Disconnect(n)
            | Fault::Isolate(n) => vec![n],
            Fault::Partition { a, b } | Fault::StopTogether(a, b) => vec![a, b],
            Fault::KillAll => vec![],
            Fault::OneWay { from, to } => vec![from, to],
            Fault::Loss { node, .. } => vec![node],
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { a, b } => write!(f, "partition({a}|{b})"),
            Fault::StopTogether(a, b) => write!(f, "stop-together({a},{b})"),
            Fault::OneWay { from, to } => write!(f, "one-way({from}->{to} dropped)"),
            Fault::Loss { node, percent } => write!(f, "loss({node},{percent}%)"),
            Fault::KillAll => write!(f, "kill-all"),
            other => write!(f, "{}({})", other.kind(), other.nodes()[0]),
        }
    }
}

/// Which fault types a schedule may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultType {
    Stop,
    Kill,
    Pause,
    Disconnect,
    Partition,
    OneWay,
    Isolate,
    Loss,
}

impl FaultType {
    pub const ALL: [FaultType; 8] = [
        FaultType::Stop,
        FaultType::Kill,
        FaultType::Pause,
        FaultType::Disconnect,
        FaultType::Partition,
        FaultType::OneWay,
        FaultType::Isolate,
        FaultType::Loss,
    ];

    /// A concrete fault of this type on randomly chosen nodes.
    pub fn pick(self, names: &[String], rng: &mut StdRng) -> Fault {
        let mut shuffled = names.to_vec();
        shuffled.shuffle(rng);
        let (a, b) = (shuffled[0].clone(), shuffled[1].clone());
        match self {
            FaultType::Stop => Fault::Stop(a),
            FaultType::Kill => Fault::Kill(a),
            FaultType::Pause => Fault::Pause(a),
            FaultType::Disconnect => Fault::Disconnect(a),
            FaultType::Partition => Fault::Partition { a, b },
            FaultType::OneWay => Fault::OneWay { from: a, to: b },
            FaultType::Isolate => Fault::Isolate(a),
            FaultType::Loss => Fault::Loss {
                node: a,
                percent: *[10u32, 20, 30].choose(rng).unwrap_or(&20),
            },
        }
    }
}

/// One round: these faults for `on`, then everything healed for `off`.
#[derive(Clone, Debug)]
pub struct Round {
    pub faults: Vec<Fault>,
    pub on: Duration,
    pub off: Duration,
}

/// A seeded list of rounds.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub rounds: Vec<Round>,
}

impl Schedule {
    /// `rounds` rounds of one fault of `kind` each on a random node.
    pub fn scripted(
        kind: FaultType,
        rounds: usize,
        on: Duration,
        off: Duration,
        seed: u64,
        names: &[String],
    ) -> Self {
        Self::cycle(&vec![kind; rounds], on, off, seed, names)
    }

    /// One round per entry of `kinds`, in that order, nodes chosen by `seed`.
    pub fn cycle(
        kinds: &[FaultType],
        on: Duration,
        off: Duration,
        seed: u64,
        names: &[String],
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Schedule {
            rounds: kinds
                .iter()
                .map(|kind| Round {
                    faults: vec![kind.pick(names, &mut rng)],
                    on,
                    off,
                })
                .collect(),
        }
    }

    /// Jepsen-style mix: rounds of one to three faults of random types
    /// (at most one process-level fault per node) with random on/off times,
    /// until `total` time is used up.
    pub fn random(seed: u64, total: Duration, names: &[String]) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rounds = Vec::new();
        let mut used = Duration::ZERO;
        // Each round's first fault comes from a shuffled deck of all types,
        // so every type shows up once the schedule has enough rounds.
        let mut deck: Vec<FaultType> = Vec::new();
        while used < total {
            let wanted = rng.random_range(1..=3);
            let mut faults: Vec<Fault> = Vec::new();
            // Bounded: a draw that clashes is simply dropped.
            for attempt in 0..wanted * 4 {
                if faults.len() == wanted {
                    break;
                }
                let ty = if attempt == 0 {
                    if deck.is_empty() {
                        deck = FaultType::ALL.to_vec();
                        deck.shuffle(&mut rng);
                    }
                    deck.pop().expect("refilled")
                } else {
                    *FaultType::ALL.choose(&mut rng).expect("non-empty")
                };
                let f = ty.pick(names, &mut rng);
                let clash = faults.iter().any(|g| {
                    g.kind() == f.kind()
                        || f.exclusive_node().is_some_and(|n| g.nodes().contains(&n))
                        || g.exclusive_node().is_some_and(|n| f.nodes().contains(&n))
                });
                // Keep one replica untouched by process faults so that some
                // client traffic gets through in every round.
                let second_crash = f.exclusive_node().is_some()
                    && faults.iter().any(|g| g.exclusive_node().is_some());
                if !clash && !second_crash {
                    faults.push(f);
                }
            }
            let on = Duration::from_millis(rng.random_range(2_000..=5_000));
            let off = Duration::from_millis(rng.random_range(1_500..=3_500));
            used += on + off;
            rounds.push(Round { faults, on, off });
        }
        Schedule { rounds }
    }
}

/// Applies and heals faults on a cluster.
pub struct Nemesis {
    active: Vec<Fault>,
    /// Faults started, by type.
    pub counts: BTreeMap<&'static str, usize>,
    /// (replica, µs on the recorder's clock) of every SIGKILL.
    pub kills: Vec<(String, u64)>,
    /// How packet loss was made (`tc-netem` or `iptables-statistic`).
    pub loss_tool: Option<&'static str>,
    recorder: Recorder,
    verbose: bool,
}

impl Nemesis {
    pub fn new(recorder: Recorder) -> Self {
        Nemesis {
            active: Vec::new(),
            counts: BTreeMap::new(),
            kills: Vec::new(),
            loss_tool: None,
            recorder,
            verbose: std::env::var("HEARSAY_FAULT_VERBOSE").is_ok_and(|v| v == "1"),
        }
    }

    fn log(&self, what: &str) {
        if self.verbose {
            eprintln!(
                "[{:>8.3}s] nemesis: {what}",
                self.recorder.now_us() as f64 / 1e6
            );
        }
    }

    pub async fn apply(&mut self, cluster: &mut Cluster, fault: Fault) -> Result<(), CmdError> {
        self.log(&format!("start {fault}"));
        // Registered before it runs: a fault that half-applied (or a stop
        // whose exit code was wrong) must still be healed.
        *self.counts.entry(fault.kind()).or_insert(0) += 1;
        self.active.push(fault.clone());
        let node = |n: &str| cluster.node(n).clone();
        match &fault {
            Fault::Stop(n) => cluster.stop(&node(n)).await?,
            Fault::StopTogether(a, b) => cluster.stop_many(&[node(a), node(b)]).await?,
            Fault::Kill(n) => {
                cluster.kill(&node(n)).await?;
                self.kills.push((n.clone(), self.recorder.now_us()));
            }
            Fault::KillAll => {
                let nodes = cluster.nodes.clone();
                cluster.kill_many(&nodes).await?;
                let at = self.recorder.now_us();
                self.kills.extend(nodes.into_iter().map(|n| (n.name, at)));
            }
            Fault::Pause(n) => cluster.pause(&node(n)).await?,
            Fault::Disconnect(n) => cluster.disconnect(&node(n)).await?,
            Fault::Partition { a, b } => {
                let (na, nb) = (node(a), node(b));
                cluster.drop_from(&na, &nb).await?;
                cluster.drop_to(&na, &nb).await?;
                cluster.drop_from(&nb, &na).await?;
                cluster.drop_to(&nb, &na).await?;
            }
            Fault::OneWay { from, to } => cluster.drop_from(&node(to), &node(from)).await?,
            Fault::Isolate(n) => {
                let target = node(n);
                let peers: Vec<_> = cluster
                    .nodes
                    .iter()
                    .filter(|p| p.name != *n)
                    .cloned()
                    .collect();
                for peer in &peers {
                    cluster.drop_from(&target, peer).await?;
                    cluster.drop_to(&target, peer).await?;
                }
            }
            Fault::Loss { node: n, percent } => {
                self.loss_tool = Some(cluster.lossy(&node(n), *percent).await?);
            }
        }
        Ok(())
    }

    /// Heals every active fault, newest first. Errors are collected, not
    /// fatal: healing must go as far as it can.
    pub async fn heal_all(&mut self, cluster: &mut Cluster) -> Vec<CmdError> {
        let mut errors = Vec::new();
        while let Some(fault) = self.active.pop() {
            self.log(&format!("heal {fault}"));
            let node = |n: &str| cluster.node(n).clone();
            let result = match &fault {
                Fault::Stop(n) | Fault::Kill(n) => cluster.start_node(&node(n)).await,
                Fault::StopTogether(a, b) => {
                    let first = cluster.start_node(&node(a)).await;
                    cluster.start_node(&node(b)).await.and(first)
                }
                Fault::KillAll => {
                    let nodes = cluster.nodes.clone();
                    cluster.start_many(&nodes).await
                }
                Fault::Pause(n) => cluster.unpause(&node(n)).await,
                Fault::Disconnect(n) => cluster.connect(&node(n)).await,
                Fault::Partition { a, b } | Fault::OneWay { from: a, to: b } => {
                    cluster.heal_net(&node(a)).await;
                    cluster.heal_net(&node(b)).await;
                    Ok(())
                }
                Fault::Loss { node: n, .. } | Fault::Isolate(n) => {
                    cluster.heal_net(&node(n)).await;
                    Ok(())
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        errors
    }

    /// "kill:2,pause:1" — faults started, by type.
    pub fn counts_line(&self) -> String {
        if self.counts.is_empty() {
            return "none".into();
        }
        self.counts
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["alice", "bob", "carol"].map(String::from).to_vec()
    }

    fn faults(s: &Schedule) -> Vec<String> {
        s.rounds
            .iter()
            .flat_map(|r| r.faults.iter().map(|f| f.to_string()))
            .collect()
    }

    #[test]
    fn random_schedule_replays_from_its_seed() {
        let a = Schedule::random(7, Duration::from_secs(60), &names());
        let b = Schedule::random(7, Duration::from_secs(60), &names());
        assert_eq!(faults(&a), faults(&b));
        let c = Schedule::random(8, Duration::from_secs(60), &names());
        assert_ne!(faults(&a), faults(&c));
    }

    #[test]
    fn random_schedule_keeps_rounds_consistent() {
        for seed in 0..200 {
            let s = Schedule::random(seed, Duration::from_secs(60), &names());
            let total: Duration = s.rounds.iter().map(|r| r.on + r.off).sum();
            assert!(total >= Duration::from_secs(60) && total < Duration::from_secs(70));
            for r in &s.rounds {
                assert!(!r.faults.is_empty() && r.faults.len() <= 3);
                let crashed: Vec<&str> =
                    r.faults.iter().filter_map(|f| f.exclusive_node()).collect();
                assert!(crashed.len() <= 1, "{:?}", r.faults);
                if let Some(n) = crashed.first() {
                    let others = r.faults.iter().filter(|f| f.nodes().contains(n)).count();
                    assert_eq!(others, 1, "{:?}", r.faults);
                }
            }
        }
    }

    #[test]
    fn every_random_schedule_uses_every_fault_type() {
        for seed in 0..50 {
            let mut seen = std::collections::BTreeSet::new();
            for r in Schedule::random(seed, Duration::from_secs(60), &names()).rounds {
                seen.extend(r.faults.iter().map(Fault::kind));
            }
            assert_eq!(seen.len(), FaultType::ALL.len(), "seed {seed}: {seen:?}");
        }
    }
}
