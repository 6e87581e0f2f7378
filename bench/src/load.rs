//! The closed-loop load generator and what it measures.
//!
//! N sessions run concurrently; each sticks to one target (session `i` to
//! target `i mod len`), carries its own causal metadata, and issues its next
//! request only when the previous one answered (closed loop: the offered load
//! adapts to the server, so throughput is what the server sustains at N
//! outstanding requests). Each session records into its own histograms and
//! per-second counters; they are merged once at the end, so measuring adds no
//! shared state to the hot path beyond two relaxed atomic counters for the
//! progress display.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::distr::{Alphanumeric, Distribution, Uniform};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{Outcome, Session};
use crate::cluster::{ClusterArgs, LocalCluster};
use crate::noise::CpuSample;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Uniform,
    Zipf,
}

/// Which replicas the sessions talk to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Session `i` sticks to target `i mod N`: the load is spread evenly.
    #[default]
    Spread,
    /// Every session talks to the first target: all load on one replica
    /// while its peers only replicate (how a new user points one load tool
    /// at one address).
    One,
}

impl Shape {
    /// The targets the sessions use.
    pub fn targets(self, targets: &[String]) -> &[String] {
        match self {
            Shape::Spread => targets,
            Shape::One => &targets[..targets.len().min(1)],
        }
    }
}

/// What the sessions do. Shared by `load`, the suite and the background load
/// of the other modes.
#[derive(clap::Args, Clone, Debug)]
pub struct Workload {
    /// Concurrent client sessions (closed loop: one request outstanding each).
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Fraction of operations that are GETs (the rest are PUTs).
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Key popularity: uniform, or Zipf with exponent --zipf-s.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub dist: KeyDist,
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,
    /// Size of each value in bytes (a JSON string of that many characters).
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Measured time (after warm-up); with --ops, the cap.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many measured operations (or --duration, whichever first).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Unmeasured time before measuring starts (connections, caches, JIT-free but not cold).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Seed for key choice, operation mix and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip writing every key once before measuring (GETs then see 404s).
    #[arg(long)]
    pub no_preload: bool,
    /// Before each run, wait (up to a minute) until processes outside the
    /// bench use at most this % of the machine's CPU over one second: on a
    /// shared machine this keeps someone's build out of the measurement.
    #[arg(long, value_name = "PCT")]
    pub wait_quiet: Option<f64>,
    /// Per-request timeout; a request that takes longer counts as an error.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub request_timeout: Duration,
    /// Spread the sessions over every target, or put them all on the first.
    #[arg(long, value_enum, default_value_t = Shape::Spread)]
    pub shape: Shape,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            sessions: 64,
            read_ratio: 0.9,
            keys: 1000,
            dist: KeyDist::Uniform,
            zipf_s: 0.99,
            value_size: 64,
            duration: Duration::from_secs(10),
            ops: None,
            warmup: Duration::from_secs(1),
            seed: 1,
            no_preload: false,
            wait_quiet: None,
            request_timeout: Duration::from_secs(5),
            shape: Shape::Spread,
        }
    }
}

/// The workload as recorded in reports.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct WorkloadSettings {
    pub sessions: usize,
    pub read_ratio: f64,
    pub keys: u64,
    pub dist: KeyDist,
    pub zipf_s: f64,
    pub value_size: usize,
    pub duration_s: f64,
    pub ops: Option<u64>,
    pub warmup_s: f64,
    pub seed: u64,
    pub preload: bool,
    /// Reports from before `--shape` existed were all spread.
    #[serde(default)]
    pub shape: Shape,
}

impl Workload {
    pub fn settings(&self) -> WorkloadSettings {
        WorkloadSettings {
            sessions: self.sessions,
            read_ratio: self.read_ratio,
            keys: self.keys,
            dist: self.dist,
            zipf_s: self.zipf_s,
            value_size: self.value_size,
            duration_s: self.duration.as_secs_f64(),
            ops: self.ops,
            warmup_s: self.warmup.as_secs_f64(),
            seed: self.seed,
            preload: !self.no_preload,
            shape: self.shape,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.sessions == 0 || self.keys == 0 {
            bail!("--sessions and --keys must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be between 0 and 1");
        }
        Ok(())
    }
}

/// Latency figures for one operation type, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct OpStats {
    pub count: u64,
    pub throughput: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Successful operations completed in one second of the measured period.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TimelinePoint {
    pub second: u64,
    pub get: u64,
    pub put: u64,
    pub unavailable_503: u64,
    pub errors: u64,
}

/// One measured run against one system.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LoadResult {
    pub system: String,
    pub targets: Vec<String>,
    pub elapsed_s: f64,
    /// Successful operations (2xx and 404) in the measured period.
    pub ops: u64,
    pub throughput: f64,
    pub get: OpStats,
    pub put: OpStats,
    pub not_found: u64,
    pub unavailable_503: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Share of the machine's CPU used by processes outside the bench and
    /// the servers it started during the measured window (noise from a shared
    /// machine; with --targets the external cluster counts here too).
    pub foreign_cpu_pct: Option<f64>,
    /// CPU time all servers the bench started spent per successful
    /// operation, in µs (includes idle servers of the other system, which
    /// use little). None when driving an external cluster.
    pub server_cpu_us_per_op: Option<f64>,
    /// The load generator's CPU time per successful operation, in µs.
    pub client_cpu_us_per_op: Option<f64>,
    pub timeline: Vec<TimelinePoint>,
    /// Raw histograms (µs), kept for plots; not serialised.
    #[serde(skip)]
    pub hist_get: Option<Histogram<u64>>,
    #[serde(skip)]
    pub hist_put: Option<Histogram<u64>>,
}

/// Latencies are recorded in microseconds up to a minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

pub fn op_stats(h: &Histogram<u64>, elapsed_s: f64) -> OpStats {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return OpStats::default();
    }
    OpStats {
        count: h.len(),
        throughput: h.len() as f64 / elapsed_s.max(1e-9),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// Picks keys by index according to the configured distribution.
enum KeyChooser {
    Uniform(Uniform<u64>),
    /// Rank 1 is the most popular key.
    Zipf(Zipf<f64>),
}

impl KeyChooser {
    fn new(w: &Workload) -> Result<Self> {
        Ok(match w.dist {
            KeyDist::Uniform => KeyChooser::Uniform(Uniform::new(0, w.keys)?),
            KeyDist::Zipf => KeyChooser::Zipf(Zipf::new(w.keys as f64, w.zipf_s)?),
        })
    }

    fn pick(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyChooser::Uniform(u) => u.sample(rng),
            KeyChooser::Zipf(z) => (z.sample(rng) as u64).saturating_sub(1),
        }
    }
}

pub fn key_name(i: u64) -> String {
    format!("k{i}")
}

/// A JSON string value of `size` random alphanumeric characters.
pub fn random_value(rng: &mut impl Rng, size: usize) -> Value {
    Value::String(
        rng.sample_iter(&Alphanumeric)
            .take(size)
            .map(char::from)
            .collect(),
    )
}

/// Counters the progress display reads while sessions run.
#[derive(Default)]
struct Live {
    ops: AtomicU64,
    failures: AtomicU64,
}

struct SessionStats {
    get: Histogram<u64>,
    put: Histogram<u64>,
    not_found: u64,
    unavailable: u64,
    errors: BTreeMap<String, u64>,
    timeline: Vec<TimelinePoint>,
}

impl SessionStats {
    fn new() -> Self {
        SessionStats {
            get: new_histogram(),
            put: new_histogram(),
            not_found: 0,
            unavailable: 0,
            errors: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    fn bucket(&mut self, second: u64) -> &mut TimelinePoint {
        let i = second as usize;
        if self.timeline.len() <= i {
            self.timeline.resize_with(i + 1, TimelinePoint::default);
            for (s, p) in self.timeline.iter_mut().enumerate() {
                p.second = s as u64;
            }
        }
        &mut self.timeline[i]
    }

    /// Counts one measured operation answered `second` seconds into the window.
    fn record(&mut self, outcome: &Outcome, is_get: bool, latency_us: u64, second: u64) {
        match outcome {
            Outcome::Ok(_) | Outcome::NotFound => {
                let h = if is_get { &mut self.get } else { &mut self.put };
                h.saturating_record(latency_us.max(1));
                if *outcome == Outcome::NotFound {
                    self.not_found += 1;
                }
                let b = self.bucket(second);
                if is_get {
                    b.get += 1;
                } else {
                    b.put += 1;
                }
            }
            Outcome::Unavailable => {
                self.unavailable += 1;
                self.bucket(second).unavailable_503 += 1;
            }
            Outcome::Error(kind) => {
                *self.errors.entry(kind.clone()).or_default() += 1;
                self.bucket(second).errors += 1;
            }
        }
    }

    /// Adds another session's counts to these.
    fn absorb(&mut self, other: SessionStats) -> Result<()> {
        self.get.add(&other.get)?;
        self.put.add(&other.put)?;
        self.not_found += other.not_found;
        self.unavailable += other.unavailable;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for p in other.timeline {
            let b = self.bucket(p.second);
            b.get += p.get;
            b.put += p.put;
            b.unavailable_503 += p.unavailable_503;
            b.errors += p.errors;
        }
        Ok(())
    }

    /// The figures of a run whose sessions all ended now: rates over the
    /// measured window, CPU shares from the samples at its two ends.
    fn into_result(
        self,
        system: &str,
        targets: &[String],
        window: Window,
        cpu: Option<(CpuSample, CpuSample)>,
    ) -> LoadResult {
        // An early stop or an --ops cap ends the window before the deadline.
        let end = Instant::now().min(window.deadline);
        let elapsed_s = end
            .saturating_duration_since(window.measure_from)
            .as_secs_f64()
            .max(1e-9);
        let ops = self.get.len() + self.put.len();
        let errors = self.errors.values().sum();
        LoadResult {
            system: system.to_string(),
            targets: targets.to_vec(),
            elapsed_s,
            ops,
            throughput: ops as f64 / elapsed_s,
            get: op_stats(&self.get, elapsed_s),
            put: op_stats(&self.put, elapsed_s),
            not_found: self.not_found,
            unavailable_503: self.unavailable,
            errors,
            error_kinds: self.errors,
            foreign_cpu_pct: cpu.map(|(a, b)| a.foreign_pct(&b)),
            server_cpu_us_per_op: cpu
                .map(|(a, b)| a.children_cpu_s(&b) * 1e6 / ops.max(1) as f64)
                .filter(|v| *v > 0.0),
            client_cpu_us_per_op: cpu.map(|(a, b)| a.self_cpu_s(&b) * 1e6 / ops.max(1) as f64),
            timeline: self.timeline,
            hist_get: Some(self.get),
            hist_put: Some(self.put),
        }
    }
}

/// Write every key once (values of the workload's size), spreading the keys
/// over the targets with `concurrency` sessions. Each key is retried a few
/// times on 503 or error. Returns the last key written and its value.
pub async fn preload(
    targets: &[String],
    keys: u64,
    value_size: usize,
    concurrency: usize,
    seed: u64,
    show_progress: bool,
) -> Result<(String, Value)> {
    let progress = make_progress(show_progress, keys, "preload");
    let failed = Arc::new(AtomicU64::new(0));
    let concurrency = concurrency.clamp(1, keys.max(1) as usize);
    let mut tasks = Vec::new();
    for j in 0..concurrency {
        let mut session =
            Session::with_timeout(&targets[j % targets.len()], Duration::from_secs(10));
        let progress = progress.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x5EED ^ j as u64);
            let value = random_value(&mut rng, value_size);
            let mut i = j as u64;
            while i < keys {
                let mut ok = false;
                for _attempt in 0..5 {
                    if let Outcome::Ok(_) = session.put(&key_name(i), &value).await {
                        ok = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                progress.inc(1);
                i += concurrency as u64;
            }
            value
        }));
    }
    let mut last_value = Value::Null;
    for (j, t) in tasks.into_iter().enumerate() {
        let v = t.await?;
        // Key keys-1 was written by worker (keys-1) % concurrency.
        if j as u64 == (keys - 1) % concurrency as u64 {
            last_value = v;
        }
    }
    progress.finish_and_clear();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("preload: {failed} of {keys} keys could not be written");
    }
    Ok((key_name(keys - 1), last_value))
}

/// Sample the machine once a second until others use at most `max_pct` % of
/// its CPU, or `timeout` passes (then go on, and say so).
pub async fn wait_quiet(max_pct: f64, timeout: Duration) {
    let started = Instant::now();
    let mut said = false;
    while started.elapsed() < timeout {
        let Some(a) = CpuSample::now() else {
            return;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(b) = CpuSample::now() else {
            return;
        };
        let pct = a.foreign_pct(&b);
        if pct <= max_pct {
            return;
        }
        if !said {
            eprintln!(
                "waiting for other processes to use at most {max_pct:.0}% CPU (now {pct:.0}%)"
            );
            said = true;
        }
    }
    eprintln!(
        "machine still busy after {timeout:?}; measuring anyway (see foreign CPU in the report)"
    );
}

fn make_progress(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Run the workload against `targets` and measure it. `stop` ends the run
/// early (used when the load is only background for another measurement).
/// `show_progress`: a bar on a terminal, one plain line per second otherwise.
///
/// Phases: prepare (quiet machine, preload), run every session until the
/// deadline (with a progress reporter beside them), merge what the sessions
/// counted, and turn it into figures over the measured window.
/// A PUT-only workload run on a fresh local cluster per setting: what the
/// `durability` and `acks` modes compare settings with.
#[derive(clap::Args, Clone, Debug)]
pub struct PutWorkloadArgs {
    /// Concurrent PUT sessions.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Measured time of each run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Distinct keys written.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl PutWorkloadArgs {
    /// Starts a local cluster whose replicas also get `env`, runs the
    /// workload on it as `name`, and stops it.
    pub async fn run_on_fresh_cluster(
        &self,
        name: &str,
        cluster: &ClusterArgs,
        log_dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<LoadResult> {
        let mut spec = cluster.hearsay_spec(log_dir)?;
        spec.env.extend(env);
        let local = LocalCluster::start(spec, cluster.replicas.max(1)).await?;
        let workload = Workload {
            sessions: self.sessions,
            read_ratio: 0.0,
            keys: self.keys,
            value_size: self.value_size,
            duration: self.duration,
            warmup: self.warmup,
            seed: self.seed,
            ..Workload::default()
        };
        run(
            name,
            &local.addrs(),
            &workload,
            Arc::new(AtomicBool::new(false)),
            false,
        )
        .await
    }
}

pub async fn run(
    system: &str,
    targets: &[String],
    w: &Workload,
    stop: Arc<AtomicBool>,
    show_progress: bool,
) -> Result<LoadResult> {
    let targets = w.shape.targets(targets);
    prepare(targets, w, show_progress).await?;
    let live = Arc::new(Live::default());
    let window = Window::starting_now(w);
    let cpu_at_measure = tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from.into()).await;
        CpuSample::now()
    });
    let sessions = spawn_sessions(targets, w, window, &live, &stop)?;
    let reporter = tokio::spawn(report_progress(
        system.to_string(),
        live.clone(),
        window.start,
        w.warmup,
        w.duration,
        show_progress,
        stop.clone(),
    ));
    let mut merged = SessionStats::new();
    for session in sessions {
        merged.absorb(session.await?)?;
    }
    let cpu_end = CpuSample::now();
    reporter.abort();
    let _ = reporter.await;
    let cpu = match (cpu_at_measure.await.ok().flatten(), cpu_end) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Ok(merged.into_result(system, targets, window, cpu))
}

/// Before any session starts: check the workload, wait for a quiet machine
/// if asked, and write every key once unless told not to.
async fn prepare(targets: &[String], w: &Workload, show_progress: bool) -> Result<()> {
    w.validate()?;
    if targets.is_empty() {
        bail!("no targets to load");
    }
    if let Some(pct) = w.wait_quiet {
        wait_quiet(pct, Duration::from_secs(60)).await;
    }
    if !w.no_preload {
        preload(
            targets,
            w.keys,
            w.value_size,
            w.sessions,
            w.seed,
            show_progress,
        )
        .await?;
    }
    Ok(())
}

/// The timeline of one run: warm-up from `start`, then the measured window
/// from `measure_from` to `deadline`.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
}

impl Window {
    fn starting_now(w: &Workload) -> Self {
        let start = Instant::now();
        let measure_from = start + w.warmup;
        Window {
            start,
            measure_from,
            deadline: measure_from + w.duration,
        }
    }
}

/// One task per session, spread over the targets round-robin, each with its
/// own seed derived from the workload's.
fn spawn_sessions(
    targets: &[String],
    w: &Workload,
    window: Window,
    live: &Arc<Live>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<tokio::task::JoinHandle<SessionStats>>> {
    // Shared by all sessions so that --ops caps the run, not each session.
    let claimed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(w.sessions);
    for i in 0..w.sessions {
        let driver = SessionDriver {
            session: Session::with_timeout(&targets[i % targets.len()], w.request_timeout),
            chooser: KeyChooser::new(w)?,
            live: live.clone(),
            claimed: claimed.clone(),
            stop: stop.clone(),
            read_ratio: w.read_ratio,
            value_size: w.value_size,
            ops_cap: w.ops,
            seed: w
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64),
            window,
        };
        tasks.push(tokio::spawn(driver.run()));
    }
    Ok(tasks)
}

/// Everything one closed-loop session needs.
struct SessionDriver {
    session: Session,
    chooser: KeyChooser,
    live: Arc<Live>,
    claimed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    read_ratio: f64,
    value_size: usize,
    ops_cap: Option<u64>,
    seed: u64,
    window: Window,
}

impl SessionDriver {
    /// One request outstanding at a time until the deadline, a stop, or the
    /// --ops cap; returns what it counted in the measured window.
    async fn run(mut self) -> SessionStats {
        let Window {
            measure_from,
            deadline,
            ..
        } = self.window;
        let mut rng = SmallRng::seed_from_u64(self.seed);
        // A small pool of values: generating one per request would cost
        // the load generator CPU that the server under test needs.
        let values: Vec<Value> = (0..8)
            .map(|_| random_value(&mut rng, self.value_size))
            .collect();
        let mut stats = SessionStats::new();
        loop {
            let now = Instant::now();
            if now >= deadline || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let measuring = now >= measure_from;
            if measuring {
                if let Some(cap) = self.ops_cap {
                    if self.claimed.fetch_add(1, Ordering::Relaxed) >= cap {
                        break;
                    }
                }
            }
            let key = key_name(self.chooser.pick(&mut rng));
            let is_get = rng.random_bool(self.read_ratio);
            let sent = Instant::now();
            let outcome = if is_get {
                self.session.get(&key).await
            } else {
                let v = &values[rng.random_range(0..values.len())];
                self.session.put(&key, v).await
            };
            let done = Instant::now();
            if matches!(outcome, Outcome::Ok(_) | Outcome::NotFound) {
                self.live.ops.fetch_add(1, Ordering::Relaxed);
            } else {
                self.live.failures.fetch_add(1, Ordering::Relaxed);
            }
            // Only operations sent after warm-up and answered before the
            // deadline are measured, so the figures cover exactly the
            // measured window.
            if measuring && done <= deadline {
                let latency_us = (done - sent).as_micros() as u64;
                let second = (done - measure_from).as_secs();
                stats.record(&outcome, is_get, latency_us, second);
            }
            if let Outcome::Error(_) = outcome {
                // Back off so a dead target does not turn the session
                // into a busy loop that starves everything else.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        stats
    }
}

async fn report_progress(
    system: String,
    live: Arc<Live>,
    start: Instant,
    warmup: Duration,
    duration: Duration,
    show: bool,
    stop: Arc<AtomicBool>,
) {
    if !show {
        return;
    }
    let total = warmup + duration;
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(total.as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed_precise} {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(system.clone());
        Some(bar)
    } else {
        None
    };
    let tick = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let mut last_ops = 0;
    let mut last_t = start;
    loop {
        tokio::time::sleep(tick).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let ops = live.ops.load(Ordering::Relaxed);
        let fails = live.failures.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / (now - last_t).as_secs_f64();
        (last_ops, last_t) = (ops, now);
        let phase = if now - start < warmup {
            "warm-up"
        } else {
            "measuring"
        };
        let msg = format!("{phase} {rate:>8.0} ops/s  ok {ops}  failed {fails}");
        match &bar {
            Some(bar) => {
                bar.set_position((now - start).as_secs().min(total.as_secs()));
                bar.set_message(msg);
            }
            None => eprintln!("[{system}] t={:>4.1}s {msg}", (now - start).as_secs_f64()),
        }
        if now - start > total {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// A background load for modes that measure something else "under load".
pub struct Background {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<LoadResult>>,
}

impl Background {
    /// Start `w` against `targets` with a long cap; it runs until [`Self::finish`].
    pub fn start(targets: &[String], w: &Workload) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = w.clone();
        // Hard bound in case the caller never stops it.
        w.duration = w.duration.max(Duration::from_secs(600));
        w.warmup = Duration::ZERO;
        let targets = targets.to_vec();
        let s = stop.clone();
        let task = tokio::spawn(async move { run("background", &targets, &w, s, false).await });
        Background { stop, task }
    }

    pub async fn finish(self) -> Result<LoadResult> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_keys_stay_in_range_and_favour_low_ranks() {
        let w = Workload {
            keys: 100,
            dist: KeyDist::Zipf,
            ..Workload::default()
        };
        let chooser = KeyChooser::new(&w).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; 100];
        for _ in 0..20_000 {
            counts[chooser.pick(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[50] * 10);
    }

    #[test]
    fn shape_one_puts_every_session_on_the_first_target() {
        let targets: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        assert_eq!(Shape::One.targets(&targets), &targets[..1]);
        assert_eq!(Shape::Spread.targets(&targets), &targets[..]);
        assert!(Shape::One.targets(&[]).is_empty());
    }

    #[test]
    fn op_stats_reports_percentiles_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us * 1000).unwrap();
        }
        let s = op_stats(&h, 2.0);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0);
        assert!((s.throughput - 500.0).abs() < 1e-9);
    }
}
