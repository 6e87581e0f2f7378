//! Side-by-side runs: the same workload against the ceiling and against
//! hearsay, alternating, `repeat` times, and the ratios and spreads that
//! summarise them.
//!
//! Runs alternate in ABBA order (ceiling, hearsay, hearsay, ceiling, …)
//! rather than running all of one system first, so slow drifts of a shared
//! machine, and any advantage of going first, fall on both systems alike.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::load::{self, LoadResult, Shape, Workload, WorkloadSettings};
use crate::others::{Others, SPLIT_CEILING};

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct RunPair {
    pub ceiling: Option<LoadResult>,
    pub hearsay: Option<LoadResult>,
    /// Other stores (Redis, etcd) in the same round, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub others: BTreeMap<String, LoadResult>,
}

/// Another store's figures as ratios to the ceiling of the same rounds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct OtherSummary {
    pub throughput: Option<Spread>,
    pub throughput_ratio: Option<Spread>,
    pub get_throughput_ratio: Option<Spread>,
    pub put_throughput_ratio: Option<Spread>,
    pub get_p99_ratio: Option<Spread>,
    pub put_p99_ratio: Option<Spread>,
    pub errors: u64,
}

/// The median of `values` (0 for none; the mean of the middle two for an
/// even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Mean, extremes and the largest deviation from the mean in percent (the
/// project's "within ±5 %" goal).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub spread_pct: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let dev = (max - mean).max(mean - min);
        Some(Spread {
            n: values.len(),
            mean,
            min,
            max,
            spread_pct: if mean != 0.0 { dev / mean * 100.0 } else { 0.0 },
        })
    }
}

// `default`: reports written by older bench versions still load (`render`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ComparisonSummary {
    pub hearsay_throughput: Option<Spread>,
    pub ceiling_throughput: Option<Spread>,
    /// hearsay ÷ ceiling, per run pair.
    pub throughput_ratio: Option<Spread>,
    pub get_throughput_ratio: Option<Spread>,
    pub put_throughput_ratio: Option<Spread>,
    pub get_p99_ratio: Option<Spread>,
    pub put_p99_ratio: Option<Spread>,
    pub hearsay_unavailable_503: u64,
    pub hearsay_errors: u64,
    /// Largest share of CPU other processes took during any run.
    pub max_foreign_cpu_pct: Option<f64>,
    /// Server CPU per operation, hearsay ÷ ceiling: the efficiency ratio,
    /// much steadier than throughput on a shared machine.
    pub server_cpu_per_op_ratio: Option<Spread>,
    /// Run pairs in which other processes took at most
    /// [`QUIET_FOREIGN_CPU_PCT`] of the CPU during both runs and the machine
    /// ran at full speed (see [`FULL_SPEED_TOLERANCE`]).
    pub quiet_pairs: usize,
    /// hearsay ÷ ceiling throughput over the quiet pairs only.
    pub quiet_throughput_ratio: Option<Spread>,
    /// hearsay's throughput over the quiet pairs only: the stability figure
    /// when some runs were disturbed.
    pub quiet_hearsay_throughput: Option<Spread>,
    /// hearsay ÷ ceiling p99 (GET, or PUT when there are no GETs) over the quiet pairs.
    pub quiet_p99_ratio: Option<Spread>,
    /// Other stores run beside hearsay, by name.
    pub others: BTreeMap<String, OtherSummary>,
}

/// A run pair counts as quiet when other processes took at most this share
/// of the CPU during each of its two runs.
pub const QUIET_FOREIGN_CPU_PCT: f64 = 10.0;

/// A run counts as quiet only if the load generator's CPU per operation was
/// within this factor of its lowest against the same system in the
/// workload. On a virtual machine the cores themselves can slow down (a busy
/// host) with no process of anyone's visible and no steal time. The load
/// generator does the same work per request against a given system in every
/// run, and spends no CPU while it waits, so a rise in its CPU per operation
/// shows a slower machine — not a slower server.
pub const FULL_SPEED_TOLERANCE: f64 = 1.15;

fn quiet(r: &LoadResult) -> bool {
    r.foreign_cpu_pct
        .is_some_and(|f| f <= QUIET_FOREIGN_CPU_PCT)
}

/// Whether a run shows the machine at full speed, given the lowest client
/// CPU per operation against the same system in the workload (an unknown
/// figure never disqualifies a run).
fn full_speed(run: &LoadResult, best_client_cpu_per_op: Option<f64>) -> bool {
    match (run.client_cpu_us_per_op, best_client_cpu_per_op) {
        (Some(cpu), Some(best)) => cpu <= best * FULL_SPEED_TOLERANCE,
        _ => true,
    }
}

/// The lowest client CPU per operation among `runs`.
fn best_client_cpu<'a>(runs: impl Iterator<Item = &'a LoadResult>) -> Option<f64> {
    runs.filter_map(|r| r.client_cpu_us_per_op)
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
}

/// hearsay ÷ ceiling of `f` over `pairs` (pairs where the ceiling's figure is 0 are skipped).
fn ratio_over(
    pairs: &[(&LoadResult, &LoadResult)],
    f: &dyn Fn(&LoadResult) -> f64,
) -> Option<Spread> {
    let v: Vec<f64> = pairs
        .iter()
        .filter(|(_, c)| f(c) > 0.0)
        .map(|(h, c)| f(h) / f(c))
        .collect();
    Spread::of(&v)
}

/// The p99 that describes a run: GET's, or PUT's in a write-only run.
fn p99(r: &LoadResult) -> f64 {
    if r.get.count > 0 {
        r.get.p99_ms
    } else {
        r.put.p99_ms
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Comparison {
    pub name: String,
    pub settings: Option<WorkloadSettings>,
    pub runs: Vec<RunPair>,
    pub summary: ComparisonSummary,
    /// Other stores that were not measured, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others_skipped: Vec<String>,
}

impl Comparison {
    pub fn summarise(&mut self) {
        let pairs: Vec<(&LoadResult, &LoadResult)> = self
            .runs
            .iter()
            .filter_map(|p| Some((p.hearsay.as_ref()?, p.ceiling.as_ref()?)))
            .collect();
        let ratio = |f: &dyn Fn(&LoadResult) -> f64| ratio_over(&pairs, f);
        let best_hearsay = best_client_cpu(pairs.iter().map(|(h, _)| *h));
        let best_ceiling = best_client_cpu(pairs.iter().map(|(_, c)| *c));
        let quiet_pairs: Vec<(&LoadResult, &LoadResult)> = pairs
            .iter()
            .copied()
            .filter(|(h, c)| {
                quiet(h) && quiet(c) && full_speed(h, best_hearsay) && full_speed(c, best_ceiling)
            })
            .collect();
        let quiet_hearsay: Vec<f64> = quiet_pairs.iter().map(|(h, _)| h.throughput).collect();
        let of = |sys: &dyn Fn(&RunPair) -> Option<&LoadResult>| {
            let v: Vec<f64> = self
                .runs
                .iter()
                .filter_map(sys)
                .map(|r| r.throughput)
                .collect();
            Spread::of(&v)
        };
        let foreign = self
            .runs
            .iter()
            .flat_map(|p| [&p.ceiling, &p.hearsay])
            .filter_map(|r| r.as_ref()?.foreign_cpu_pct)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let mut others = BTreeMap::new();
        let names: std::collections::BTreeSet<&String> =
            self.runs.iter().flat_map(|p| p.others.keys()).collect();
        for name in names {
            let pairs: Vec<(&LoadResult, &LoadResult)> = self
                .runs
                .iter()
                .filter_map(|p| Some((p.others.get(name)?, p.ceiling.as_ref()?)))
                .collect();
            let runs: Vec<&LoadResult> = self
                .runs
                .iter()
                .filter_map(|p| p.others.get(name))
                .collect();
            let ratio = |f: &dyn Fn(&LoadResult) -> f64| ratio_over(&pairs, f);
            others.insert(
                name.clone(),
                OtherSummary {
                    throughput: Spread::of(&runs.iter().map(|r| r.throughput).collect::<Vec<_>>()),
                    throughput_ratio: ratio(&|r| r.throughput),
                    get_throughput_ratio: ratio(&|r| r.get.throughput),
                    put_throughput_ratio: ratio(&|r| r.put.throughput),
                    get_p99_ratio: ratio(&|r| r.get.p99_ms),
                    put_p99_ratio: ratio(&|r| r.put.p99_ms),
                    errors: runs.iter().map(|r| r.errors + r.unavailable_503).sum(),
                },
            );
        }
        self.summary = ComparisonSummary {
            others,
            max_foreign_cpu_pct: foreign,
            quiet_pairs: quiet_pairs.len(),
            quiet_throughput_ratio: ratio_over(&quiet_pairs, &|r| r.throughput),
            quiet_p99_ratio: ratio_over(&quiet_pairs, &p99),
            quiet_hearsay_throughput: Spread::of(&quiet_hearsay),
            hearsay_throughput: of(&|p| p.hearsay.as_ref()),
            ceiling_throughput: of(&|p| p.ceiling.as_ref()),
            throughput_ratio: ratio(&|r| r.throughput),
            get_throughput_ratio: ratio(&|r| r.get.throughput),
            put_throughput_ratio: ratio(&|r| r.put.throughput),
            get_p99_ratio: ratio(&|r| r.get.p99_ms),
            server_cpu_per_op_ratio: ratio(&|r| r.server_cpu_us_per_op.unwrap_or(f64::NAN)),
            put_p99_ratio: ratio(&|r| r.put.p99_ms),
            hearsay_unavailable_503: self
                .runs
                .iter()
                .filter_map(|p| p.hearsay.as_ref())
                .map(|r| r.unavailable_503)
                .sum(),
            hearsay_errors: self
                .runs
                .iter()
                .filter_map(|p| p.hearsay.as_ref())
                .map(|r| r.errors)
                .sum(),
        };
    }
}

/// Run `w` `repeat` times against each system that has targets.
pub async fn compare(
    name: &str,
    w: &Workload,
    ceiling: Option<&[String]>,
    hearsay: Option<&[String]>,
    repeat: usize,
) -> Result<Comparison> {
    compare_with(name, w, ceiling, hearsay, &Others::none(), repeat).await
}

/// [`compare`], with the other stores in `others` run in every round too
/// (after hearsay in even rounds, before the ceiling in odd ones).
pub async fn compare_with(
    name: &str,
    w: &Workload,
    ceiling: Option<&[String]>,
    hearsay: Option<&[String]>,
    others: &Others,
    repeat: usize,
) -> Result<Comparison> {
    let mut cmp = Comparison {
        name: name.into(),
        settings: Some(w.settings()),
        others_skipped: others.notes.clone(),
        ..Default::default()
    };
    for i in 0..repeat.max(1) {
        let mut pair = RunPair::default();
        // Vary the seed per repeat so runs are independent samples, yet the
        // ceiling and hearsay of one pair see the very same request stream.
        let mut w = w.clone();
        w.seed = w.seed.wrapping_add(i as u64);
        let mut order: Vec<(&str, Option<&[String]>)> =
            vec![("ceiling", ceiling), ("hearsay", hearsay)];
        for (other, targets) in &others.systems {
            // All load on one process of the split ceiling is the ceiling.
            if other == SPLIT_CEILING && w.shape == Shape::One {
                continue;
            }
            order.push((other, Some(targets)));
        }
        if i % 2 == 1 {
            order.reverse();
        }
        for (system, targets) in order {
            if let Some(targets) = targets {
                let w = if system == SPLIT_CEILING {
                    preload_every_process(targets, &w).await?
                } else {
                    w.clone()
                };
                let r =
                    load::run(system, targets, &w, Arc::new(AtomicBool::new(false)), true).await?;
                eprintln!(
                    "{name} #{}: {system:>7} {:>9.0} ops/s  get p50 {:.2} p99 {:.2} ms  put p50 {:.2} p99 {:.2} ms  503 {}  errors {}  server CPU {} µs/op  foreign CPU {}%",
                    i + 1,
                    r.throughput,
                    r.get.p50_ms,
                    r.get.p99_ms,
                    r.put.p50_ms,
                    r.put.p99_ms,
                    r.unavailable_503,
                    r.errors,
                    r.server_cpu_us_per_op.map_or("–".into(), |v| format!("{v:.0}")),
                    r.foreign_cpu_pct.map_or("–".into(), |v| format!("{v:.0}"))
                );
                match system {
                    "ceiling" => pair.ceiling = Some(r),
                    "hearsay" => pair.hearsay = Some(r),
                    other => {
                        pair.others.insert(other.to_string(), r);
                    }
                }
            }
        }
        cmp.runs.push(pair);
    }
    cmp.summarise();
    if let Some(r) = &cmp.summary.throughput_ratio {
        eprintln!(
            "{name}: hearsay/ceiling throughput {:.2} (min {:.2}, max {:.2})",
            r.mean, r.min, r.max
        );
    }
    Ok(cmp)
}

/// The split ceiling's processes share nothing, so each is preloaded with
/// every key (as every hearsay replica holds every key); returns the workload
/// to run on them, which then preloads nothing more.
async fn preload_every_process(targets: &[String], w: &Workload) -> Result<Workload> {
    if !w.no_preload {
        for target in targets {
            load::preload(
                std::slice::from_ref(target),
                w.keys,
                w.value_size,
                w.sessions,
                w.seed,
                false,
            )
            .await?;
        }
    }
    Ok(Workload {
        no_preload: true,
        ..w.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64, foreign: f64, client_cpu: f64) -> LoadResult {
        LoadResult {
            throughput,
            foreign_cpu_pct: Some(foreign),
            client_cpu_us_per_op: Some(client_cpu),
            ..Default::default()
        }
    }

    #[test]
    fn pairs_on_a_busy_or_slowed_machine_are_not_quiet() {
        let pair = |h: LoadResult, c: LoadResult| RunPair {
            hearsay: Some(h),
            ceiling: Some(c),
            ..Default::default()
        };
        let mut cmp = Comparison {
            runs: vec![
                pair(run(80.0, 0.0, 12.0), run(100.0, 0.0, 10.0)),
                pair(run(84.0, 0.0, 12.5), run(100.0, 0.0, 11.0)),
                // Someone else's build: visible as foreign CPU.
                pair(run(40.0, 50.0, 12.0), run(90.0, 0.0, 10.0)),
                // A slowed VM during the hearsay run: nobody visible, but the
                // load generator needs 40 % more CPU per request.
                pair(run(50.0, 0.0, 17.0), run(100.0, 0.0, 10.0)),
            ],
            ..Default::default()
        };
        cmp.summarise();
        let sm = &cmp.summary;
        assert_eq!(sm.quiet_pairs, 2);
        let stable = sm.quiet_hearsay_throughput.as_ref().unwrap();
        assert_eq!((stable.min, stable.max), (80.0, 84.0));
        assert!(sm.hearsay_throughput.as_ref().unwrap().spread_pct > 30.0);
    }

    #[test]
    fn spread_is_largest_deviation_from_mean() {
        let s = Spread::of(&[95.0, 100.0, 105.0]).unwrap();
        assert_eq!(s.mean, 100.0);
        assert!((s.spread_pct - 5.0).abs() < 1e-9);
        assert!(Spread::of(&[]).is_none());
    }
}
