//! Smoke test: a short bench run produces a valid report. It asserts nothing
//! about speed (tests never do); only that the report is complete and parses.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_hearsay-bench");

fn run_bench(args: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(BENCH)
        .args(args)
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("running hearsay-bench");
    assert!(status.success(), "hearsay-bench {args:?} failed: {status}");
    for f in [
        "report.json",
        "summary.md",
        "load_summary.csv",
        "load_timeline.csv",
    ] {
        assert!(out.path().join(f).is_file(), "missing {f}");
    }
    let svgs = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "svg")
        })
        .count();
    assert_eq!(svgs, 2, "expected a latency and a throughput plot");
    serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap()
}

fn assert_valid_run(run: &Value, system: &str) {
    let r = &run[system];
    assert!(
        r["ops"].as_u64().unwrap() > 0,
        "{system}: no operations completed: {r}"
    );
    assert!(r["throughput"].as_f64().unwrap() > 0.0);
    for op in ["get", "put"] {
        let s = &r[op];
        assert!(s["p50_ms"].as_f64().unwrap() <= s["p99_ms"].as_f64().unwrap());
        assert!(s["p99_ms"].as_f64().unwrap() <= s["max_ms"].as_f64().unwrap());
    }
    assert!(!r["timeline"].as_array().unwrap().is_empty());
}

const SHORT: &[&str] = &[
    "--duration",
    "1s",
    "--warmup",
    "200ms",
    "--sessions",
    "4",
    "--keys",
    "50",
    "--read-ratio",
    "0.5",
];

#[test]
fn load_against_the_ceiling_writes_a_valid_report() {
    let mut args = vec!["load", "--system", "ceiling"];
    args.extend_from_slice(SHORT);
    let report = run_bench(&args);
    assert!(report["meta"]["date"].is_string());
    assert_valid_run(&report["load"][0]["runs"][0], "ceiling");
}

/// Runs only where the workspace built `hearsay` next to the bench binary
/// (as `cargo nextest run --workspace` does).
#[test]
fn load_against_a_local_cluster_writes_a_valid_report() {
    let hearsay = Path::new(BENCH).with_file_name("hearsay");
    if !hearsay.is_file() {
        eprintln!("skipped: {} not built", hearsay.display());
        return;
    }
    let mut args = vec!["load", "--system", "both", "--replicas", "3"];
    args.extend_from_slice(SHORT);
    let report = run_bench(&args);
    let run = &report["load"][0]["runs"][0];
    assert_valid_run(run, "ceiling");
    assert_valid_run(run, "hearsay");
    assert!(report["load"][0]["summary"]["throughput_ratio"]["mean"].is_number());
}
