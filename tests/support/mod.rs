//! Harness for the end-to-end tests: real `hearsay` processes on 127.0.0.1.
//!
//! * [`Cluster`] starts N replicas of the binary cargo built for this test
//!   (`CARGO_BIN_EXE_hearsay`) through `hearsay::launcher` (the same code
//!   `hearsay cluster` uses): `SOCKET_ADDRESS`, `VIEW`, one log file per
//!   replica in a temporary directory, then waiting for `GET /ready`. It can
//!   stop, resume, kill, terminate and restart single replicas. Dropping it
//!   SIGKILLs every child still alive; when the test is failing it also prints
//!   the tail of every log and keeps the directory.
//! * [`Http`] is a thin client that never panics on a status code and returns
//!   the whole answer as a [`Reply`].
//! * [`Session`] is a client the way the contract sees one: it keeps the
//!   latest `causal-metadata` (from any answer that has one, a 404 `Key does
//!   not exist` included) and passes it on every request.
//! * [`wait_until`] and [`holds_throughout`] replace sleeps: the first polls a
//!   condition until a deadline, the second samples one over a whole window
//!   (to show that something does *not* happen).
//!
//! Ports: tests run in parallel (nextest runs one process per test), so ports
//! are drawn at random from below the kernel's ephemeral range and checked by
//! binding them. Below that range no outgoing connection can take a port as
//! its source port while a replica is down between a kill and a restart. If a
//! replica still fails to bind ("cannot listen"), the whole cluster start is
//! retried on fresh ports.

#![allow(dead_code)] // every test crate uses a different part of the harness

use std::fmt::Display;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use hearsay::launcher::{self, NotReady, ReplicaCommand};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// How long a replica may take to become ready (CPU is shared with other
/// builds and tests, so this is generous; a healthy start takes milliseconds).
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// Interval between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// Attempts at starting a cluster before giving up on finding free ports.
const START_ATTEMPTS: usize = 5;

/// Upper bound on one HTTP request of the harness (a SIGSTOPped replica never
/// answers; tests that talk to one must expect the timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// --------------------------------------------------------------------------
// Waiting
// --------------------------------------------------------------------------

/// Polls `condition` every [`POLL`] until it holds; returns how long that
/// took. Panics, naming `what`, if it still fails after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: impl Display, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        if started.elapsed() >= within {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `probe` every [`POLL`] until it yields `Some`; returns the value
/// and how long that took. Panics, naming `what`, after `within`.
pub async fn wait_for<T, F, Fut>(
    within: Duration,
    what: impl Display,
    mut probe: F,
) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return (value, started.elapsed());
        }
        if started.elapsed() >= within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Samples `check` every `every` for the whole `window` (at least once).
/// Returns the number of samples taken, or the first violation it reported.
pub async fn holds_throughout<F, Fut>(
    window: Duration,
    every: Duration,
    mut check: F,
) -> Result<usize, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut samples = 0;
    loop {
        check()
            .await
            .map_err(|e| format!("after {:?}: {e}", started.elapsed()))?;
        samples += 1;
        if started.elapsed() >= window {
            return Ok(samples);
        }
        tokio::time::sleep(every).await;
    }
}

// --------------------------------------------------------------------------
// HTTP
// --------------------------------------------------------------------------

/// A request body as the harness sends it.
#[derive(Clone, Debug)]
pub enum Body {
    /// No body at all.
    None,
    /// JSON with `Content-Type: application/json`.
    Json(Value),
    /// Bytes exactly as given, with this content type (if any).
    Raw {
        bytes: Vec<u8>,
        content_type: Option<&'static str>,
    },
}

impl Body {
    pub fn raw(text: impl Into<Vec<u8>>) -> Body {
        Body::Raw {
            bytes: text.into(),
            content_type: None,
        }
    }

    pub fn typed(text: impl Into<Vec<u8>>, content_type: &'static str) -> Body {
        Body::Raw {
            bytes: text.into(),
            content_type: Some(content_type),
        }
    }
}

/// One answer: status, content type, and the body as text and (if it parses)
/// as JSON (`Value::Null` otherwise).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The `error` field, or "" if there is none.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    /// The `result` field, or "" if there is none.
    pub fn result(&self) -> &str {
        self.json["result"].as_str().unwrap_or("")
    }

    pub fn value(&self) -> &Value {
        &self.json["value"]
    }

    pub fn metadata(&self) -> &Value {
        &self.json["causal-metadata"]
    }

    pub fn is_json(&self) -> bool {
        self.content_type.starts_with("application/json")
            && serde_json::from_str::<Value>(&self.text).is_ok()
    }

    /// Asserts status and (when given) the exact `error` string, and that the
    /// answer is a JSON object with the JSON content type.
    #[track_caller]
    pub fn expect(&self, status: u16, error: Option<&str>) -> &Self {
        assert_eq!(self.status, status, "unexpected status; answer: {self:?}");
        assert!(self.is_json(), "answer is not application/json: {self:?}");
        assert!(self.json.is_object(), "answer is not an object: {self:?}");
        if let Some(error) = error {
            assert_eq!(self.error(), error, "unexpected error; answer: {self:?}");
        }
        self
    }

    /// Asserts a `{"result": ...}` answer with this status.
    #[track_caller]
    pub fn expect_result(&self, status: u16, result: &str) -> &Self {
        self.expect(status, None);
        assert_eq!(self.result(), result, "unexpected result; answer: {self:?}");
        self
    }

    /// Asserts a JSON `{"error": "<non-empty>"}` answer with this status.
    #[track_caller]
    pub fn expect_some_error(&self, status: u16) -> &Self {
        self.expect(status, None);
        assert!(
            !self.error().is_empty(),
            "answer has no error message: {self:?}"
        );
        self
    }
}

/// The path of `key` under `/kvs/`, percent-encoded.
pub fn kvs_path(key: &str) -> String {
    format!("/kvs/{}", utf8_percent_encode(key, NON_ALPHANUMERIC))
}

/// A plain HTTP client for talking to replicas.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http::with_timeout(REQUEST_TIMEOUT)
    }
}

impl Http {
    pub fn with_timeout(timeout: Duration) -> Http {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Replicas are killed and restarted on the same address; a pooled
            // connection to an earlier process would fail the next request.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("building an HTTP client");
        Http { client }
    }

    /// Sends one request; a transport error (refused, timed out) is an `Err`.
    pub async fn try_send(
        &self,
        method: &str,
        addr: &str,
        path: &str,
        body: Body,
    ) -> Result<Reply, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let url = format!("http://{addr}{path}");
        let mut request = self.client.request(method.clone(), &url);
        request = match body {
            Body::None => request,
            Body::Json(value) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Body::Raw {
                bytes,
                content_type,
            } => {
                let request = match content_type {
                    Some(content_type) => request.header("content-type", content_type),
                    None => request,
                };
                request.body(bytes)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            text,
            json,
        })
    }

    /// Sends one request; panics on a transport error.
    pub async fn send(&self, method: &str, addr: &str, path: &str, body: Body) -> Reply {
        self.try_send(method, addr, path, body)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `GET /view`, sorted as the replica returned it.
    pub async fn try_view(&self, addr: &str) -> Result<Vec<String>, String> {
        let reply = self.try_send("GET", addr, "/view", Body::None).await?;
        if reply.status != 200 {
            return Err(format!("GET /view at {addr}: {reply:?}"));
        }
        let view = reply.json["view"]
            .as_array()
            .ok_or_else(|| format!("GET /view at {addr}: no view in {reply:?}"))?;
        Ok(view
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect())
    }

    pub async fn view(&self, addr: &str) -> Vec<String> {
        self.try_view(addr).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /members`: every member this replica knows, with its state.
    pub async fn members(&self, addr: &str) -> Vec<Value> {
        let reply = self.send("GET", addr, "/members", Body::None).await;
        assert_eq!(reply.status, 200, "GET /members at {addr}: {reply:?}");
        reply.json["members"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /members at {addr}: {reply:?}"))
            .clone()
    }

    /// The `/members` entry for `member` as `addr` sees it.
    pub async fn member(&self, addr: &str, member: &str) -> Option<Value> {
        self.members(addr)
            .await
            .into_iter()
            .find(|m| m["address"] == member)
    }

    /// The incarnation a replica reports for itself in `/members`.
    pub async fn own_incarnation(&self, addr: &str) -> u64 {
        let me = self
            .members(addr)
            .await
            .into_iter()
            .find(|m| m["is_self"] == true)
            .unwrap_or_else(|| panic!("{addr} lists no member with is_self"));
        me["incarnation"]
            .as_u64()
            .unwrap_or_else(|| panic!("{addr}: no incarnation in {me}"))
    }

    /// The value of an unlabelled sample `name` in `GET /metrics`, if the
    /// scrape has it.
    pub async fn metric(&self, addr: &str, name: &str) -> Option<f64> {
        let reply = self
            .try_send("GET", addr, "/metrics", Body::None)
            .await
            .ok()?;
        reply.text.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// `PUT` or `DELETE /view` with `{"socket-address": target}`.
    pub async fn change_view(&self, method: &str, addr: &str, target: &str) -> Reply {
        self.send(
            method,
            addr,
            "/view",
            Body::Json(json!({ "socket-address": target })),
        )
        .await
    }

    /// A key-value request without metadata handling.
    pub async fn kv(&self, method: &str, addr: &str, key: &str, body: Body) -> Reply {
        self.send(method, addr, &kvs_path(key), body).await
    }

    /// `GET /kvs/<key>` with no body: the replica's current state, no
    /// causal constraint.
    pub async fn read(&self, addr: &str, key: &str) -> Reply {
        self.kv("GET", addr, key, Body::None).await
    }

    /// The replica's current answer for `key` without metadata: the value,
    /// or `None` for 404 (any other status fails the test).
    pub async fn state_of(&self, addr: &str, key: &str) -> Option<Value> {
        let reply = self.read(addr, key).await;
        match reply.status {
            200 => Some(reply.value().clone()),
            404 => None,
            other => panic!("GET {key} at {addr}: unexpected {other}: {reply:?}"),
        }
    }
}

// --------------------------------------------------------------------------
// Sessions
// --------------------------------------------------------------------------

/// One client: keeps the latest `causal-metadata` and sends it every time.
pub struct Session {
    http: Http,
    pub metadata: Value,
}

impl Session {
    pub fn new(http: Http) -> Session {
        Session {
            http,
            metadata: Value::Null,
        }
    }

    /// Adopts the answer's metadata. A 404 carries it too, and it may cover
    /// the delete the replica saw: dropping it would let the next replica
    /// serve the deleted value.
    fn remember(&mut self, reply: &Reply) {
        let metadata = reply.metadata();
        if !metadata.is_null() {
            self.metadata = metadata.clone();
        }
    }

    async fn request(
        &mut self,
        method: &str,
        addr: &str,
        key: &str,
        value: Option<Value>,
    ) -> Reply {
        let mut body = json!({ "causal-metadata": self.metadata });
        if let Some(value) = value {
            body["value"] = value;
        }
        let reply = self.http.kv(method, addr, key, Body::Json(body)).await;
        self.remember(&reply);
        reply
    }

    pub async fn put(&mut self, addr: &str, key: &str, value: Value) -> Reply {
        self.request("PUT", addr, key, Some(value)).await
    }

    pub async fn get(&mut self, addr: &str, key: &str) -> Reply {
        self.request("GET", addr, key, None).await
    }

    pub async fn delete(&mut self, addr: &str, key: &str) -> Reply {
        self.request("DELETE", addr, key, None).await
    }

    /// Repeats a request that the replica answers with 503 (it is behind
    /// this session and may catch up) until it answers otherwise; returns
    /// that answer and how many 503s came first. Any 503 must carry the
    /// contract's exact string.
    pub async fn patiently(
        &mut self,
        method: &str,
        addr: &str,
        key: &str,
        value: Option<Value>,
        within: Duration,
    ) -> (Reply, usize) {
        let started = Instant::now();
        let mut unavailable = 0;
        loop {
            let reply = self.request(method, addr, key, value.clone()).await;
            if reply.status != 503 {
                return (reply, unavailable);
            }
            reply.expect(
                503,
                Some("Causal dependencies not satisfied; try again later"),
            );
            unavailable += 1;
            assert!(
                started.elapsed() < within,
                "{method} {key} at {addr} still 503 after {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// GET, retrying 503s for up to `within`.
    pub async fn get_patiently(&mut self, addr: &str, key: &str, within: Duration) -> Reply {
        self.patiently("GET", addr, key, None, within).await.0
    }

    /// PUT, retrying 503s for up to `within`.
    pub async fn put_patiently(
        &mut self,
        addr: &str,
        key: &str,
        value: Value,
        within: Duration,
    ) -> Reply {
        self.patiently("PUT", addr, key, Some(value), within)
            .await
            .0
    }
}

// --------------------------------------------------------------------------
// Processes
// --------------------------------------------------------------------------

/// Ports for `n` replicas, distinct, free right now, and below the kernel's
/// ephemeral range when that leaves room (see the module docs).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = if ephemeral_low > 12_000 {
            let port = rand::random_range(10_000..ephemeral_low - 1);
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => listener,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port")
        };
        let port = listener.local_addr().expect("a bound address").port();
        if !ports.contains(&port) {
            ports.push(port);
            held.push(listener);
        }
    }
    ports
}

/// One replica process (possibly not running).
struct Replica {
    address: String,
    /// Its `VIEW`.
    view: String,
    log: PathBuf,
    child: Option<Child>,
    lives: u32,
    /// Settings for this replica only, after (so overriding) the cluster's.
    settings: Vec<(String, String)>,
}

impl Replica {
    fn pid(&self) -> libc::pid_t {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.address));
        child.id() as libc::pid_t
    }

    /// The exit status if the process has exited (reaping it).
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Settings for a cluster to be started.
pub struct ClusterBuilder {
    size: usize,
    deferred: Vec<usize>,
    views: Vec<(usize, Vec<usize>)>,
    settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    descriptor_limit: Option<u64>,
}

impl ClusterBuilder {
    /// Every replica runs with at most this many open file descriptors
    /// (`RLIMIT_NOFILE`), as a small container or a low `ulimit -n` would.
    pub fn descriptor_limit(mut self, limit: u64) -> Self {
        self.descriptor_limit = Some(limit);
        self
    }

    /// A setting passed as `--set key=value` to every replica.
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// An environment variable for every replica (e.g. `HEARSAY_CAUSAL_WAIT_MS`).
    pub fn env(mut self, key: &str, value: impl Display) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Replica `index` starts with `VIEW` listing only `members` (by index)
    /// instead of every replica; the others' `VIEW` still lists every
    /// replica unless also overridden.
    pub fn view_for(mut self, index: usize, members: &[usize]) -> Self {
        self.views.push((index, members.to_vec()));
        self
    }

    /// Replica `index` is part of `VIEW` but not started by [`Self::start`];
    /// start it later with [`Cluster::start_replica`].
    pub fn defer(mut self, index: usize) -> Self {
        self.deferred.push(index);
        self
    }

    /// Starts the replicas and waits until every started one is ready.
    pub async fn start(self) -> Cluster {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let addresses: Vec<String> = free_ports(self.size)
                .into_iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            let dir = tempfile::Builder::new()
                .prefix("hearsay-e2e-")
                .tempdir()
                .expect("creating a temporary directory");
            let replicas = addresses
                .iter()
                .enumerate()
                .map(|(i, address)| Replica {
                    address: address.clone(),
                    view: match self.views.iter().find(|(index, _)| *index == i) {
                        Some((_, members)) => members
                            .iter()
                            .map(|&m| addresses[m].as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        None => addresses.join(","),
                    },
                    log: dir.path().join(format!("replica-{i}.log")),
                    child: None,
                    lives: 0,
                    settings: Vec::new(),
                })
                .collect();
            let mut cluster = Cluster {
                dir: Some(dir),
                replicas,
                settings: self.settings.clone(),
                env: self.env.clone(),
                descriptor_limit: self.descriptor_limit,
                http: Http::default(),
            };
            let started: Vec<usize> = (0..self.size)
                .filter(|i| !self.deferred.contains(i))
                .collect();
            for &i in &started {
                cluster.spawn(i);
            }
            let mut outcome = Ok(());
            for &i in &started {
                outcome = cluster.try_wait_ready(i).await;
                if outcome.is_err() {
                    break;
                }
            }
            match outcome {
                Ok(()) => return cluster,
                Err(StartError::PortTaken(why)) => {
                    // Another test won the race for a port: start over.
                    last_error = why;
                    cluster.kill_all();
                }
                Err(StartError::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("could not start a cluster in {START_ATTEMPTS} attempts: {last_error}");
    }
}

enum StartError {
    PortTaken(String),
    Failed(String),
}

/// Replicas of one test, killed when dropped.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    replicas: Vec<Replica>,
    settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    descriptor_limit: Option<u64>,
    pub http: Http,
}

impl Cluster {
    /// A cluster of `size` replicas, all in each other's `VIEW`.
    pub fn builder(size: usize) -> ClusterBuilder {
        ClusterBuilder {
            size,
            deferred: Vec::new(),
            views: Vec::new(),
            settings: Vec::new(),
            env: Vec::new(),
            descriptor_limit: None,
        }
    }

    /// `size` replicas with default settings, started and ready.
    pub async fn start(size: usize) -> Cluster {
        Cluster::builder(size).start().await
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn addr(&self, index: usize) -> &str {
        &self.replicas[index].address
    }

    /// Every replica's address, in index order.
    pub fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.address.clone()).collect()
    }

    /// The addresses of these replicas, sorted (as `GET /view` lists them).
    pub fn sorted(&self, indexes: &[usize]) -> Vec<String> {
        let mut view: Vec<String> = indexes.iter().map(|&i| self.addr(i).to_string()).collect();
        view.sort();
        view
    }

    pub fn session(&self) -> Session {
        Session::new(self.http.clone())
    }

    pub fn log_path(&self, index: usize) -> &Path {
        &self.replicas[index].log
    }

    /// A setting for replica `index` only, from its next start on (later
    /// calls override earlier ones and the cluster's settings).
    pub fn set_for(&mut self, index: usize, key: &str, value: impl Display) {
        self.replicas[index]
            .settings
            .push((key.to_string(), value.to_string()));
    }

    /// Spawns replica `index` (again) with its `VIEW` (by default every
    /// replica's address), its output appended to its log file.
    pub fn spawn(&mut self, index: usize) {
        let mut settings = self.settings.clone();
        let env = self.env.clone();
        let descriptor_limit = self.descriptor_limit;
        let replica = &mut self.replicas[index];
        settings.extend(replica.settings.iter().cloned());
        assert!(
            replica.child.is_none(),
            "{} is already running",
            replica.address
        );
        replica.lives += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .expect("opening a log file");
        writeln!(
            log,
            "===== harness: life {} of {} =====",
            replica.lives, replica.address
        )
        .expect("writing a log file");
        // Only what this test asks for: no HEARSAY_* from the developer's
        // shell. If the test process dies without running the drop guard
        // (e.g. a test-runner timeout), the replica dies with it; that fires
        // when the *spawning thread* ends, so spawn from the test's own
        // thread (the default current-thread `#[tokio::test]`).
        let mut command = ReplicaCommand::new(
            env!("CARGO_BIN_EXE_hearsay"),
            &replica.address,
            &replica.view,
        )
        .scrub_inherited_settings()
        .die_with_parent()
        .env("RUST_LOG", "info")
        .log_to(&replica.log)
        .settings(settings.iter().map(|(key, value)| format!("{key}={value}")));
        for (key, value) in env {
            command = command.env(key, value);
        }
        if let Some(limit) = descriptor_limit {
            command = command.descriptor_limit(limit);
        }
        let mut command = command.build().expect("opening a log file");
        replica.child = Some(command.spawn().expect("spawning hearsay"));
    }

    async fn try_wait_ready(&mut self, index: usize) -> Result<(), StartError> {
        let addr = self.addr(index).to_string();
        let http = self.http.client.clone();
        let replica = &mut self.replicas[index];
        let outcome =
            launcher::wait_ready(&http, &addr, READY_WITHIN, POLL, || replica.exited()).await;
        match outcome {
            Ok(_) => Ok(()),
            Err(NotReady::Exited(status)) => {
                self.replicas[index].child = None;
                let log = self.log_tail(index, 40);
                let why = format!("{addr} exited with {status} before it was ready:\n{log}");
                Err(if log.contains("cannot listen") {
                    StartError::PortTaken(why)
                } else {
                    StartError::Failed(why)
                })
            }
            Err(NotReady::TimedOut) => Err(StartError::Failed(format!(
                "{addr} not ready after {READY_WITHIN:?}:\n{}",
                self.log_tail(index, 40)
            ))),
        }
    }

    /// Waits until replica `index` answers `GET /ready` with 200.
    pub async fn wait_ready(&mut self, index: usize) {
        match self.try_wait_ready(index).await {
            Ok(()) => {}
            Err(StartError::PortTaken(why) | StartError::Failed(why)) => panic!("{why}"),
        }
    }

    /// Starts replica `index` (deferred, killed or terminated before) and
    /// waits until it is ready; returns how long that took.
    pub async fn start_replica(&mut self, index: usize) -> Duration {
        let started = Instant::now();
        self.spawn(index);
        self.wait_ready(index).await;
        started.elapsed()
    }

    pub fn pid(&self, index: usize) -> libc::pid_t {
        self.replicas[index].pid()
    }

    /// Sends `signal` to replica `index`.
    pub fn signal(&self, index: usize, signal: libc::c_int) {
        let pid = self.pid(index);
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped (we hold its `Child`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Freezes replica `index` (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&self, index: usize) {
        self.signal(index, libc::SIGSTOP);
    }

    /// Resumes a paused replica (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.signal(index, libc::SIGCONT);
    }

    /// SIGKILLs replica `index` and reaps it: a crash.
    pub fn kill(&mut self, index: usize) {
        self.signal(index, libc::SIGKILL);
        let child = self.replicas[index].child.take().expect("running");
        wait_child(child);
    }

    /// SIGTERMs replica `index` and waits up to `within` for it to exit.
    /// Returns its exit status and how long it took to exit; panics if it is
    /// still running after `within`.
    pub async fn terminate(&mut self, index: usize, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal(index, libc::SIGTERM);
        loop {
            if let Some(status) = self.exited(index) {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "{} still running {within:?} after SIGTERM",
                self.addr(index)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The exit status of replica `index` if it has exited (it is then
    /// reaped and counts as not running).
    pub fn exited(&mut self, index: usize) -> Option<ExitStatus> {
        let status = self.replicas[index].exited()?;
        self.replicas[index].child = None;
        Some(status)
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.replicas[index].child.is_some()
    }

    /// The last `lines` lines of replica `index`'s log.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.replicas[index].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn kill_all(&mut self) {
        for replica in &mut self.replicas {
            replica.kill_now();
        }
    }

    // Convenience wrappers around `Http` for one replica.

    pub async fn view(&self, index: usize) -> Vec<String> {
        self.http.view(self.addr(index)).await
    }

    pub async fn members(&self, index: usize) -> Vec<Value> {
        self.http.members(self.addr(index)).await
    }

    /// Whether every replica in `observers` lists exactly `expected` (sorted).
    /// Samples the views of `observers` every `every` for the whole
    /// `window`; returns the number of samples, or the first replica whose
    /// view differed from `expected`.
    pub async fn views_stay(
        &self,
        observers: &[usize],
        expected: &[String],
        window: Duration,
        every: Duration,
    ) -> Result<usize, String> {
        holds_throughout(window, every, || async move {
            for &i in observers {
                let view = self.view(i).await;
                if view != expected {
                    return Err(format!("replica {i} lists {view:?}"));
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn views_equal(&self, observers: &[usize], expected: &[String]) -> bool {
        for &i in observers {
            match self.http.try_view(self.addr(i)).await {
                Ok(view) if view == expected => {}
                _ => return false,
            }
        }
        true
    }
}

fn wait_child(mut child: Child) -> ExitStatus {
    child.wait().expect("waiting for a child")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for replica in &mut self.replicas {
            // SIGKILL works on stopped processes too.
            replica.kill_now();
        }
        if failing {
            let mut out = std::io::stderr().lock();
            for (i, replica) in self.replicas.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "----- log of replica {i} ({}), last 60 lines -----\n{}",
                    replica.address,
                    self.log_tail(i, 60)
                );
            }
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                let _ = writeln!(out, "----- logs kept in {} -----", kept.display());
            }
        }
    }
}
