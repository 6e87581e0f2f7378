//! The compose file as a user runs it: three healthy replicas on
//! 10.10.0.0/16, reachable on 127.0.0.1:8082–8084, replicating, and gone
//! after `down`.
//!
//! Runs in the same nextest group as the fault scenarios (one Docker test at
//! a time). It uses the compose file's fixed container names, so a cluster
//! already started from this file (or the assignment's scripts' `alice`,
//! `bob`, `carol`) must be stopped first.

use std::time::{Duration, Instant};

use hearsay_faults::client::{self, http_client, Endpoint, Session};
use hearsay_faults::docker::{preflight, run, DEFAULT_IMAGE};
use hearsay_faults::history::{Outcome, Recorder, Reply};
use serde_json::json;

const PROJECT: &str = "hearsay-compose-check";
const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");

/// `docker compose` (v2) where the plugin exists, else `docker-compose`.
async fn compose_program() -> Vec<&'static str> {
    if run("docker", &["compose", "version"]).await.is_ok() {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

async fn compose(program: &[&str], args: &[&str]) -> Result<String, String> {
    let mut full: Vec<&str> = program[1..].to_vec();
    full.extend_from_slice(&["-f", FILE, "-p", PROJECT]);
    full.extend_from_slice(args);
    run(program[0], &full).await.map_err(|e| e.to_string())
}

/// Takes the cluster down however the test ends.
struct Down(Vec<&'static str>);

impl Drop for Down {
    fn drop(&mut self) {
        let mut args: Vec<&str> = self.0[1..].to_vec();
        args.extend_from_slice(&["-f", FILE, "-p", PROJECT, "down", "-t", "5"]);
        let _ = std::process::Command::new(self.0[0])
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn health(container: &str) -> String {
    run(
        "docker",
        &["inspect", "--format", "{{.State.Health.Status}}", container],
    )
    .await
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_comes_up_healthy_and_replicates() {
    preflight(DEFAULT_IMAGE).await;
    let program = compose_program().await;
    let _down = Down(program.clone());
    if let Err(e) = compose(&program, &["up", "-d", "--no-build"]).await {
        panic!(
            "compose up failed: {e}\n(containers named alice/bob/carol from an earlier run \
             must be removed first: `docker-compose down` or `docker rm -f alice bob carol`)"
        );
    }

    let names = ["alice", "bob", "carol"];
    let endpoints: Vec<Endpoint> = names
        .iter()
        .zip([8082u16, 8083, 8084])
        .map(|(n, p)| Endpoint::new(n, p))
        .collect();
    let want = vec!["10.10.0.2:8090", "10.10.0.3:8090", "10.10.0.4:8090"];
    let http = http_client(Duration::from_secs(2));
    let start = Instant::now();
    let deadline = Duration::from_secs(40);

    // Every replica sees all three, and Docker's HEALTHCHECK (the binary's
    // own probe) reports healthy.
    loop {
        let mut problem = None;
        for (name, ep) in names.iter().zip(&endpoints) {
            match client::view(&http, ep).await {
                Ok(v) if v == want => {}
                other => problem = Some(format!("{name} /view: {other:?}")),
            }
            let h = health(name).await;
            if h != "healthy" {
                problem = Some(format!("{name} health: {h}"));
            }
        }
        match problem {
            None => break,
            Some(p) if start.elapsed() > deadline => panic!("compose cluster not ready: {p}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }

    // A write at alice is readable at carol by a client that passes its
    // metadata along (a 503 while gossip catches up is allowed; poll).
    let recorder = Recorder::new();
    let mut session = Session::new(0, http.clone(), recorder.clone());
    let put = session.put(&endpoints[0], "compose-key", json!("v1")).await;
    assert!(put.is_ok(), "PUT at alice: {put:?}");
    let read_deadline = Instant::now() + Duration::from_secs(10);
    for ep in &endpoints[1..] {
        loop {
            match session.get(ep, "compose-key").await {
                Outcome::Ok(Reply::Read(Some(v))) => {
                    assert_eq!(v, json!("v1"), "{} returned another value", ep.name);
                    break;
                }
                other if Instant::now() > read_deadline => {
                    panic!("{} never served the write: {other:?}", ep.name)
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    compose(&program, &["down", "-t", "5"])
        .await
        .unwrap_or_else(|e| panic!("compose down failed: {e}"));
    for name in names {
        assert!(
            run("docker", &["inspect", name]).await.is_err(),
            "{name} still exists after down"
        );
    }
}
