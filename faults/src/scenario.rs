//! One fault scenario from start to verdict.
//!
//! This module owns the run loop: start a fresh cluster, run client sessions
//! against it while the nemesis plays a [`Schedule`], heal everything, stop
//! the clients, poll until every replica agrees on every key (with a
//! deadline), then run the checker on the history and the converged state
//! and judge the cluster's wire capture (the key never on the wire, and a
//! value the clients wrote seen between two replicas).
//! It prints one summary line per scenario (also appended to
//! `target/hearsay-faults/summary.log`) and, on failure, keeps the history as
//! JSON next to it and prints the replicas' last log lines.
//!
//! Every loop here is bounded by a count and by time; the only fixed sleeps
//! are the schedule's on/off periods and the clients' think time, which are
//! what the scenario is made of, not waits for a condition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::checker::{count_by_kind, Checker};
use crate::client::{self, Endpoint, Session};
use crate::docker::{Cluster, ClusterSpec};
use crate::history::{History, OpKind, Outcome, Recorder};
use crate::nemesis::{Nemesis, Schedule};

/// Environment variable that fixes the seed (to replay a failing run).
pub const SEED_ENV: &str = "HEARSAY_FAULT_SEED";

/// The seed from `HEARSAY_FAULT_SEED`, or a fresh one from the clock.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={s:?} is not an unsigned integer")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1),
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub seed: u64,
    pub schedule: Schedule,
    /// Concurrent client sessions.
    pub sessions: usize,
    /// Size of the key pool the sessions share (small, so they collide).
    pub keys: usize,
    /// Client request timeout.
    pub op_timeout: Duration,
    /// Pause between one session's operations (bounds the load on 2 cores).
    pub think: (Duration, Duration),
    /// How long replicas get to agree after healing.
    pub converge_deadline: Duration,
    pub cluster: ClusterSpec,
    /// Clients send no causal metadata (harness self-test only).
    pub forget_metadata: bool,
    /// A write lost with the SIGKILLed replica that alone had it is excused
    /// (in-memory replicas). Durable runs set this to `false`: a replica
    /// with a data directory must keep every write it acknowledged.
    pub kills_excuse_losses: bool,
    /// With `sync = "interval"`: its period. Reporting only — every lost
    /// write is then also told apart by whether it was acknowledged within
    /// this window before its replica's kill (what a power loss may take).
    pub sync_window: Option<Duration>,
}

impl Config {
    pub fn new(name: &str, seed: u64, schedule: Schedule) -> Self {
        Config {
            name: name.to_owned(),
            seed,
            schedule,
            sessions: 6,
            keys: 8,
            op_timeout: Duration::from_millis(1500),
            think: (Duration::from_millis(5), Duration::from_millis(25)),
            converge_deadline: Duration::from_secs(60),
            cluster: ClusterSpec::default(),
            forget_metadata: false,
            kills_excuse_losses: true,
            sync_window: None,
        }
    }
}

/// Everything a scenario measured.
#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub seed: u64,
    pub duration: Duration,
    pub faults: String,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    pub fail_503: usize,
    pub violations: Vec<String>,
    pub lost: Vec<String>,
    pub lost_to_kill: usize,
    /// With [`Config::sync_window`]: how many of `lost` were acknowledged
    /// within that window before their replica was killed.
    pub lost_in_sync_window: Option<usize>,
    /// Time from heal (and end of writes) until all replicas agreed, or the
    /// reason they did not.
    pub converge: Result<Duration, String>,
    pub nemesis_errors: Vec<String>,
    /// The wire capture's counts, or why it failed (see [`crate::wire`]).
    pub wire: Result<String, String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.lost.is_empty()
            && self.converge.is_ok()
            && self.nemesis_errors.is_empty()
            && self.wire.is_ok()
    }

    /// The one summary line.
    pub fn summary(&self) -> String {
        format!(
            "hearsay-faults scenario={} seed={} duration={:.1}s faults={} ops ok={} fail={} \
             (503={}) unknown={} violations={} lost={}{} lost_to_kill={} converge={} wire={}",
            self.name,
            self.seed,
            self.duration.as_secs_f64(),
            self.faults,
            self.ok,
            self.fail,
            self.fail_503,
            self.unknown,
            self.violations.len(),
            self.lost.len(),
            match self.lost_in_sync_window {
                Some(n) => format!(" (within sync window: {n})"),
                None => String::new(),
            },
            self.lost_to_kill,
            match &self.converge {
                Ok(d) => format!("{:.2}s", d.as_secs_f64()),
                Err(_) => "NEVER".to_owned(),
            },
            match &self.wire {
                Ok(counts) => counts.clone(),
                Err(_) => "FAILED".to_owned(),
            }
        )
    }
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/hearsay-faults"
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Runs a scenario and panics with the details if any check failed.
pub async fn run_and_assert(config: Config) -> Report {
    let report = run(config).await;
    if !report.passed() {
        let mut msg = format!("{}\n", report.summary());
        for e in &report.nemesis_errors {
            msg.push_str(&format!("  nemesis error: {e}\n"));
        }
        if let Err(e) = &report.converge {
            msg.push_str(&format!("  did not converge: {e}\n"));
        }
        for v in report.violations.iter().take(20) {
            msg.push_str(&format!("  violation: {v}\n"));
        }
        for l in report.lost.iter().take(20) {
            msg.push_str(&format!("  lost: {l}\n"));
        }
        if let Err(e) = &report.wire {
            msg.push_str(&format!("  {e}\n"));
        }
        msg.push_str(&format!(
            "replay with {SEED_ENV}={} (history kept in {})",
            report.seed,
            out_dir().display()
        ));
        panic!("{msg}");
    }
    report
}

/// Runs a scenario and returns what it measured.
pub async fn run(config: Config) -> Report {
    let started = Instant::now();
    let mut cluster = Cluster::start(config.cluster.clone()).await;
    let recorder = Recorder::new();
    let mut nemesis = Nemesis::new(recorder.clone());
    let endpoints = cluster.endpoints();
    let stop = Arc::new(AtomicBool::new(false));
    let next_session = Arc::new(AtomicUsize::new(0));

    let workers: Vec<_> = (0..config.sessions)
        .map(|i| {
            let w = Worker {
                rng: StdRng::seed_from_u64(
                    config.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                ),
                endpoints: endpoints.clone(),
                http: client::http_client(config.op_timeout),
                recorder: recorder.clone(),
                stop: stop.clone(),
                next_session: next_session.clone(),
                keys: config.keys,
                think: config.think,
                forget_metadata: config.forget_metadata,
            };
            tokio::spawn(w.run())
        })
        .collect();

    let mut nemesis_errors = Vec::new();
    let rounds = config.schedule.rounds.len();
    for (i, round) in config.schedule.rounds.iter().enumerate() {
        for fault in &round.faults {
            if let Err(e) = nemesis.apply(&mut cluster, fault.clone()).await {
                nemesis_errors.push(format!("starting {fault}: {e}"));
            }
        }
        tokio::time::sleep(round.on).await;
        for e in nemesis.heal_all(&mut cluster).await {
            nemesis_errors.push(format!("healing: {e}"));
        }
        // After the last heal the clients stop at once, so that the
        // convergence time measures recovery, not the off period.
        if i + 1 < rounds {
            tokio::time::sleep(round.off).await;
        }
    }
    for e in nemesis.heal_all(&mut cluster).await {
        nemesis_errors.push(format!("healing: {e}"));
    }
    let healed_at = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        // Every request has a timeout, so this is bounded.
        let _ = w.await;
    }
    let history = recorder.snapshot();
    let shared: Vec<String> = (0..config.keys).map(key_name).collect();
    let mut all_keys = history.keys();
    all_keys.extend(shared.iter().cloned());
    all_keys.sort();
    all_keys.dedup();

    // The convergence time is taken on the views and the shared keys; the
    // many single-writer keys are then read once more (polled with the same
    // deadline) to get the whole final state.
    let deadline = Instant::now() + config.converge_deadline;
    let converged = match converge(&cluster, &shared, deadline).await {
        Ok(_) => {
            let converge_time = healed_at.elapsed();
            converge(&cluster, &all_keys, deadline)
                .await
                .map(|values| (values, converge_time))
        }
        Err(e) => Err(e),
    };
    let converge = converged.as_ref().map(|(_, t)| *t).map_err(Clone::clone);
    let converged = converged.map(|(values, _)| values);

    let check_started = Instant::now();
    let checker = Checker::new(&history);
    let violations = checker.violations();
    let excusing_kills: &[(String, u64)] = if config.kills_excuse_losses {
        &nemesis.kills
    } else {
        &[]
    };
    let mut lost_in_sync_window = config.sync_window.map(|_| 0);
    let (lost, lost_to_kill) = match &converged {
        Ok(final_values) => {
            let d = checker.durability(final_values, excusing_kills);
            let mut lost: Vec<String> = Vec::new();
            for l in &d.lost {
                let since_ack = ack_before_kill(&history, l.op, &nemesis.kills);
                if let (Some(window), Some(gap), Some(n)) =
                    (config.sync_window, since_ack, lost_in_sync_window.as_mut())
                {
                    if gap <= window {
                        *n += 1;
                    }
                }
                lost.push(match since_ack {
                    Some(gap) => format!(
                        "{} (acknowledged {} ms before its replica was SIGKILLed)",
                        l.detail,
                        gap.as_millis()
                    ),
                    None => l.detail.clone(),
                });
            }
            lost.extend(d.bad_final_values.iter().cloned());
            (lost, d.lost_to_kill.len())
        }
        Err(_) => (Vec::new(), 0),
    };
    let wire = judge_capture(&mut cluster, &config.name, &history);
    let (ok, fail, unknown) = history.outcome_counts();
    let fail_503 = history
        .ops
        .iter()
        .filter(|o| matches!(&o.outcome, Outcome::Fail(r) if r.starts_with("503")))
        .count();
    let mut faults = nemesis.counts_line();
    if let Some(tool) = nemesis.loss_tool {
        faults.push_str(&format!("[loss via {tool}]"));
    }
    let report = Report {
        name: config.name.clone(),
        seed: config.seed,
        duration: started.elapsed(),
        faults,
        ok,
        fail,
        unknown,
        fail_503,
        violations: violations.iter().map(|v| v.to_string()).collect(),
        lost,
        lost_to_kill,
        lost_in_sync_window,
        converge,
        nemesis_errors,
        wire,
    };
    eprintln!(
        "checked {} operations in {:.2}s",
        history.ops.len(),
        check_started.elapsed().as_secs_f64()
    );
    let by_kind = count_by_kind(&violations);
    let line = report.summary();
    println!("{line}");
    if !by_kind.is_empty() {
        println!("  violations by kind: {by_kind:?}");
    }
    append_summary(&line);
    if !report.passed() || std::env::var("HEARSAY_FAULT_SAVE").is_ok_and(|v| v == "1") {
        save_history(&config, &history);
    }
    if !report.passed() && !config.forget_metadata {
        cluster.dump_logs(60).await;
    }
    // A sanity floor: a scenario whose clients got nothing done proves nothing.
    assert!(
        ok >= 100,
        "only {ok} operations succeeded in scenario {}: the cluster or the harness is broken\n{line}",
        config.name
    );
    report
}

/// Stops the cluster's wire capture and judges it; the positive control
/// must be a value one of this scenario's clients wrote.
fn judge_capture(
    cluster: &mut Cluster,
    scenario: &str,
    history: &History,
) -> Result<String, String> {
    let Some(tally) = cluster.finish_capture() else {
        return Err(format!(
            "scenario {scenario}: the wire capture was not running"
        ));
    };
    let written: std::collections::HashSet<&str> = history
        .ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Put { value, .. } => value.as_str(),
            _ => None,
        })
        .collect();
    tally
        .verdict(scenario, |v| written.contains(v))
        .map(|()| tally.line())
}

/// How long before the first later SIGKILL of its replica the operation
/// `op` was acknowledged (`None`: its replica was not killed after it).
fn ack_before_kill(history: &History, op: usize, kills: &[(String, u64)]) -> Option<Duration> {
    let o = history.ops.get(op)?;
    kills
        .iter()
        .filter(|(r, t)| *r == o.replica && *t >= o.complete_us)
        .map(|(_, t)| Duration::from_micros(t - o.complete_us))
        .min()
}

fn key_name(i: usize) -> String {
    format!("k{i}")
}

fn append_summary(line: &str) {
    use std::io::Write;
    let path = out_dir().join("summary.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn save_history(config: &Config, history: &History) {
    let path = out_dir().join(format!("{}-{}.json", config.name, config.seed));
    match serde_json::to_vec_pretty(history) {
        Ok(bytes) => {
            if std::fs::write(&path, bytes).is_ok() {
                eprintln!("history saved to {}", path.display());
            }
        }
        Err(e) => eprintln!("could not serialise the history: {e}"),
    }
}

/// Polls until every container runs, every replica's view is complete and
/// all replicas return the same thing for every key; returns those values.
pub async fn converge(
    cluster: &Cluster,
    keys: &[String],
    deadline: Instant,
) -> Result<BTreeMap<String, Option<Value>>, String> {
    let http = client::http_client(Duration::from_secs(1));
    let want_view = cluster.full_view();
    let start = Instant::now();
    // At least one attempt, then until the deadline; each attempt is bounded
    // by the client timeout per request.
    loop {
        match converged_state(cluster, &http, keys, &want_view).await {
            Ok(values) => return Ok(values),
            Err(problem) if Instant::now() >= deadline => {
                return Err(format!("after {:?}: {problem}", start.elapsed()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn converged_state(
    cluster: &Cluster,
    http: &reqwest::Client,
    keys: &[String],
    want_view: &[String],
) -> Result<BTreeMap<String, Option<Value>>, String> {
    let states = cluster.states().await;
    if states.iter().any(|s| s != "running") {
        return Err(format!("container states {states:?}"));
    }
    for node in &cluster.nodes {
        let view = client::view(http, &node.endpoint)
            .await
            .map_err(|e| format!("{} /view: {e}", node.name))?;
        if view != want_view {
            return Err(format!("{} has view {view:?}", node.name));
        }
    }
    let mut values = BTreeMap::new();
    for key in keys {
        let mut seen: Option<(String, Option<Value>)> = None;
        for node in &cluster.nodes {
            let v = client::observe(http, &node.endpoint, key)
                .await
                .map_err(|e| format!("{} GET {key}: {e}", node.name))?;
            match &seen {
                None => seen = Some((node.name.clone(), v)),
                Some((first, fv)) if *fv != v => {
                    return Err(format!(
                        "{key}: {first} has {} but {} has {}",
                        show(fv),
                        node.name,
                        show(&v)
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some((_, v)) = seen {
            values.insert(key.clone(), v);
        }
    }
    Ok(values)
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "nothing".to_owned(), Value::to_string)
}

/// One client: a session that moves between replicas, replaced by a fresh
/// session when its metadata can no longer be served.
struct Worker {
    rng: StdRng,
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    next_session: Arc<AtomicUsize>,
    keys: usize,
    think: (Duration, Duration),
    forget_metadata: bool,
}

/// Keys written by one session only start with this.
const UNIQUE_PREFIX: &str = "u";

/// Upper bound on one session's operations, whatever the schedule.
const MAX_OPS_PER_WORKER: usize = 50_000;
/// Consecutive 503s after which a session gives up its metadata (its causal
/// past may have died with a SIGKILLed replica and never come back).
const MAX_CONSECUTIVE_503: usize = 25;

impl Worker {
    fn new_session(&self) -> Session {
        let id = self.next_session.fetch_add(1, Ordering::SeqCst);
        let session = Session::new(id, self.http.clone(), self.recorder.clone());
        if self.forget_metadata {
            session.forgetting_metadata()
        } else {
            session
        }
    }

    async fn run(mut self) {
        let mut session = self.new_session();
        let mut seq = 0usize;
        let mut replica = self.rng.random_range(0..self.endpoints.len());
        let mut refused_503 = 0usize;
        let mut own_keys: Vec<String> = Vec::new();
        for _ in 0..MAX_OPS_PER_WORKER {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.rng.random_bool(0.3) {
                replica = self.rng.random_range(0..self.endpoints.len());
            }
            let ep = &self.endpoints[replica];
            let key = key_name(self.rng.random_range(0..self.keys));
            let roll = self.rng.random_range(0..100);
            // Mostly a few shared keys, so sessions collide; a few writes go
            // to keys only this session ever writes, where a lost write or a
            // resurrected delete cannot hide behind a later write.
            let outcome = if roll < 43 {
                session.get(ep, &key).await
            } else if roll < 86 {
                seq += 1;
                let value = json!(format!("s{}-{seq}", session.id));
                session.put(ep, &key, value).await
            } else if roll < 89 {
                seq += 1;
                let own = format!("{UNIQUE_PREFIX}{}-{seq}", session.id);
                let value = json!(format!("s{}-{seq}", session.id));
                own_keys.push(own.clone());
                session.put(ep, &own, value).await
            } else if roll < 91 && !own_keys.is_empty() {
                let own = own_keys[self.rng.random_range(0..own_keys.len())].clone();
                session.get(ep, &own).await
            } else if roll < 92 && !own_keys.is_empty() {
                // Kept in the list: later reads check it stays deleted.
                let own = own_keys[self.rng.random_range(0..own_keys.len())].clone();
                session.delete(ep, &own).await
            } else {
                session.delete(ep, &key).await
            };
            match &outcome {
                Outcome::Ok(_) => refused_503 = 0,
                Outcome::Fail(r) if r.starts_with("503") => {
                    refused_503 += 1;
                    if refused_503 >= MAX_CONSECUTIVE_503 {
                        session = self.new_session();
                        seq = 0;
                        own_keys.clear();
                        refused_503 = 0;
                    }
                }
                // Down, paused or cut off: a real client fails over.
                _ => replica = (replica + 1) % self.endpoints.len(),
            }
            let think = self.rng.random_range(self.think.0..=self.think.1);
            tokio::time::sleep(think).await;
        }
    }
}
