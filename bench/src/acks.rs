//! Acknowledged-by-N writes: what `ack_replicas` costs. PUT throughput and
//! PUT latency of a local cluster for each setting (`1`, `2`, `majority`,
//! `all`), each as a ratio to the default (`1`) measured in the same round,
//! rounds repeated; 503s (`Write not acknowledged by enough replicas`) are
//! counted apart from errors.
//!
//! With `ack_replicas` above one a replica pushes every write to every
//! admitted peer at once and answers when enough of them hold it, so the
//! cost is one internal round trip per write (the pushes run in parallel)
//! plus the peers' work of applying pushes one by one instead of in gossip
//! batches.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterArgs;
use crate::compare::median;
use crate::load::PutWorkloadArgs;
use crate::noise::load_average_line;

#[derive(clap::Args, Clone, Debug)]
pub struct AcksArgs {
    #[command(flatten)]
    pub put: PutWorkloadArgs,
    /// Rounds of every setting; ratios are taken per round.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// The settings to measure, in order (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "1,2,majority,all")]
    pub settings: Vec<String>,
}

/// One setting in one round.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AckRun {
    pub setting: String,
    pub throughput: f64,
    pub put_p50_ms: f64,
    pub put_p99_ms: f64,
    /// Writes answered 503 (not acknowledged by enough replicas in time).
    pub unacknowledged: u64,
    pub errors: u64,
}

/// Medians over the rounds for one setting.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AckSummary {
    pub setting: String,
    pub throughput: f64,
    pub throughput_ratio: f64,
    pub put_p99_ms: f64,
    pub p99_ratio: f64,
    pub unacknowledged: u64,
    pub errors: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AcksResult {
    pub replicas: usize,
    pub sessions: usize,
    pub rounds: Vec<Vec<AckRun>>,
    pub summary: Vec<AckSummary>,
    /// Load average when the run ended (shared machine).
    pub loadavg: Option<String>,
}

async fn measure(
    args: &AcksArgs,
    cluster: &ClusterArgs,
    log_dir: &Path,
    setting: &str,
) -> Result<AckRun> {
    let name = format!("ack_replicas={setting}");
    let env = vec![("HEARSAY_ACK_REPLICAS".into(), setting.to_string())];
    let r = args
        .put
        .run_on_fresh_cluster(&name, cluster, log_dir, env)
        .await?;
    eprintln!(
        "acks: {name}: {:.0} PUT/s, p99 {:.2} ms, {} not acknowledged, {} errors",
        r.throughput, r.put.p99_ms, r.unavailable_503, r.errors
    );
    Ok(AckRun {
        setting: setting.to_string(),
        throughput: r.throughput,
        put_p50_ms: r.put.p50_ms,
        put_p99_ms: r.put.p99_ms,
        unacknowledged: r.unavailable_503,
        errors: r.errors,
    })
}

/// Per setting, medians over the rounds, and ratios to the first setting
/// taken within each round (so a drift of the machine between rounds does
/// not show up as a cost). Every round holds one run per setting, in
/// `settings` order.
fn summarise(settings: &[String], rounds: &[Vec<AckRun>]) -> Vec<AckSummary> {
    settings
        .iter()
        .enumerate()
        .map(|(i, setting)| {
            let of = |f: fn(&AckRun) -> f64| median(rounds.iter().map(|r| f(&r[i])).collect());
            let ratio = |f: fn(&AckRun) -> f64| {
                median(
                    rounds
                        .iter()
                        .filter(|r| f(&r[0]) > 0.0)
                        .map(|r| f(&r[i]) / f(&r[0]))
                        .collect(),
                )
            };
            AckSummary {
                setting: setting.clone(),
                throughput: of(|r| r.throughput),
                throughput_ratio: ratio(|r| r.throughput),
                put_p99_ms: of(|r| r.put_p99_ms),
                p99_ratio: ratio(|r| r.put_p99_ms),
                unacknowledged: rounds.iter().map(|r| r[i].unacknowledged).sum(),
                errors: rounds.iter().map(|r| r[i].errors).sum(),
            }
        })
        .collect()
}

pub async fn run(args: &AcksArgs, cluster: &ClusterArgs, log_dir: &Path) -> Result<AcksResult> {
    if !cluster.targets.is_empty() {
        bail!("acks needs a local cluster (it sets ack_replicas on every replica); drop --targets");
    }
    if args.settings.is_empty() {
        bail!("--settings names no setting");
    }
    let mut rounds = Vec::new();
    for round in 0..args.repeat.max(1) {
        // Alternate the order between rounds so that a slow drift of the
        // machine does not always fall on the same setting.
        let mut order: Vec<&String> = args.settings.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut runs = Vec::new();
        for setting in order {
            runs.push(measure(args, cluster, log_dir, setting).await?);
        }
        runs.sort_by_key(|r| args.settings.iter().position(|s| *s == r.setting));
        rounds.push(runs);
    }
    let summary = summarise(&args.settings, &rounds);
    Ok(AcksResult {
        replicas: cluster.replicas.max(1),
        sessions: args.put.sessions,
        rounds,
        summary,
        loadavg: load_average_line(),
    })
}

/// The Markdown summary of an `acks` run.
pub fn summary_md(r: &AcksResult) -> String {
    let baseline = r.summary.first().map_or("1", |s| s.setting.as_str());
    let mut s = format!(
        "## Acknowledged writes (`ack_replicas`)\n\n{} replicas, {} PUT sessions, {} rounds (medians; ratios to `{baseline}` in the same round); load average at the end: {}\n\n\
         | ack_replicas | PUT/s | ratio | PUT p99 ms | p99 ratio | not acknowledged (503) | errors |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        r.replicas,
        r.sessions,
        r.rounds.len(),
        r.loadavg.as_deref().unwrap_or("unknown")
    );
    for x in &r.summary {
        s.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            x.setting,
            x.throughput,
            x.throughput_ratio,
            x.put_p99_ms,
            x.p99_ratio,
            x.unacknowledged,
            x.errors
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(setting: &str, throughput: f64, p99: f64, unacknowledged: u64) -> AckRun {
        AckRun {
            setting: setting.into(),
            throughput,
            put_p50_ms: p99 / 4.0,
            put_p99_ms: p99,
            unacknowledged,
            errors: 0,
        }
    }

    #[test]
    fn ratios_are_taken_within_a_round_and_medians_across_rounds() {
        let settings = vec!["1".to_string(), "all".to_string()];
        // The machine is twice as fast in the second round: the ratio of
        // `all` to `1` is 0.5 in both, whatever the absolute numbers.
        let rounds = vec![
            vec![run("1", 1000.0, 2.0, 0), run("all", 500.0, 6.0, 1)],
            vec![run("1", 2000.0, 1.0, 0), run("all", 1000.0, 3.0, 2)],
            vec![run("1", 1500.0, 2.0, 0), run("all", 750.0, 6.0, 0)],
        ];
        let summary = summarise(&settings, &rounds);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].throughput_ratio, 1.0);
        assert_eq!(summary[1].setting, "all");
        assert_eq!(summary[1].throughput, 750.0);
        assert_eq!(summary[1].throughput_ratio, 0.5);
        assert_eq!(summary[1].p99_ratio, 3.0);
        assert_eq!(summary[1].unacknowledged, 3);
        let md = summary_md(&AcksResult {
            replicas: 3,
            sessions: 64,
            rounds,
            summary,
            loadavg: None,
        });
        assert!(
            md.contains("| all | 750 | 0.50 | 6.00 | 3.00 | 3 | 0 |"),
            "{md}"
        );
        assert!(md.contains("ratios to `1`"), "{md}");
    }
}
