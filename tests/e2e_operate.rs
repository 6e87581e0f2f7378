//! Operating hearsay, end to end with real processes: the command-line
//! client and probe, `hearsay config`, readiness around state transfer,
//! Prometheus metrics, the cluster key, every configured limit, the
//! threads' scheduling class, and the OpenAPI document.

mod support;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use hearsay::transport::http::signing::signed_request_headers;
use serde_json::{json, Value};
use support::{wait_until, Body, Cluster};

/// Runs the `hearsay` binary with `args` (and no inherited HEARSAY_* vars).
async fn hearsay(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HEARSAY_") {
            command.env_remove(key);
        }
    }
    command.args(args).envs(env.iter().copied());
    tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the command finished in time")
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_client_keeps_causal_metadata_between_invocations() {
    let cluster = Cluster::builder(3)
        .env("HEARSAY_CAUSAL_WAIT_MS", 300)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.json");
    let file = file.to_str().unwrap();
    let client = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--metadata-file".into(), file.into()]);
        all
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hearsay(&refs, &[]).await
    };

    let put = run(client(&[
        "put",
        "greeting",
        "{\"hi\":[1,2]}",
        "--addr",
        cluster.addr(0),
    ]))
    .await;
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    assert!(stdout(&put).contains("created"));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(
        saved.is_object() && !saved.as_object().unwrap().is_empty(),
        "{saved}"
    );

    // Another replica, with the saved metadata: the write or a 503, never a 404.
    let got = run(client(&[
        "get",
        "greeting",
        "--addr",
        cluster.addr(2),
        "--output",
        "json",
    ]))
    .await;
    match got.status.code() {
        Some(0) => {
            let body: Value = serde_json::from_str(&stdout(&got)).unwrap();
            assert_eq!(body["value"], json!({"hi": [1, 2]}));
        }
        Some(4) => {} // replica 2 had not received it yet: 503, a distinct exit code
        other => panic!("unexpected exit {other:?}: {got:?}"),
    }

    let missing = run(client(&["get", "nothing-here", "--addr", cluster.addr(1)])).await;
    assert_eq!(missing.status.code(), Some(3), "404 exits 3: {missing:?}");

    let deleted = run(client(&["delete", "greeting", "--addr", cluster.addr(1)])).await;
    assert!(
        matches!(deleted.status.code(), Some(0) | Some(4)),
        "{deleted:?}"
    );

    let view = run(client(&["view", "--addr", cluster.addr(1)])).await;
    assert_eq!(view.status.code(), Some(0));
    let listed: Vec<String> = stdout(&view).lines().map(str::to_string).collect();
    assert_eq!(listed, cluster.sorted(&[0, 1, 2]));

    let unreachable = run(client(&["get", "greeting", "--addr", "127.0.0.1:1"])).await;
    assert_eq!(
        unreachable.status.code(),
        Some(5),
        "connection failure exits 5"
    );

    // Metadata naming writes no replica has: held, then 503 → exit 4.
    std::fs::write(file, r#"{"127.0.0.1:9@1": 99}"#).unwrap();
    let ahead = run(client(&["get", "greeting", "--addr", cluster.addr(0)])).await;
    assert_eq!(ahead.status.code(), Some(4), "{ahead:?}");

    let rejected = run(client(&[
        "put",
        &"k".repeat(51),
        "1",
        "--addr",
        cluster.addr(0),
        "--no-metadata",
    ]))
    .await;
    assert_eq!(rejected.status.code(), Some(6), "400 exits 6");
}

#[tokio::test]
async fn probe_and_config_subcommands() {
    let cluster = Cluster::start(1).await;
    let ok = hearsay(&["probe", "--addr", cluster.addr(0)], &[]).await;
    assert_eq!(ok.status.code(), Some(0));
    let ready = hearsay(&["probe", "--ready", "--addr", cluster.addr(0)], &[]).await;
    assert_eq!(ready.status.code(), Some(0));
    let down = hearsay(
        &["probe", "--addr", "127.0.0.1:1", "--timeout-ms", "300"],
        &[],
    )
    .await;
    assert_eq!(down.status.code(), Some(1));
    // The probe reads SOCKET_ADDRESS like the container does.
    let from_env = hearsay(&["probe"], &[("SOCKET_ADDRESS", cluster.addr(0))]).await;
    assert_eq!(from_env.status.code(), Some(0));

    let config = hearsay(
        &["config", "--set", "causal_wait_ms=42"],
        &[
            ("SOCKET_ADDRESS", "127.0.0.1:9000"),
            ("HEARSAY_GOSSIP_INTERVAL_MS", "250"),
        ],
    )
    .await;
    assert_eq!(config.status.code(), Some(0), "{config:?}");
    let text = stdout(&config);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("gossip_interval_ms").contains("250")
            && line("gossip_interval_ms").contains("HEARSAY_GOSSIP_INTERVAL_MS"),
        "{text}"
    );
    assert!(
        line("causal_wait_ms").contains("42")
            && line("causal_wait_ms").contains("command-line flag"),
        "{text}"
    );
    assert!(
        line("socket_address").contains("environment variable SOCKET_ADDRESS"),
        "{text}"
    );
    assert!(line("dead_after_ms").contains("built-in default"), "{text}");

    let bad = hearsay(
        &["config"],
        &[
            ("SOCKET_ADDRESS", "127.0.0.1:9000"),
            ("HEARSAY_DEAD_AFTER_MS", "soon"),
        ],
    )
    .await;
    assert_ne!(bad.status.code(), Some(0));
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(
        error.contains("dead_after_ms") && error.contains("HEARSAY_DEAD_AFTER_MS"),
        "{error}"
    );
}

#[tokio::test]
async fn an_out_of_range_duration_stops_start_up() {
    // Before settings had ranges, this value reached `Instant + Duration`
    // in the gossip timer and panicked there, long after start-up.
    let served = hearsay(
        &["serve"],
        &[
            ("SOCKET_ADDRESS", "127.0.0.1:9000"),
            ("HEARSAY_GOSSIP_INTERVAL_MS", "18446744073709551615"),
        ],
    )
    .await;
    assert_ne!(served.status.code(), Some(0), "{served:?}");
    let error = String::from_utf8_lossy(&served.stderr);
    assert!(
        error.contains("gossip_interval_ms")
            && error.contains("18446744073709551615")
            && error.contains("HEARSAY_GOSSIP_INTERVAL_MS")
            && error.contains("1..=3600000"),
        "{error}"
    );
}

#[tokio::test]
async fn readiness_waits_for_state_transfer() {
    // Replica 1's address is held by a listener that accepts and never
    // answers, so replica 0's announcement and transfer hang until timeout.
    let mut cluster = Cluster::builder(2)
        .defer(0)
        .defer(1)
        .set("rpc_timeout_ms", 2000)
        .start()
        .await;
    let silent = TcpListener::bind(cluster.addr(1)).unwrap();
    cluster.spawn(0);
    let http = cluster.http.clone();
    let addr = cluster.addr(0).to_string();
    let (not_ready, _) = support::wait_for(Duration::from_secs(10), "a 503 from /ready", || {
        let http = http.clone();
        let addr = addr.clone();
        async move {
            let reply = http
                .try_send("GET", &addr, "/ready", Body::None)
                .await
                .ok()?;
            (reply.status == 503).then_some(reply)
        }
    })
    .await;
    assert_eq!(not_ready.json["ready"], json!(false));
    assert!(
        not_ready.json["reason"]
            .as_str()
            .unwrap()
            .contains("state transfer"),
        "{not_ready:?}"
    );
    // Key-value requests are held meanwhile (not answered from empty state).
    let held = http.send("GET", &addr, "/kvs/x", Body::None).await;
    assert!(held.status == 503 || held.status == 404, "{held:?}");
    // Once the silent peer times out, the replica serves on its own.
    wait_until(
        Duration::from_secs(10),
        "ready after the peer timed out",
        || {
            let http = http.clone();
            let addr = addr.clone();
            async move {
                http.try_send("GET", &addr, "/ready", Body::None)
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
        },
    )
    .await;
    drop(silent);
}

/// Parses Prometheus text: `name{labels} value` lines, comments skipped.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

fn sum(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let cluster = Cluster::start(2).await;
    let http = &cluster.http;
    let scrape = || async {
        let reply = http
            .send("GET", cluster.addr(0), "/metrics", Body::None)
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.content_type.starts_with("text/plain"),
            "{}",
            reply.content_type
        );
        parse_prometheus(&reply.text)
    };
    let before = scrape().await;
    let mut session = cluster.session();
    for i in 0..10 {
        session
            .put(cluster.addr(0), &format!("m{i}"), json!(i))
            .await
            .expect(201, None);
    }
    wait_until(
        Duration::from_secs(5),
        "gossip and key gauges to move",
        || async {
            let after = scrape().await;
            sum(&after, "hearsay_keys") >= 10.0
                && sum(&after, "hearsay_gossip_rounds_total")
                    > sum(&before, "hearsay_gossip_rounds_total")
                && sum(&after, "hearsay_internal_bytes_total")
                    > sum(&before, "hearsay_internal_bytes_total")
        },
    )
    .await;
    let after = scrape().await;
    let kvs_puts = |s: &[(String, f64)]| {
        sum(
            s,
            "hearsay_http_requests_total{endpoint=\"kvs\",method=\"PUT\",status=\"201\"}",
        )
    };
    assert!(kvs_puts(&after) - kvs_puts(&before) >= 10.0, "{after:?}");
    assert!(sum(&after, "hearsay_http_request_duration_seconds_count") > 0.0);
    assert!(after
        .iter()
        .any(|(s, v)| s.starts_with("hearsay_members{") && s.contains("alive") && *v >= 2.0));
}

#[tokio::test]
async fn the_cluster_key_guards_internal_endpoints() {
    const KEY: &str = "s3cret-s3cret-s3cret";
    let cluster = Cluster::builder(2)
        .env("HEARSAY_CLUSTER_KEY", KEY)
        .start()
        .await;
    let http = &cluster.http;
    // Replicas that share the key replicate.
    let mut session = cluster.session();
    session
        .put(cluster.addr(0), "guarded", json!("yes"))
        .await
        .expect(201, None);
    session
        .get_patiently(cluster.addr(1), "guarded", Duration::from_secs(5))
        .await
        .expect(200, None);
    // Anyone else is refused, the old clear-text header included.
    let refused = http
        .send(
            "POST",
            cluster.addr(0),
            "/internal/heartbeat",
            Body::typed(vec![0x80], "application/msgpack"),
        )
        .await;
    refused.expect(401, Some("Internal message is not signed"));
    let clear = reqwest::Client::new()
        .post(format!("http://{}/internal/heartbeat", cluster.addr(0)))
        .header("x-hearsay-cluster-key", KEY)
        .body(vec![0xc1])
        .send()
        .await
        .unwrap();
    assert_eq!(
        clear.status(),
        401,
        "the key in clear is no longer accepted"
    );
    // Signed with the key, a garbage message is a 400, not a 401.
    let keyring = hearsay::keyring::Keyring::new(&[KEY]).unwrap();
    let body = vec![0xc1];
    let (headers, _) = signed_request_headers(&keyring, "/internal/heartbeat", 2, &body);
    let signed = reqwest::Client::new()
        .post(format!("http://{}/internal/heartbeat", cluster.addr(0)))
        .headers(headers)
        .header("x-hearsay-protocol", "2")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed.status(),
        400,
        "with the key, a garbage message is a 400, not a 401"
    );
    let refusals = http
        .metric(cluster.addr(0), "hearsay_internal_refused_total")
        .await;
    assert!(refusals.unwrap_or(0.0) >= 2.0);
}

#[tokio::test]
async fn every_limit_answers_clearly() {
    let cluster = Cluster::builder(1)
        .set("max_body_bytes", 4096)
        .set("max_value_bytes", 1024)
        .set("max_message_bytes", 2048)
        .start()
        .await;
    let http = &cluster.http;
    let a = cluster.addr(0);
    let big_value = json!({ "value": "v".repeat(2000), "causal-metadata": null });
    http.kv("PUT", a, "k", Body::Json(big_value))
        .await
        .expect_some_error(413);
    let big_body = format!(r#"{{"value": 1, "pad": "{}"}}"#, "p".repeat(5000));
    http.kv("PUT", a, "k", Body::raw(big_body))
        .await
        .expect_some_error(413);
    http.kv("PUT", a, &"k".repeat(51), Body::Json(json!({"value": 1})))
        .await
        .expect(400, Some("Key is too long"));
    let internal = reqwest::Client::new()
        .post(format!("http://{a}/internal/push"))
        .body(vec![0u8; 64 * 1024 + 1024 + 2048 + 10])
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 413, "internal messages are bounded too");
    // Nothing was stored by any of that.
    http.kv("GET", a, "k", Body::None)
        .await
        .expect(404, Some("Key does not exist"));

    // Metadata with too many entries is refused rather than processed.
    let wide: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("127.0.0.1:{i}@1"), json!(1)))
        .collect();
    let other = Cluster::builder(1)
        .set("request_timeout_ms", 300)
        .set("causal_wait_ms", 5000)
        .start()
        .await;
    let b = other.addr(0);
    other
        .http
        .kv(
            "GET",
            b,
            "k",
            Body::Json(json!({ "causal-metadata": wide })),
        )
        .await
        .expect_some_error(400);
    // The request timeout bounds a request held for causal dependencies.
    let started = Instant::now();
    let reply = other
        .http
        .kv(
            "GET",
            b,
            "k",
            Body::Json(json!({"causal-metadata": {"127.0.0.1:9@1": 5}})),
        )
        .await;
    reply.expect(503, Some("Request timed out"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let cluster = Cluster::start(1).await;
    let http = &cluster.http;
    let a = cluster.addr(0);
    let doc = http.send("GET", a, "/openapi.json", Body::None).await;
    assert_eq!(doc.status, 200);
    let paths = doc.json["paths"].as_object().expect("paths");
    for required in [
        "/view",
        "/kvs/{key}",
        "/health",
        "/ready",
        "/metrics",
        "/members",
    ] {
        assert!(
            paths.contains_key(required),
            "{required} missing from the document"
        );
    }
    // Every documented operation is routed and answers a documented status.
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let documented: Vec<u16> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let concrete = path.replace("{key}", "openapi-probe");
            let body = match (path.as_str(), method.as_str()) {
                ("/view", "put" | "delete") => Body::Json(json!({"socket-address": "127.0.0.1:1"})),
                ("/kvs/{key}", "put") => Body::Json(json!({"value": 1, "causal-metadata": null})),
                _ => Body::None,
            };
            let reply = http.send(&method.to_uppercase(), a, &concrete, body).await;
            assert!(
                documented.contains(&reply.status),
                "{method} {path} answered {} (documented: {documented:?})",
                reply.status
            );
        }
    }
}

/// `server::serve` runs until the future it is given resolves, whatever
/// that future is, and then still leaves the cluster gracefully: its peer
/// sees it `left` (not `dead`), and it stops answering.
#[tokio::test]
async fn serve_runs_until_its_shutdown_future_resolves_then_leaves() {
    let cluster = Cluster::builder(2).defer(1).start().await;
    let (peer, own) = (cluster.addr(0).to_string(), cluster.addr(1).to_string());
    let config = hearsay::config::Config::for_address(&own, &cluster.addrs());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(hearsay::server::serve(config, async {
        let _ = stopped.await;
    }));
    let state_at_peer = || async {
        let member = cluster.http.member(&peer, &own).await?;
        member["state"].as_str().map(str::to_string)
    };
    wait_until(
        support::READY_WITHIN,
        "the two replicas have heard from each other",
        || async {
            // A member listed in a VIEW is reported alive before it is
            // heard from: wait for its incarnation, and for the peer in its
            // own view (it says goodbye to the peers in its view).
            let heard = cluster
                .http
                .member(&peer, &own)
                .await
                .is_some_and(|m| m["state"] == "alive" && m["incarnation"].is_u64());
            heard && cluster.http.view(&own).await.contains(&peer)
        },
    )
    .await;

    stop.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returned once its shutdown future resolved");
    finished.unwrap().expect("serve returned Ok");
    wait_until(support::READY_WITHIN, "the peer sees it left", || async {
        state_at_peer().await.as_deref() == Some("left")
    })
    .await;
    let after = cluster
        .http
        .try_send("GET", &own, "/health", Body::None)
        .await;
    assert!(
        after.is_err(),
        "still answering after shutdown: {:?}",
        after.map(|reply| reply.status)
    );
}

/// Ports past 65535 are a usage error, said as such (the binary's exit code
/// 2 for errors), not an arithmetic overflow: nothing is started.
#[tokio::test]
async fn the_cluster_subcommand_refuses_ports_past_the_last_one() {
    let output = hearsay(&["cluster", "-n", "3", "--base-port", "65534"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("65535") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_cluster_subcommand_runs_replicas_until_interrupted() {
    // Two consecutive free ports (the subcommand takes a base port).
    let base = (0..50)
        .map(|_| support::free_ports(1)[0])
        .find(|&p| TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("two consecutive free ports");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["cluster", "-n", "2", "--base-port", &base.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let banner = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the cluster came up in time")
        .unwrap()
        .unwrap();
    let (a, b) = (
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 1),
    );
    assert!(
        banner.contains("2 replicas up") && banner.contains(&a) && banner.contains(&b),
        "{banner}"
    );
    let http = support::Http::default();
    let mut session = support::Session::new(http.clone());
    session
        .put(&a, "from-cluster", json!(1))
        .await
        .expect(201, None);
    session
        .get_patiently(&b, "from-cluster", Duration::from_secs(5))
        .await
        .expect(200, None);
    // Ctrl-C stops every replica and exits cleanly.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("cluster exited in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
    wait_until(Duration::from_secs(5), "both replicas to be gone", || {
        let (http, a, b) = (http.clone(), a.clone(), b.clone());
        async move {
            http.try_send("GET", &a, "/health", Body::None)
                .await
                .is_err()
                && http
                    .try_send("GET", &b, "/health", Body::None)
                    .await
                    .is_err()
        }
    })
    .await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_wait_their_turn() {
    let cluster = Cluster::builder(1)
        .set("max_connections", 1)
        .set("causal_wait_ms", 800)
        .start()
        .await;
    let a = cluster.addr(0).to_string();
    let http = cluster.http.clone();
    // The first request is held for its whole causal wait, keeping the one slot.
    let held = {
        let (http, a) = (http.clone(), a.clone());
        tokio::spawn(async move {
            let body = Body::Json(json!({"causal-metadata": {"127.0.0.1:9@1": 1}}));
            http.kv("GET", &a, "held", body).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let second = http.kv("GET", &a, "other", Body::None).await;
    let waited = started.elapsed();
    second.expect(404, Some("Key does not exist"));
    held.await.unwrap().expect(503, None);
    assert!(
        waited >= Duration::from_millis(500),
        "the second request did not queue: {waited:?}"
    );
}

#[tokio::test]
async fn waiting_for_a_slot_counts_against_the_request_timeout() {
    // One slot; every request is held for its causal dependencies until the
    // time bound ends it. Three arrive 50 ms apart. If waiting for the slot
    // were not bounded, the third would wait for two full timeouts before
    // its own began (~1.5 s); bounded, it is answered by its own deadline.
    let cluster = Cluster::builder(1)
        .set("max_connections", 1)
        .set("request_timeout_ms", 500)
        .set("causal_wait_ms", 5000)
        .start()
        .await;
    let a = cluster.addr(0).to_string();
    let mut held = Vec::new();
    for n in 0..3u64 {
        let (http, a) = (cluster.http.clone(), a.clone());
        held.push(tokio::spawn(async move {
            let started = Instant::now();
            let body = Body::Json(json!({"causal-metadata": {"127.0.0.1:9@1": 1}}));
            let reply = http.kv("GET", &a, &format!("k{n}"), body).await;
            (reply, started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, task) in held.into_iter().enumerate() {
        let (reply, took) = task.await.unwrap();
        reply.expect(503, Some("Request timed out"));
        assert!(
            took < Duration::from_millis(1000),
            "request {n} took {took:?}: the wait for a slot was not bounded"
        );
    }
}

/// The scheduling policy (`SCHED_*`) of every thread of process `pid`:
/// field 41 of `/proc/<pid>/task/<tid>/stat`, counted after the command
/// name's closing parenthesis (the name itself may hold spaces).
#[cfg(target_os = "linux")]
fn thread_policies(pid: libc::pid_t) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the replica is running");
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
            // `after_name` starts at field 3 (the state).
            after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap()
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn replica_threads_run_in_the_configured_scheduling_class() {
    let batch = Cluster::start(1).await;
    let normal = Cluster::builder(1)
        .env("HEARSAY_CPU_SCHEDULING", "normal")
        .start()
        .await;
    let batch_threads = thread_policies(batch.pid(0));
    // The main thread and the runtime's workers at least.
    assert!(batch_threads.len() >= 2, "{batch_threads:?}");
    assert!(
        batch_threads.iter().all(|&p| p == libc::SCHED_BATCH),
        "by default every thread is SCHED_BATCH: {batch_threads:?}"
    );
    let normal_threads = thread_policies(normal.pid(0));
    assert!(
        normal_threads.iter().all(|&p| p == libc::SCHED_OTHER),
        "cpu_scheduling = normal keeps the kernel's default: {normal_threads:?}"
    );
}
