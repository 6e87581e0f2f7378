//! Re-runs the causal checker on a history the suite saved
//! (`target/hearsay-faults/<scenario>-<seed>.json`, written on failure or
//! with `HEARSAY_FAULT_SAVE=1`), to study a failure without Docker:
//!
//! ```sh
//! cargo run -p hearsay-faults --example recheck -- target/hearsay-faults/random-42.json
//! ```

use std::time::Instant;

use hearsay_faults::checker::{count_by_kind, Checker};
use hearsay_faults::history::History;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: recheck <history.json>");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let history: History =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
    let (ok, fail, unknown) = history.outcome_counts();
    println!(
        "{} operations: ok={ok} fail={fail} unknown={unknown}",
        history.ops.len()
    );
    let started = Instant::now();
    let checker = Checker::new(&history);
    let built = started.elapsed();
    let violations = checker.violations();
    println!(
        "causal past built in {:.2}s, rules checked in {:.2}s",
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
    println!("violations by kind: {:?}", count_by_kind(&violations));
    for v in violations.iter().take(50) {
        println!("  {v}");
        println!("    {:?}", history.ops[v.op]);
    }
    if !violations.is_empty() {
        std::process::exit(1);
    }
}
