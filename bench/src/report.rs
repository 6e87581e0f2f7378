//! The report directory: `report.json` (everything), CSV tables, SVG plots
//! and a human-readable `summary.md`, plus the run's provenance (date,
//! machine, commit) so numbers can be compared across runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::compare::{Comparison, Spread};
use crate::convergence::ConvergenceResult;
use crate::failover::FailoverResult;
use crate::fmt::fmt_ms;
use crate::gossip_cost::GossipCostResult;
use crate::load::{new_histogram, LoadResult, OpStats};
use crate::plot;
use crate::state_transfer::StateTransferResult;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Meta {
    pub date: String,
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub commit: String,
    pub command: Vec<String>,
}

impl Meta {
    pub fn collect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or_default();
        Meta {
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            host: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            commit: git_commit(),
            command: std::env::args().collect(),
        }
    }
}

/// Short commit of the checkout the bench was built from, `-dirty` if it has
/// uncommitted changes; "unknown" outside a git checkout.
fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Report {
    pub meta: Meta,
    pub load: Vec<Comparison>,
    pub convergence: Vec<ConvergenceResult>,
    pub gossip_cost: Vec<GossipCostResult>,
    pub failover: Option<FailoverResult>,
    pub state_transfer: Option<StateTransferResult>,
    /// Sections that could not be measured, and why.
    pub skipped: Vec<String>,
}

/// The report directory: `--out`, else `bench/results/<UTC timestamp>/`.
pub fn out_dir(out: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match out {
        Some(d) => d,
        None => {
            let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
                .to_string()
                .replace(':', "-");
            let base = Path::new(env!("CARGO_MANIFEST_DIR"));
            let base = if base.is_dir() {
                base.join("results")
            } else {
                PathBuf::from("results")
            };
            base.join(stamp)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[derive(Serialize)]
struct SummaryRow<'a> {
    workload: &'a str,
    run: usize,
    system: &'a str,
    op: &'a str,
    count: u64,
    throughput: f64,
    ratio_to_ceiling: Option<f64>,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    not_found: u64,
    unavailable_503: u64,
    errors: u64,
    server_cpu_us_per_op: Option<f64>,
    client_cpu_us_per_op: Option<f64>,
    foreign_cpu_pct: Option<f64>,
}

#[derive(Serialize)]
struct TimelineRow<'a> {
    workload: &'a str,
    run: usize,
    system: &'a str,
    second: u64,
    get: u64,
    put: u64,
    unavailable_503: u64,
    errors: u64,
}

#[derive(Serialize)]
struct ConvergenceRow<'a> {
    replicas: usize,
    phase: &'a str,
    samples: usize,
    converged: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    gossip_interval_ms: f64,
    p50_rounds: f64,
    p99_rounds: f64,
    goal_rounds: u32,
    meets_goal: bool,
}

#[derive(Serialize)]
struct GossipRow<'a> {
    keys: u64,
    phase: &'a str,
    replicas: usize,
    window_s: f64,
    rounds_per_s_per_replica: f64,
    bytes_per_round: f64,
    messages_per_round: f64,
    bytes_per_s_per_replica: f64,
    heartbeat_bytes_per_s_per_replica: f64,
}

fn csv_file<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

/// File-name-safe version of a workload name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

impl Report {
    pub fn new() -> Self {
        Report {
            meta: Meta::collect(),
            ..Default::default()
        }
    }

    /// Write everything present into `dir`. Returns the summary's text.
    pub fn write(&self, dir: &Path) -> Result<String> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("report.json"), json)?;

        if !self.load.is_empty() {
            self.write_load_csv(dir)?;
            for cmp in &self.load {
                self.plot_comparison(dir, cmp)?;
            }
        }
        if !self.convergence.is_empty() {
            csv_file(
                &dir.join("convergence.csv"),
                self.convergence.iter().map(|c| ConvergenceRow {
                    replicas: c.replicas,
                    phase: &c.phase,
                    samples: c.samples,
                    converged: c.converged,
                    p50_ms: c.p50_ms,
                    p99_ms: c.p99_ms,
                    max_ms: c.max_ms,
                    gossip_interval_ms: c.gossip_interval_ms,
                    p50_rounds: c.p50_rounds,
                    p99_rounds: c.p99_rounds,
                    goal_rounds: c.goal_rounds,
                    meets_goal: c.meets_goal,
                }),
            )?;
        }
        if !self.gossip_cost.is_empty() {
            csv_file(
                &dir.join("gossip_cost.csv"),
                self.gossip_cost.iter().map(|g| GossipRow {
                    keys: g.keys,
                    phase: &g.phase,
                    replicas: g.replicas,
                    window_s: g.window_s,
                    rounds_per_s_per_replica: g.rounds_per_s_per_replica,
                    bytes_per_round: g.bytes_per_round,
                    messages_per_round: g.messages_per_round,
                    bytes_per_s_per_replica: g.bytes_per_s_per_replica,
                    heartbeat_bytes_per_s_per_replica: g.heartbeat_bytes_per_s_per_replica,
                }),
            )?;
        }
        let summary = self.summary_md();
        std::fs::write(dir.join("summary.md"), &summary)?;
        Ok(summary)
    }

    fn write_load_csv(&self, dir: &Path) -> Result<()> {
        let mut rows = Vec::new();
        let mut timeline = Vec::new();
        for cmp in &self.load {
            for (i, pair) in cmp.runs.iter().enumerate() {
                for (system, r) in [("ceiling", &pair.ceiling), ("hearsay", &pair.hearsay)] {
                    let Some(r) = r else { continue };
                    let ceiling = pair.ceiling.as_ref();
                    let all = OpStats {
                        count: r.ops,
                        throughput: r.throughput,
                        ..Default::default()
                    };
                    for (op, s, c) in [
                        ("all", &all, ceiling.map(|c| c.throughput)),
                        ("get", &r.get, ceiling.map(|c| c.get.throughput)),
                        ("put", &r.put, ceiling.map(|c| c.put.throughput)),
                    ] {
                        rows.push(SummaryRow {
                            workload: &cmp.name,
                            run: i + 1,
                            system,
                            op,
                            count: s.count,
                            throughput: s.throughput,
                            ratio_to_ceiling: c.filter(|c| *c > 0.0).map(|c| s.throughput / c),
                            mean_ms: s.mean_ms,
                            p50_ms: s.p50_ms,
                            p90_ms: s.p90_ms,
                            p99_ms: s.p99_ms,
                            p999_ms: s.p999_ms,
                            max_ms: s.max_ms,
                            not_found: r.not_found,
                            unavailable_503: r.unavailable_503,
                            errors: r.errors,
                            server_cpu_us_per_op: r.server_cpu_us_per_op,
                            client_cpu_us_per_op: r.client_cpu_us_per_op,
                            foreign_cpu_pct: r.foreign_cpu_pct,
                        });
                    }
                    timeline.extend(r.timeline.iter().map(|p| TimelineRow {
                        workload: &cmp.name,
                        run: i + 1,
                        system,
                        second: p.second,
                        get: p.get,
                        put: p.put,
                        unavailable_503: p.unavailable_503,
                        errors: p.errors,
                    }));
                }
            }
        }
        csv_file(&dir.join("load_summary.csv"), rows)?;
        csv_file(&dir.join("load_timeline.csv"), timeline)
    }

    /// Latency curves merged over all runs of a workload, and every run's
    /// throughput line.
    fn plot_comparison(&self, dir: &Path, cmp: &Comparison) -> Result<()> {
        let merged = |sys: &dyn Fn(&crate::compare::RunPair) -> Option<&LoadResult>, get: bool| {
            let mut h = new_histogram();
            for r in cmp.runs.iter().filter_map(sys) {
                let src = if get { &r.hist_get } else { &r.hist_put };
                if let Some(src) = src {
                    h.add(src).expect("histograms share bounds");
                }
            }
            h
        };
        let hists = [
            ("ceiling GET", merged(&|p| p.ceiling.as_ref(), true)),
            ("ceiling PUT", merged(&|p| p.ceiling.as_ref(), false)),
            ("hearsay GET", merged(&|p| p.hearsay.as_ref(), true)),
            ("hearsay PUT", merged(&|p| p.hearsay.as_ref(), false)),
        ];
        let series: Vec<(String, &hdrhistogram::Histogram<u64>)> =
            hists.iter().map(|(l, h)| (l.to_string(), h)).collect();
        let name = slug(&cmp.name);
        plot::latency_svg(
            &dir.join(format!("latency-{name}.svg")),
            &format!("latency distribution: {}", cmp.name),
            &series,
        )?;
        let mut lines = Vec::new();
        for (i, pair) in cmp.runs.iter().enumerate() {
            for (system, r) in [("ceiling", &pair.ceiling), ("hearsay", &pair.hearsay)] {
                if let Some(r) = r {
                    let v = r.timeline.iter().map(|p| (p.get + p.put) as f64).collect();
                    lines.push((format!("{system} #{}", i + 1), v));
                }
            }
        }
        plot::throughput_svg(
            &dir.join(format!("throughput-{name}.svg")),
            &format!("throughput over time: {}", cmp.name),
            &lines,
        )
    }

    /// Markdown tables of every section present.
    pub fn summary_md(&self) -> String {
        let mut s = String::new();
        md_header(&mut s, &self.meta);
        if !self.load.is_empty() {
            md_load_overview(&mut s, &self.load);
            md_load_others(&mut s, &self.load);
            md_load_quiet(&mut s, &self.load);
            md_load_every_run(&mut s, &self.load);
            md_load_latency(&mut s, &self.load);
        }
        if !self.convergence.is_empty() {
            md_convergence(&mut s, &self.convergence);
        }
        if !self.gossip_cost.is_empty() {
            md_gossip_cost(&mut s, &self.gossip_cost);
        }
        if let Some(fo) = &self.failover {
            md_failover(&mut s, fo);
        }
        if let Some(st) = &self.state_transfer {
            md_state_transfer(&mut s, st);
        }
        if !self.skipped.is_empty() {
            md_skipped(&mut s, &self.skipped);
        }
        s
    }
}

// Sections of `summary.md`, in the order they appear. Each appends its
// heading, tables and trailing blank line to `s`; writing to a String cannot
// fail, so the `fmt::Result`s are dropped.

/// Two decimals, the precision of latencies and ratios in the tables.
fn two_decimals(v: f64) -> String {
    format!("{v:.2}")
}

/// A spread as "mean (min–max)", or only the mean when there was one value.
fn md_spread(s: &Option<Spread>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.2} ({:.2}–{:.2})", s.mean, s.min, s.max),
        Some(s) => format!("{:.2}", s.mean),
        None => "–".into(),
    }
}

fn md_header(s: &mut String, m: &Meta) {
    let _ = writeln!(s, "# hearsay bench report\n");
    let _ = writeln!(
        s,
        "date {} · host {} · {} ({} cores, {} GiB) · kernel {} · commit {}\n",
        m.date, m.host, m.cpu, m.cores, m.memory_gib, m.kernel, m.commit
    );
}

/// One row per workload: throughputs, ratios with their spreads, failures.
fn md_load_overview(s: &mut String, load: &[Comparison]) {
    let _ = writeln!(s, "## Load: hearsay vs ceiling (same run, same settings)\n");
    let _ = writeln!(s, "| workload | sessions | read ratio | runs | ceiling ops/s | hearsay ops/s | ratio | GET ratio | PUT ratio | GET p99 ratio | PUT p99 ratio | hearsay spread ±% | server CPU/op ratio | 503s | errors | max foreign CPU % |");
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in load {
        let st = c.settings.as_ref();
        let sm = &c.summary;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            st.map_or(0, |w| w.sessions),
            st.map_or(0.0, |w| w.read_ratio),
            c.runs.len(),
            sm.ceiling_throughput
                .as_ref()
                .map_or("–".into(), |x| format!("{:.0}", x.mean)),
            sm.hearsay_throughput
                .as_ref()
                .map_or("–".into(), |x| format!("{:.0}", x.mean)),
            md_spread(&sm.throughput_ratio),
            md_spread(&sm.get_throughput_ratio),
            md_spread(&sm.put_throughput_ratio),
            md_spread(&sm.get_p99_ratio),
            md_spread(&sm.put_p99_ratio),
            sm.hearsay_throughput
                .as_ref()
                .map_or("–".into(), |x| format!("{:.1}", x.spread_pct)),
            md_spread(&sm.server_cpu_per_op_ratio),
            sm.hearsay_unavailable_503,
            sm.hearsay_errors,
            sm.max_foreign_cpu_pct
                .map_or("–".into(), |x| format!("{x:.0}")),
        );
    }
}

/// Other stores (Redis, etcd) beside the ceiling, when any ran or was skipped.
fn md_load_others(s: &mut String, load: &[Comparison]) {
    let ran = load.iter().any(|c| !c.summary.others.is_empty());
    let notes: std::collections::BTreeSet<&String> =
        load.iter().flat_map(|c| &c.others_skipped).collect();
    if !ran && notes.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nOther stores in the same rounds, as ratios to the same ceiling runs (Redis: one node, no persistence; etcd: 3 members, HTTP/JSON gateway; split-ceiling: one ceiling process per hearsay replica, each holding every key, spread shape only: what splitting the cores among that many processes costs by itself):\n"
    );
    let _ = writeln!(s, "| workload | system | ops/s | ratio | GET ratio | PUT ratio | GET p99 ratio | PUT p99 ratio | errors + 503s |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for c in load {
        let sm = &c.summary;
        // hearsay's row from its own summary, then one per other store.
        let hearsay = crate::compare::OtherSummary {
            throughput: sm.hearsay_throughput.clone(),
            throughput_ratio: sm.throughput_ratio.clone(),
            get_throughput_ratio: sm.get_throughput_ratio.clone(),
            put_throughput_ratio: sm.put_throughput_ratio.clone(),
            get_p99_ratio: sm.get_p99_ratio.clone(),
            put_p99_ratio: sm.put_p99_ratio.clone(),
            errors: sm.hearsay_errors + sm.hearsay_unavailable_503,
        };
        let rows = std::iter::once(("hearsay", &hearsay))
            .chain(sm.others.iter().map(|(name, o)| (name.as_str(), o)));
        for (system, o) in rows {
            let _ = writeln!(
                s,
                "| {} | {system} | {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                o.throughput
                    .as_ref()
                    .map_or("–".into(), |x| format!("{:.0}", x.mean)),
                md_spread(&o.throughput_ratio),
                md_spread(&o.get_throughput_ratio),
                md_spread(&o.put_throughput_ratio),
                md_spread(&o.get_p99_ratio),
                md_spread(&o.put_p99_ratio),
                o.errors
            );
        }
    }
    for note in notes {
        let _ = writeln!(s, "\n{note}");
    }
}

/// The same ratios over the quiet run pairs only.
fn md_load_quiet(s: &mut String, load: &[Comparison]) {
    let _ = writeln!(
        s,
        "\nQuiet runs only (other processes ≤ {:.0} % of the CPU during both runs of a pair, and the load generator's CPU per operation within {:.0} % of its lowest against that system: a VM slowed by its host shows there even when no process does):\n",
        crate::compare::QUIET_FOREIGN_CPU_PCT,
        (crate::compare::FULL_SPEED_TOLERANCE - 1.0) * 100.0
    );
    let _ = writeln!(
        s,
        "| workload | quiet pairs | throughput ratio | p99 ratio | hearsay spread ±% |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for c in load {
        let sm = &c.summary;
        let _ = writeln!(
            s,
            "| {} | {}/{} | {} | {} | {} |",
            c.name,
            sm.quiet_pairs,
            c.runs.len(),
            md_spread(&sm.quiet_throughput_ratio),
            md_spread(&sm.quiet_p99_ratio),
            sm.quiet_hearsay_throughput
                .as_ref()
                .map_or("–".into(), |x| format!("{:.1}", x.spread_pct))
        );
    }
}

/// One row per run pair: throughputs and server CPU per operation.
fn md_load_every_run(s: &mut String, load: &[Comparison]) {
    let _ = writeln!(
        s,
        "\nEvery run (server CPU: µs of CPU all server processes spent per operation):\n"
    );
    let _ = writeln!(s, "| workload | run | ceiling ops/s | hearsay ops/s | ratio | ceiling server CPU µs/op | hearsay server CPU µs/op | foreign CPU % |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for c in load {
        for (i, p) in c.runs.iter().enumerate() {
            let thr = |r: &Option<LoadResult>| r.as_ref().map(|r| r.throughput);
            let cpu = |r: &Option<LoadResult>| r.as_ref().and_then(|r| r.server_cpu_us_per_op);
            let num =
                |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
            let ratio = thr(&p.hearsay).zip(thr(&p.ceiling)).map(|(h, c)| h / c);
            let foreign = [&p.ceiling, &p.hearsay]
                .iter()
                .filter_map(|r| r.as_ref()?.foreign_cpu_pct)
                .reduce(f64::max);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                i + 1,
                num(thr(&p.ceiling), 0),
                num(thr(&p.hearsay), 0),
                num(ratio, 2),
                num(cpu(&p.ceiling), 0),
                num(cpu(&p.hearsay), 0),
                num(foreign, 0)
            );
        }
    }
}

/// Percentiles of the last run of each workload; ends the load section.
fn md_load_latency(s: &mut String, load: &[Comparison]) {
    let f = two_decimals;
    let _ = writeln!(s, "\nLatency (ms, last run of each workload):\n");
    let _ = writeln!(
        s,
        "| workload | system | op | p50 | p90 | p99 | p99.9 | max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for c in load {
        let Some(pair) = c.runs.last() else { continue };
        for (system, r) in [("ceiling", &pair.ceiling), ("hearsay", &pair.hearsay)] {
            let Some(r) = r else { continue };
            for (op, o) in [("GET", &r.get), ("PUT", &r.put)] {
                if o.count == 0 {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "| {} | {system} | {op} | {} | {} | {} | {} | {} |",
                    c.name,
                    f(o.p50_ms),
                    f(o.p90_ms),
                    f(o.p99_ms),
                    f(o.p999_ms),
                    f(o.max_ms)
                );
            }
        }
    }
    let _ = writeln!(s);
}

fn md_convergence(s: &mut String, convergence: &[ConvergenceResult]) {
    let f = two_decimals;
    let _ = writeln!(s, "## Convergence (ack → visible on every replica)\n");
    let _ = writeln!(s, "| replicas | phase | converged | p50 ms | p99 ms | max ms | p50 rounds | p99 rounds | goal (rounds) | met |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for c in convergence {
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | ≤ {} | {} |",
            c.replicas,
            c.phase,
            c.converged,
            c.samples,
            f(c.p50_ms),
            f(c.p99_ms),
            f(c.max_ms),
            f(c.p50_rounds),
            f(c.p99_rounds),
            c.goal_rounds,
            if c.meets_goal { "yes" } else { "no" }
        );
    }
    if let Some(c) = convergence.first() {
        let _ = writeln!(
            s,
            "\nGossip interval {} ms ({}).\n",
            c.gossip_interval_ms, c.gossip_interval_source
        );
    }
}

fn md_gossip_cost(s: &mut String, gossip_cost: &[GossipCostResult]) {
    let _ = writeln!(s, "## Gossip cost\n");
    let _ = writeln!(s, "| keys | phase | replicas | gossip bytes/round | messages/round | rounds/s/replica | gossip bytes/s/replica | heartbeat bytes/s/replica |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for g in gossip_cost {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            g.keys,
            g.phase,
            g.replicas,
            g.bytes_per_round,
            g.messages_per_round,
            g.rounds_per_s_per_replica,
            g.bytes_per_s_per_replica,
            g.heartbeat_bytes_per_s_per_replica
        );
    }
    let _ = writeln!(s);
}

fn md_failover(s: &mut String, fo: &FailoverResult) {
    let _ = writeln!(
        s,
        "## Failure detection and rejoin ({} replicas)\n",
        fo.replicas
    );
    let _ = writeln!(s, "| event | time |\n|---|---|");
    let _ = writeln!(
        s,
        "| SIGKILL → gone from every survivor's view | {} |",
        fmt_ms(fo.kill_detected_ms)
    );
    let _ = writeln!(
        s,
        "| restart → in every view | {} |",
        fmt_ms(fo.restart_in_views_ms)
    );
    let _ = writeln!(
        s,
        "| restart → /ready 200 | {} |",
        fmt_ms(fo.restart_ready_ms)
    );
    let _ = writeln!(
        s,
        "| restart → serves key written while down | {} |",
        fmt_ms(fo.restart_caught_up_ms)
    );
    let _ = writeln!(
        s,
        "| SIGSTOP {:.0} ms → removed from a view? | {} |",
        fo.stall_ms,
        if fo.stall_removed { "yes" } else { "no" }
    );
    let _ = writeln!(
        s,
        "| SIGCONT → back in every view | {} |\n",
        fmt_ms(fo.stall_back_in_views_ms)
    );
}

fn md_state_transfer(s: &mut String, st: &StateTransferResult) {
    let _ = writeln!(
        s,
        "## State transfer ({} keys of {} B, {} replicas)\n",
        st.keys, st.value_size, st.replicas
    );
    let _ = writeln!(s, "| what | value |\n|---|---|");
    let _ = writeln!(s, "| new replica → /ready 200 | {} |", fmt_ms(st.ready_ms));
    let _ = writeln!(
        s,
        "| new replica → serves last key | {} |",
        fmt_ms(st.serves_last_key_ms)
    );
    let _ = writeln!(s, "| preload rate | {:.0} PUT/s |", st.preload_ops_per_s);
    let bpk = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} B"));
    let _ = writeln!(
        s,
        "| RSS growth per key (existing replicas) | {} |",
        bpk(st.rss_bytes_per_key)
    );
    let _ = writeln!(
        s,
        "| RSS per key (new replica) | {} |\n",
        bpk(st.new_replica_rss_bytes_per_key)
    );
}

fn md_skipped(s: &mut String, skipped: &[String]) {
    let _ = writeln!(s, "## Not measured\n");
    for k in skipped {
        let _ = writeln!(s, "- {k}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{ComparisonSummary, RunPair};
    use crate::load::{OpStats, WorkloadSettings};

    fn stats(base: f64) -> OpStats {
        OpStats {
            count: 1000,
            throughput: base * 100.0,
            mean_ms: base,
            p50_ms: base * 0.9,
            p90_ms: base * 1.5,
            p99_ms: base * 3.0,
            p999_ms: base * 7.0,
            max_ms: base * 20.0,
        }
    }

    fn run(system: &str, throughput: f64, foreign: Option<f64>) -> LoadResult {
        LoadResult {
            system: system.into(),
            ops: 2000,
            throughput,
            get: stats(0.4),
            put: OpStats {
                count: 0,
                ..stats(0.8)
            },
            server_cpu_us_per_op: Some(throughput / 1000.0),
            foreign_cpu_pct: foreign,
            ..Default::default()
        }
    }

    fn spread(values: &[f64]) -> Option<Spread> {
        Spread::of(values)
    }

    /// A report with every section present, odd values and absent values
    /// mixed, so the summary exercises each formatting branch.
    fn fixture() -> Report {
        let load = Comparison {
            name: "read-heavy 90/10".into(),
            settings: Some(WorkloadSettings {
                sessions: 64,
                read_ratio: 0.9,
                keys: 1000,
                dist: crate::load::KeyDist::Uniform,
                zipf_s: 0.99,
                value_size: 64,
                duration_s: 10.0,
                ops: None,
                warmup_s: 1.0,
                seed: 1,
                preload: true,
                shape: crate::load::Shape::Spread,
            }),
            runs: vec![
                RunPair {
                    ceiling: Some(run("ceiling", 51234.5, Some(3.2))),
                    hearsay: Some(run("hearsay", 20111.1, Some(12.7))),
                    ..Default::default()
                },
                RunPair {
                    ceiling: None,
                    hearsay: Some(run("hearsay", 19876.0, None)),
                    ..Default::default()
                },
            ],
            summary: ComparisonSummary {
                hearsay_throughput: spread(&[20111.1, 19876.0]),
                ceiling_throughput: spread(&[51234.5]),
                throughput_ratio: spread(&[0.392, 0.401]),
                get_throughput_ratio: spread(&[0.41]),
                put_throughput_ratio: None,
                get_p99_ratio: spread(&[1.7, 2.25]),
                put_p99_ratio: None,
                hearsay_unavailable_503: 3,
                hearsay_errors: 1,
                max_foreign_cpu_pct: Some(12.7),
                server_cpu_per_op_ratio: spread(&[2.5]),
                quiet_pairs: 1,
                quiet_throughput_ratio: spread(&[0.392]),
                quiet_hearsay_throughput: spread(&[20111.1]),
                quiet_p99_ratio: None,
                others: Default::default(),
            },
            others_skipped: vec![],
        };
        let mut no_settings = load.clone();
        no_settings.name = "empty".into();
        no_settings.settings = None;
        no_settings.runs.clear();
        no_settings.summary = ComparisonSummary::default();
        let convergence = |replicas, phase: &str, meets_goal| ConvergenceResult {
            replicas,
            phase: phase.into(),
            samples: 200,
            converged: 199,
            p50_ms: 101.234,
            p99_ms: 402.5,
            max_ms: 950.0,
            gossip_interval_ms: 100.0,
            gossip_interval_source: "hearsay config".into(),
            p50_rounds: 1.01,
            p99_rounds: 4.025,
            goal_rounds: 4,
            meets_goal,
            background_ops_per_s: None,
            samples_ms: vec![],
        };
        Report {
            meta: Meta {
                date: "2024-01-02T03:04:05Z".into(),
                host: "bench-host".into(),
                cpu: "Some CPU @ 2.0GHz".into(),
                cores: 2,
                memory_gib: 7.8,
                kernel: "6.1.0".into(),
                commit: "abc1234-dirty".into(),
                command: vec!["hearsay-bench".into(), "suite".into()],
            },
            load: vec![load, no_settings],
            convergence: vec![
                convergence(3, "idle", true),
                convergence(5, "loaded", false),
            ],
            gossip_cost: vec![GossipCostResult {
                keys: 10_000,
                phase: "idle".into(),
                replicas: 3,
                window_s: 5.0,
                rounds_per_s_per_replica: 9.876,
                bytes_per_round: 1234.56,
                messages_per_round: 2.0,
                bytes_per_s_per_replica: 12_192.3,
                heartbeat_bytes_per_s_per_replica: 345.6,
                background_ops_per_s: None,
                per_replica: vec![],
            }],
            failover: Some(FailoverResult {
                replicas: 3,
                kill_detected_ms: Some(1502.4),
                restart_in_views_ms: Some(320.0),
                restart_ready_ms: None,
                restart_caught_up_ms: Some(410.6),
                stall_ms: 1000.0,
                stall_removed: true,
                stall_back_in_views_ms: Some(250.2),
            }),
            state_transfer: Some(StateTransferResult {
                replicas: 3,
                keys: 100_000,
                value_size: 64,
                preload_s: 12.5,
                preload_ops_per_s: 8000.4,
                rss_bytes_per_key: Some(210.7),
                new_replica_rss_bytes_per_key: None,
                ready_ms: Some(2200.0),
                serves_last_key_ms: None,
            }),
            skipped: vec!["failover: needs a local cluster".into()],
        }
    }

    /// The summary of a fixed report is exactly the recorded text: its
    /// layout is read by people comparing runs, so a refactor must not move
    /// a character.
    #[test]
    fn summary_md_of_a_fixed_report_is_unchanged() {
        let expected = include_str!("testdata/summary.md");
        assert_eq!(fixture().summary_md(), expected);
    }

    #[test]
    fn other_stores_get_rows_of_ratios_to_the_same_ceiling_runs_and_skips_a_note() {
        let mut report = fixture();
        let cmp = &mut report.load[0];
        cmp.runs[0]
            .others
            .insert("redis".into(), run("redis", 76851.75, Some(3.0)));
        cmp.others_skipped = vec!["etcd: skipped: not installed".into()];
        cmp.summarise();
        let md = report.summary_md();
        // 76851.75 / 51234.5 = 1.5, over the one pair that has a ceiling run.
        assert!(
            md.contains("| read-heavy 90/10 | redis | 76852 | 1.50 | 1.00 |"),
            "{md}"
        );
        assert!(md.contains("| read-heavy 90/10 | hearsay | "), "{md}");
        assert!(md.contains("\netcd: skipped: not installed\n"), "{md}");
    }

    #[test]
    fn summary_md_of_an_empty_report_has_only_the_header() {
        let report = Report {
            meta: fixture().meta,
            ..Default::default()
        };
        assert_eq!(
            report.summary_md(),
            "# hearsay bench report\n\n\
             date 2024-01-02T03:04:05Z · host bench-host · Some CPU @ 2.0GHz (2 cores, 7.8 GiB) · kernel 6.1.0 · commit abc1234-dirty\n\n"
        );
    }
}
