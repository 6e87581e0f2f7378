//! The signed internal plane, end to end with real processes: key rotation
//! through a keyring file and SIGHUP, moving a cluster from no key to a
//! required key with rolling restarts, what a stranger receives, and a
//! rolling protocol upgrade — each under continuous client load that must
//! see no failed request.
//!
//! The load generator ([`Load`]) runs two clients, each writing its own keys
//! and reading them back at another replica with its causal metadata, so a
//! replica that cannot reach its peers shows up as a 503 (or a stale value).
//! During rolling restarts it sends each request only to a replica that is
//! up: a replica is marked down (waiting for requests in flight to it to
//! finish) before it is stopped, and up again once `GET /ready` answers 200
//! after its restart. No request is retried; every failure counts.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearsay::keyring::{key_id, Keyring};
use hearsay::transport::http::signing::signed_request_headers;
use serde_json::{json, Value};
use support::{kvs_path, wait_until, Body, Cluster, Http};
use tokio::sync::RwLock;

const KEY1: &str = "first-cluster-key-0123456789";
const KEY2: &str = "second-cluster-key-9876543210";
/// The longest any step below may take to be seen by every replica.
const STEP_WITHIN: Duration = Duration::from_secs(20);
/// Upper bound on the operations of one load generator (they stop earlier).
const MAX_OPS: u64 = 50_000;

/// Which replicas the load generator may send requests to.
type Up = Arc<RwLock<Vec<bool>>>;

/// Continuous client load against every replica that is up.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<u64>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addrs: Vec<String>, up: Up) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..2)
            .map(|worker| {
                let (addrs, up, stop, failures) =
                    (addrs.clone(), up.clone(), stop.clone(), failures.clone());
                tokio::spawn(async move { run_client(worker, addrs, up, stop, failures).await })
            })
            .collect();
        Load {
            stop,
            workers,
            failures,
        }
    }

    /// Waits until the clients have done at least `ops` operations more.
    async fn progress(&self, done: &Arc<std::sync::atomic::AtomicU64>, ops: u64) {
        let start = done.load(Ordering::Relaxed);
        wait_until(STEP_WITHIN, "the load generator makes progress", || {
            let done = done.clone();
            async move { done.load(Ordering::Relaxed) >= start + ops }
        })
        .await;
    }

    /// Stops the clients; returns how many operations succeeded and every
    /// failure.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ok = 0;
        for worker in self.workers {
            ok += worker.await.expect("a load worker panicked");
        }
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

static DONE: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU64>> = std::sync::OnceLock::new();

fn done() -> Arc<std::sync::atomic::AtomicU64> {
    DONE.get_or_init(Default::default).clone()
}

/// One client: PUT `w<worker>-<n % 8>` at one replica, then GET it back at
/// the next replica that is up, carrying causal metadata throughout. Returns
/// the number of successful operations.
async fn run_client(
    worker: usize,
    addrs: Vec<String>,
    up: Up,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> u64 {
    let http = Http::default();
    let mut metadata = Value::Null;
    let mut ok = 0;
    let mut next = worker;
    let fail = |what: String| failures.lock().unwrap().push(what);
    for n in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{worker}-{}", n % 8);
        let guard = up.read().await;
        let mut pick = || {
            for _ in 0..addrs.len() {
                next = (next + 1) % addrs.len();
                if guard[next] {
                    return addrs[next].clone();
                }
            }
            panic!("no replica is up");
        };
        let (writer, reader) = (pick(), pick());
        let body = json!({"value": n, "causal-metadata": metadata});
        match http
            .try_send("PUT", &writer, &kvs_path(&key), Body::Json(body))
            .await
        {
            Ok(reply) if reply.status == 200 || reply.status == 201 => {
                metadata = reply.metadata().clone();
                ok += 1;
            }
            Ok(reply) => fail(format!(
                "PUT {key} at {writer}: {} {}",
                reply.status, reply.text
            )),
            Err(e) => fail(e),
        }
        let body = json!({"causal-metadata": metadata});
        match http
            .try_send("GET", &reader, &kvs_path(&key), Body::Json(body))
            .await
        {
            Ok(reply) if reply.status == 200 && reply.value() == &json!(n) => {
                metadata = reply.metadata().clone();
                ok += 1;
            }
            Ok(reply) => fail(format!(
                "GET {key} at {reader} (wrote {n}): {} {}",
                reply.status, reply.text
            )),
            Err(e) => fail(e),
        }
        drop(guard);
        done().fetch_add(2, Ordering::Relaxed);
        // Pacing, not waiting for anything: the machine is shared.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ok
}

/// `GET /keyring` of `addr`.
async fn keyring(http: &Http, addr: &str) -> Value {
    http.send("GET", addr, "/keyring", Body::None).await.json
}

/// Whether every replica's `GET /keyring` reports `own` as its key ids and
/// every other member as announcing exactly `announced`.
/// Waits until replicas 0 and 1 use protocol `version` with `member`.
async fn others_talk_version(cluster: &Cluster, member: &str, version: u32) {
    wait_until(
        STEP_WITHIN,
        format!("replicas 0 and 1 talk version {version} to {member}"),
        || async {
            for i in 0..2 {
                let answer = keyring(&cluster.http, cluster.addr(i)).await;
                let protocol = answer["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["address"] == json!(member))
                    .map(|m| m["protocol"].clone());
                if protocol != Some(json!(version)) {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

async fn keyrings_are(cluster: &Cluster, own: &[String], announced: &[String]) -> bool {
    for addr in cluster.addrs() {
        let answer = keyring(&cluster.http, &addr).await;
        let ids: Vec<String> = answer["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect();
        if ids != own {
            return false;
        }
        let members = answer["members"].as_array().unwrap();
        if members.len() != cluster.len() - 1 {
            return false;
        }
        for member in members {
            if member["announced"] != json!(announced) {
                return false;
            }
        }
    }
    true
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("writing a keyring file");
}

/// Sends a garbage internal request to `addr`, signed with `key`.
async fn signed_garbage(addr: &str, key: &str) -> reqwest::Response {
    let keyring = Keyring::new(&[key]).unwrap();
    let body = vec![0xc1];
    let (headers, _) = signed_request_headers(&keyring, "/internal/heartbeat", 2, &body);
    reqwest::Client::new()
        .post(format!("http://{addr}/internal/heartbeat"))
        .headers(headers)
        .header("x-hearsay-protocol", "2")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Rotates key1 → key2 in three steps (install everywhere, use everywhere,
/// remove everywhere), each a keyring file rewrite and a SIGHUP per replica,
/// waiting on `GET /keyring` between steps, under load: no client request
/// fails, and afterwards key1 is refused.
#[tokio::test]
async fn a_key_rotates_through_sighup_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("keyring-{i}")))
        .collect();
    for file in &files {
        write(file, &format!("# cluster keys, primary first\n{KEY1}\n"));
    }
    let mut cluster = Cluster::builder(3).defer(0).defer(1).defer(2).start().await;
    for (i, file) in files.iter().enumerate() {
        cluster.set_for(i, "keyring_file", file.display());
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let (id1, id2) = (key_id(KEY1.as_bytes()), key_id(KEY2.as_bytes()));
    let first = vec![id1.clone()];
    wait_until(STEP_WITHIN, "every replica announces key1", || {
        keyrings_are(&cluster, &first, &first)
    })
    .await;
    let up: Up = Arc::new(RwLock::new(vec![true; 3]));
    let load = Load::start(cluster.addrs(), up);
    let done = done();
    load.progress(&done, 20).await;

    let steps = [
        (format!("{KEY1}\n{KEY2}\n"), vec![id1.clone(), id2.clone()]),
        (format!("{KEY2}\n{KEY1}\n"), vec![id2.clone(), id1.clone()]),
        (format!("{KEY2}\n"), vec![id2.clone()]),
    ];
    for (step, (text, ids)) in steps.iter().enumerate() {
        for (i, file) in files.iter().enumerate() {
            write(file, text);
            cluster.signal(i, libc::SIGHUP);
            load.progress(&done, 4).await;
        }
        wait_until(
            STEP_WITHIN,
            format!("step {} reaches every replica", step + 1),
            || keyrings_are(&cluster, ids, ids),
        )
        .await;
        let primary = &keyring(&cluster.http, cluster.addr(0)).await["keys"][0];
        assert_eq!(primary["id"], json!(ids[0]), "{primary}");
        assert_eq!(primary["primary"], json!(true), "{primary}");
        if step == 1 {
            // An invalid file is refused whole: keys unchanged, counted.
            write(&files[0], &format!("{KEY2}\nshort\n"));
            cluster.signal(0, libc::SIGHUP);
            wait_until(STEP_WITHIN, "the bad keyring file is refused", || async {
                cluster
                    .http
                    .metric(
                        cluster.addr(0),
                        "hearsay_keyring_reloads_total{outcome=\"refused\"}",
                    )
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
            })
            .await;
            assert!(keyrings_are(&cluster, ids, ids).await);
        }
    }
    load.progress(&done, 20).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok >= 40, "only {ok} requests");

    // The old key no longer opens anything; the new one does.
    let old = signed_garbage(cluster.addr(1), KEY1).await;
    assert_eq!(old.status(), 401);
    let text = old.text().await.unwrap();
    assert!(text.contains("key this replica does not hold"), "{text}");
    assert_eq!(signed_garbage(cluster.addr(1), KEY2).await.status(), 400);
    let unknown = cluster
        .http
        .metric(
            cluster.addr(1),
            "hearsay_internal_auth_failures_total{direction=\"request\",key_id=\"unknown\",reason=\"unknown_key\"}",
        )
        .await;
    assert!(unknown.unwrap_or(0.0) >= 1.0, "{unknown:?}");
}

/// Restarts replica `index` with `settings`, keeping the load off it while
/// it is down or not yet ready.
async fn restart(cluster: &mut Cluster, up: &Up, index: usize, settings: &[(&str, &str)]) {
    up.write().await[index] = false;
    cluster.terminate(index, Duration::from_secs(15)).await;
    for (key, value) in settings {
        cluster.set_for(index, key, value);
    }
    cluster.start_replica(index).await;
    up.write().await[index] = true;
}

/// No key → key in transitional mode (rolling restarts) → required (rolling
/// restarts), under load, without a failed request; then unsigned requests
/// are refused.
#[tokio::test]
async fn a_cluster_moves_onto_a_key_through_transitional_mode() {
    let mut cluster = Cluster::start(3).await;
    let up: Up = Arc::new(RwLock::new(vec![true; 3]));
    let load = Load::start(cluster.addrs(), up.clone());
    let done = done();
    load.progress(&done, 20).await;
    for mode in ["transitional", "required"] {
        for i in 0..3 {
            restart(
                &mut cluster,
                &up,
                i,
                &[("cluster_key", KEY1), ("internal_auth", mode)],
            )
            .await;
            load.progress(&done, 10).await;
        }
        if mode == "transitional" {
            // Replica 0 took unsigned requests while 1 and 2 had no key.
            let unsigned = cluster
                .http
                .metric(
                    cluster.addr(0),
                    "hearsay_internal_unsigned_accepted_total{direction=\"request\"}",
                )
                .await;
            assert!(unsigned.unwrap_or(0.0) >= 1.0, "{unsigned:?}");
        }
    }
    let only = vec![key_id(KEY1.as_bytes())];
    wait_until(STEP_WITHIN, "every replica holds and sees key1", || {
        keyrings_are(&cluster, &only, &only)
    })
    .await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok >= 40, "only {ok} requests");
    for addr in cluster.addrs() {
        assert_eq!(
            keyring(&cluster.http, &addr).await["internal_auth"],
            "required"
        );
        cluster
            .http
            .send(
                "POST",
                &addr,
                "/internal/heartbeat",
                Body::typed(vec![0x80], "application/msgpack"),
            )
            .await
            .expect(401, Some("Internal message is not signed"));
    }
}

/// What a raw listener received: one entry per request.
#[derive(Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// Accepts connections on `listener` until `stop`, reading each request and
/// answering it `200` with an empty body, alternately unsigned and with
/// `replayed` (the signature headers of another, genuine answer).
fn eavesdrop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    replayed: String,
) -> Arc<Mutex<Vec<Received>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let (mut stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            // One request per connection: read the head, then the body.
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(end + 4);
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) if bytes.len() < 1 << 20 => bytes.extend_from_slice(&buf[..n]),
                    Ok(_) => break None,
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while bytes.len() < head_end + length.min(1 << 20) {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                }
            }
            let body = bytes[head_end..].to_vec();
            let mut log = log.lock().unwrap();
            let signature = if log.len() % 2 == 1 {
                replayed.as_str()
            } else {
                ""
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n{signature}\r\n"
            );
            let _ = stream.write_all(answer.as_bytes());
            log.push(Received { head, body });
        }
    });
    received
}

/// A stranger added to a keyed replica's view gets signed, empty probes and
/// nothing else — even when it answers them 200, unsigned or with a genuine
/// answer to another probe replayed (an answer is bound to its request).
#[tokio::test]
async fn a_stranger_receives_only_probes() {
    let cluster = Cluster::builder(1).set("cluster_key", KEY1).start().await;
    // A genuine signed answer, to a probe of our own.
    let ring = Keyring::new(&[KEY1]).unwrap();
    let (headers, _) = signed_request_headers(&ring, "/internal/probe", 2, &[]);
    let genuine = reqwest::Client::new()
        .post(format!("http://{}/internal/probe", cluster.addr(0)))
        .headers(headers)
        .header("x-hearsay-protocol", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), 200);
    let replayed: String = genuine
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-hearsay-"))
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect();
    assert!(replayed.contains("x-hearsay-signature"), "{replayed}");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stranger = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let received = eavesdrop(listener, stop.clone(), replayed);
    cluster
        .http
        .change_view("PUT", cluster.addr(0), &stranger)
        .await
        .expect(201, None);
    cluster
        .session()
        .put(cluster.addr(0), "secret", json!("value"))
        .await
        .expect(201, None);
    // Several probe intervals' worth of messages.
    wait_until(
        STEP_WITHIN,
        "the stranger has been contacted 5 times",
        || async { received.lock().unwrap().len() >= 5 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let received = std::mem::take(&mut *received.lock().unwrap());
    for message in &received {
        let first = message.head.lines().next().unwrap_or("");
        assert_eq!(first, "POST /internal/probe HTTP/1.1", "{message:?}");
        assert!(message.body.is_empty(), "{message:?}");
        let head = message.head.to_ascii_lowercase();
        assert!(head.contains("x-hearsay-signature:"), "{message:?}");
        assert!(!head.contains("x-hearsay-cluster-key"), "{message:?}");
        assert!(
            !message.head.contains(KEY1),
            "the key travelled: {message:?}"
        );
    }
    let answer = keyring(&cluster.http, cluster.addr(0)).await;
    let member = &answer["members"].as_array().unwrap()[0];
    assert_eq!(member["address"], json!(stranger));
    assert_eq!(member["trusted"], json!(false));
    let id1 = key_id(KEY1.as_bytes());
    for (key_id, reason) in [("unknown", "unsigned"), (id1.as_str(), "bad_signature")] {
        let name = format!(
            "hearsay_internal_auth_failures_total{{direction=\"answer\",key_id=\"{key_id}\",reason=\"{reason}\"}}"
        );
        let count = cluster.http.metric(cluster.addr(0), &name).await;
        assert!(count.unwrap_or(0.0) >= 1.0, "{name}: {count:?}");
    }
}

/// Two replicas at protocol 2 and one at 1 (a release from before
/// versioning) serve under load; the old one is restarted at 2 and every
/// replica then speaks 2 with it; no request fails. A version nobody
/// speaks is answered 400 naming the versions spoken.
#[tokio::test]
async fn a_mixed_version_cluster_upgrades_without_a_failed_request() {
    let mut cluster = Cluster::builder(3).defer(2).start().await;
    cluster.set_for(2, "protocol_version", 1);
    cluster.start_replica(2).await;
    let old = cluster.addr(2).to_string();
    others_talk_version(&cluster, &old, 1).await;
    let up: Up = Arc::new(RwLock::new(vec![true; 3]));
    let load = Load::start(cluster.addrs(), up.clone());
    let done = done();
    load.progress(&done, 30).await;
    restart(&mut cluster, &up, 2, &[("protocol_version", "2")]).await;
    others_talk_version(&cluster, &old, 2).await;
    load.progress(&done, 30).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok >= 60, "only {ok} requests");
    let future = reqwest::Client::new()
        .post(format!("http://{}/internal/heartbeat", cluster.addr(0)))
        .header("x-hearsay-protocol", "3")
        .body(vec![0x80])
        .send()
        .await
        .unwrap();
    assert_eq!(future.status(), 400);
    assert_eq!(future.headers()["x-hearsay-protocols"], "1,2");
    let text = future.text().await.unwrap();
    assert!(text.contains("this replica speaks 1, 2"), "{text}");
}

/// Sends `body` to `/internal/heartbeat` at `addr` with these headers.
async fn post_internal(
    addr: &str,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
) -> (u16, String) {
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/internal/heartbeat"))
        .headers(headers)
        .header("x-hearsay-protocol", "2")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

/// A signed request is accepted once; its exact replay, a stale one, a
/// tampered one and one with partial signature headers are refused, each
/// naming why, and counted by reason.
#[tokio::test]
async fn replayed_stale_and_tampered_requests_are_refused() {
    use hearsay::transport::http::signing::{self, RequestParts};
    let cluster = Cluster::builder(1).set("cluster_key", KEY1).start().await;
    let addr = cluster.addr(0);
    let keyring = Keyring::new(&[KEY1]).unwrap();
    let body = vec![0xc1];
    let (headers, _) = signed_request_headers(&keyring, "/internal/heartbeat", 2, &body);
    // Garbage, but authentic: the decoder refuses it, not the signature check.
    assert_eq!(
        post_internal(addr, headers.clone(), body.clone()).await.0,
        400
    );
    let (status, text) = post_internal(addr, headers.clone(), body.clone()).await;
    assert_eq!((status, text.contains("replay")), (401, true), "{text}");
    let (status, text) = post_internal(addr, headers.clone(), vec![0xc0]).await;
    assert_eq!(
        (status, text.contains("does not verify")),
        (401, true),
        "{text}"
    );

    let key = keyring.primary();
    let stale = RequestParts {
        method: "POST",
        path: "/internal/heartbeat",
        protocol: 2,
        timestamp: hearsay::node::wall_ms() - 60_000,
        nonce: 1,
        keys: key.id(),
        body: &body,
    };
    let mut old = reqwest::header::HeaderMap::new();
    let mac = signing::sign_request(key, &stale);
    signing::put_headers(&mut old, key.id(), stale.timestamp, Some(1), key.id(), &mac);
    let (status, text) = post_internal(addr, old, body.clone()).await;
    assert_eq!(
        (status, text.contains("outside signature_window_ms")),
        (401, true),
        "{text}"
    );

    let mut partial = headers;
    partial.remove(signing::SIGNATURE_HEADER);
    assert_eq!(post_internal(addr, partial, body).await.0, 401);
    for reason in ["replayed", "bad_signature", "outside_window"] {
        let name = format!(
            "hearsay_internal_auth_failures_total{{direction=\"request\",key_id=\"{}\",reason=\"{reason}\"}}",
            key.id()
        );
        let count = cluster.http.metric(addr, &name).await;
        assert!(count.unwrap_or(0.0) >= 1.0, "{name}: {count:?}");
    }
}

/// Anyone can send forged internal requests: each is refused and counted,
/// but they cannot fill the replica's log (at most a line a second, which
/// says how many refusals it left out).
#[tokio::test]
async fn a_flood_of_forged_requests_is_counted_but_barely_logged() {
    let cluster = Cluster::builder(1).set("cluster_key", KEY1).start().await;
    let addr = cluster.addr(0);
    let keyring = Keyring::new(&[KEY1]).unwrap();
    let body = vec![0xc1];
    let (headers, _) = signed_request_headers(&keyring, "/internal/heartbeat", 2, &body);
    let started = std::time::Instant::now();
    const FORGED: usize = 300;
    for _ in 0..FORGED {
        // Signed for another body: the MAC does not verify.
        let (status, _) = post_internal(addr, headers.clone(), vec![0xc0]).await;
        assert_eq!(status, 401);
    }
    let seconds = started.elapsed().as_secs() as usize;
    let refused = cluster
        .http
        .metric(addr, "hearsay_internal_refused_total")
        .await
        .unwrap_or(0.0);
    assert!(refused >= FORGED as f64, "every refusal counted: {refused}");
    let logged = cluster
        .log_tail(0, 10_000)
        .lines()
        .filter(|line| line.contains("refused internal request"))
        .count();
    assert!(
        logged <= seconds + 2,
        "{logged} log lines for {FORGED} refusals in {seconds} s"
    );
    assert!(logged >= 1, "refusals are still logged");
}
