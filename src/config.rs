//! Layered configuration: built-in defaults < TOML file < environment < flags.
//!
//! Every tunable lives in [`Config`] with its default in [`Config::default`]
//! (mirrored, with comments, in `config/hearsay.toml`). The layers are merged
//! by `figment`, which also remembers where each value came from, so a bad
//! setting is reported with its name and source, and `hearsay config` can show
//! the effective value of every key and its origin.
//!
//! Environment: each key as `HEARSAY_<KEY>` (upper case), plus the names the
//! original assignment uses, `SOCKET_ADDRESS` and `VIEW`. Other `HEARSAY_*`
//! variables are ignored (the namespace is shared with tools); unknown keys in
//! a TOML file are an error.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

use crate::keyring::Keyring;

const SECOND_MS: u64 = 1000;
const HOUR_MS: u64 = 3600 * SECOND_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const MIB: u64 = 1024 * 1024;

/// Most runtime threads one replica may be given.
const MAX_WORKER_THREADS: u64 = 256;

/// The allowed range (inclusive) of every number in [`Config`], checked at
/// load so that nothing later has to guard against absurd values (a deadline
/// `now + u64::MAX ms` does not exist; a gigabyte body limit lets one client
/// take the memory). Durations: 1 ms to an hour; waits that may be skipped
/// start at 0; grace periods may last a day. Sizes: up to 64 MiB for one
/// body or message, which is held in memory whole.
pub const RANGES: &[(&str, u64, u64)] = &[
    ("gossip_interval_ms", 1, HOUR_MS),
    ("heartbeat_interval_ms", 1, HOUR_MS),
    ("suspect_after_ms", 1, HOUR_MS),
    ("dead_after_ms", 1, HOUR_MS),
    ("probe_interval_ms", 1, HOUR_MS),
    ("rpc_timeout_ms", 1, HOUR_MS),
    ("causal_wait_ms", 0, HOUR_MS),
    ("dead_member_grace_ms", 0, DAY_MS),
    ("gc_interval_ms", 1, HOUR_MS),
    ("max_body_bytes", 1, 64 * MIB),
    ("max_value_bytes", 1, 64 * MIB),
    ("max_message_bytes", 1024, 64 * MIB),
    ("max_connections", 1, 65_536),
    ("request_timeout_ms", 1, HOUR_MS),
    ("header_read_timeout_ms", 1, HOUR_MS),
    ("body_read_timeout_ms", 1, HOUR_MS),
    ("idle_timeout_ms", 1, HOUR_MS),
    ("max_open_connections", 1, 1_048_576),
    ("shutdown_grace_ms", 0, DAY_MS),
    ("worker_threads", 0, MAX_WORKER_THREADS),
    // Replica clocks must agree within it; a second is the least any NTP
    // setup gives, ten minutes the most a replay may be considered fresh.
    ("signature_window_ms", SECOND_MS, 600 * SECOND_MS),
    ("protocol_version", 1, 2),
    // With `sync = "interval"`: how much a power loss may take back.
    ("sync_interval_ms", 1, 60 * SECOND_MS),
];

/// Every setting of a replica. Durations are milliseconds, sizes bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This replica's `IP:PORT`: its identity and (unless `listen` is set) the
    /// address it binds.
    pub socket_address: String,
    /// The replicas that make up the cluster at start (comma-separated in env).
    #[serde(deserialize_with = "address_list")]
    pub view: Vec<String>,
    /// Bind here instead of `socket_address` (e.g. `0.0.0.0:8090`).
    pub listen: Option<String>,
    /// Anti-entropy round period.
    pub gossip_interval_ms: u64,
    /// Heartbeat period (to every member in the view).
    pub heartbeat_interval_ms: u64,
    /// Silence after which a member is suspect (still in the view).
    pub suspect_after_ms: u64,
    /// Silence after which a member is dead (leaves the view).
    pub dead_after_ms: u64,
    /// How often members outside the view are probed so they can return.
    pub probe_interval_ms: u64,
    /// Timeout of one replica-to-replica request.
    pub rpc_timeout_ms: u64,
    /// How long a client request whose causal metadata is ahead of this
    /// replica is held while the missing writes are pulled, before 503.
    pub causal_wait_ms: u64,
    /// How long a dead member still holds back tombstone collection.
    pub dead_member_grace_ms: u64,
    /// Period of tombstone collection.
    pub gc_interval_ms: u64,
    /// Largest accepted request body on the public API.
    pub max_body_bytes: usize,
    /// Largest accepted value (its JSON text).
    pub max_value_bytes: usize,
    /// Target size of one replica-to-replica message (a chunk of a delta).
    /// Encoding or decoding a message occupies a replica's thread, so this
    /// also bounds how long replication can hold up client requests.
    pub max_message_bytes: usize,
    /// Most client requests handled at once; more wait for a slot (within
    /// `request_timeout_ms`). Replica-to-replica requests are not counted.
    pub max_connections: usize,
    /// Upper bound on one client request, waiting for a slot included.
    pub request_timeout_ms: u64,
    /// A connection that has begun a request must deliver its whole header
    /// within this time, or it is closed (against slowloris clients).
    pub header_read_timeout_ms: u64,
    /// A request's body must have arrived this long after its header, or the
    /// request is answered 408 and its connection closed. Applies to
    /// replica-to-replica requests too, which have no `request_timeout_ms`.
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed, and
    /// so is one whose client takes no byte of an answer for this long.
    /// Longer than the 30 s a replica keeps its own idle connections to a
    /// peer, so a peer never reuses a connection this replica just closed.
    pub idle_timeout_ms: u64,
    /// Most connections open at once (clients and peers: one listener serves
    /// both); a connection beyond it is accepted and closed at once.
    pub max_open_connections: usize,
    /// How long SIGTERM waits for hand-off to peers before exiting.
    pub shutdown_grace_ms: u64,
    /// The cluster key: every `/internal/*` request and answer is signed
    /// with it (HMAC-SHA-256); it never travels. 16..=256 bytes.
    pub cluster_key: Option<String>,
    /// A keyring instead of one key: the first signs, any verifies
    /// (comma-separated in env).
    #[serde(deserialize_with = "address_list")]
    pub cluster_keys: Vec<String>,
    /// A keyring file instead: one key per line, `#` comments, the first
    /// signs; read again on SIGHUP.
    pub keyring_file: Option<PathBuf>,
    /// `required` (the default with a key) or `transitional` (also accept
    /// unsigned requests and answers, for moving a cluster onto a key).
    pub internal_auth: Option<InternalAuth>,
    /// How far a signed message's timestamp may be from this replica's
    /// wall clock, either way.
    pub signature_window_ms: u64,
    /// The highest internal protocol version spoken: 2 (signed); 1 only
    /// while upgrading a cluster from a release that spoke only version 1.
    pub protocol_version: u32,
    /// Operator token: when set, `PUT` and `DELETE /view` need
    /// `Authorization: Bearer <token>` (at least [`MIN_ADMIN_TOKEN_BYTES`]).
    pub admin_token: Option<String>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Threads that run this replica's tasks; 0 picks automatically (see
    /// [`Config::effective_worker_threads`]).
    pub worker_threads: usize,
    /// The scheduling class of this replica's threads (see [`CpuScheduling`]).
    pub cpu_scheduling: CpuScheduling,
    /// Keep versions, clock, horizon and identity in this directory and
    /// recover them at start; unset: in memory only (a restart starts empty
    /// and copies from peers).
    pub data_dir: Option<PathBuf>,
    /// With `data_dir`: when a write is acknowledged (see [`SyncPolicy`]).
    pub sync: SyncPolicy,
    /// With `sync = "interval"`: the period of the fsync.
    pub sync_interval_ms: u64,
    /// How many replicas of the current view (this one included) must hold
    /// a write before it is acknowledged (see [`AckReplicas`]).
    pub ack_replicas: AckReplicas,
}

/// How many replicas must hold a write before a client is told it
/// succeeded: `1` (this one; the write spreads by gossip), `2`, `majority`
/// or `all` of the current view. Always capped at the view's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckReplicas {
    One,
    Two,
    Majority,
    All,
}

impl AckReplicas {
    /// The replicas that must hold a write in a view of `view_size`
    /// members (this one included): at least 1, at most `view_size`.
    pub fn needed(self, view_size: usize) -> usize {
        let wanted = match self {
            AckReplicas::One => 1,
            AckReplicas::Two => 2,
            AckReplicas::Majority => view_size / 2 + 1,
            AckReplicas::All => view_size,
        };
        wanted.min(view_size).max(1)
    }

    fn as_str(self) -> &'static str {
        match self {
            AckReplicas::One => "1",
            AckReplicas::Two => "2",
            AckReplicas::Majority => "majority",
            AckReplicas::All => "all",
        }
    }
}

impl std::fmt::Display for AckReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AckReplicas {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AckReplicas {
    /// A number (`1`, `2`; the environment gives numbers as such) or text
    /// (`"1"`, `"2"`, `"majority"`, `"all"`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        let text = match Either::deserialize(deserializer)? {
            Either::Number(n) => n.to_string(),
            Either::Text(text) => text.trim().to_ascii_lowercase(),
        };
        match text.as_str() {
            "1" => Ok(AckReplicas::One),
            "2" => Ok(AckReplicas::Two),
            "majority" => Ok(AckReplicas::Majority),
            "all" => Ok(AckReplicas::All),
            other => Err(serde::de::Error::custom(format!(
                "ack_replicas must be 1, 2, majority or all, not {other:?}"
            ))),
        }
    }
}

/// When a write to a replica with a `data_dir` is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Once it is on disk (fsync); concurrent writes share one fsync.
    Always,
    /// Once the operating system has it (a process crash loses nothing
    /// acknowledged); fsync every `sync_interval_ms`, so a power loss may
    /// take back that window.
    Interval,
    /// Without waiting for the disk at all: a crash may lose recent writes
    /// (the replica recovers them from peers if they had them).
    Never,
}

/// Whether unsigned internal messages are refused (with a key set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InternalAuth {
    Required,
    Transitional,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How the kernel schedules a replica's threads (Linux; elsewhere ignored).
///
/// A server thread wakes for every request. In the normal class a waking
/// thread preempts whatever runs on its core, so when several replicas (and
/// their clients) share a few cores, every request costs context switches
/// between them. In the batch class (`SCHED_BATCH`, nice level unchanged) a
/// woken thread waits for the running one's slice instead: it keeps its
/// fair share of CPU but no longer interrupts. Measured with three replicas
/// on two cores and the load spread over them, that cut context switches
/// per request about fourfold and raised GET throughput from 0.77× to 0.92×
/// a bare server's (bench/RESULTS.md, "SCHED_BATCH"); with all load on one
/// replica it changed nothing measurable. The cost is latency on a host
/// shared with busy unrelated processes: a request that arrives while one
/// of them runs waits for its slice (a few ms) instead of taking the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_BATCH`: no wake-up preemption.
    Batch,
    /// The kernel's default class (`SCHED_OTHER`).
    Normal,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket_address: String::new(),
            view: Vec::new(),
            listen: None,
            gossip_interval_ms: 100,
            heartbeat_interval_ms: 100,
            suspect_after_ms: 700,
            dead_after_ms: 1500,
            probe_interval_ms: 250,
            rpc_timeout_ms: 1000,
            causal_wait_ms: 1000,
            dead_member_grace_ms: 300_000,
            gc_interval_ms: 1000,
            max_body_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            max_connections: 1024,
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_open_connections: 1024,
            shutdown_grace_ms: 1500,
            cluster_key: None,
            cluster_keys: Vec::new(),
            keyring_file: None,
            internal_auth: None,
            signature_window_ms: 30_000,
            protocol_version: 2,
            admin_token: None,
            log_format: LogFormat::Text,
            worker_threads: 0,
            cpu_scheduling: CpuScheduling::Batch,
            data_dir: None,
            sync: SyncPolicy::Always,
            sync_interval_ms: 100,
            ack_replicas: AckReplicas::One,
        }
    }
}

/// The shortest operator token accepted (`admin_token`).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The keys of [`Config`], in declaration order.
pub const KEYS: &[&str] = &[
    "socket_address",
    "view",
    "listen",
    "gossip_interval_ms",
    "heartbeat_interval_ms",
    "suspect_after_ms",
    "dead_after_ms",
    "probe_interval_ms",
    "rpc_timeout_ms",
    "causal_wait_ms",
    "dead_member_grace_ms",
    "gc_interval_ms",
    "max_body_bytes",
    "max_value_bytes",
    "max_message_bytes",
    "max_connections",
    "request_timeout_ms",
    "header_read_timeout_ms",
    "body_read_timeout_ms",
    "idle_timeout_ms",
    "max_open_connections",
    "shutdown_grace_ms",
    "cluster_key",
    "cluster_keys",
    "keyring_file",
    "internal_auth",
    "signature_window_ms",
    "protocol_version",
    "admin_token",
    "log_format",
    "worker_threads",
    "cpu_scheduling",
    "data_dir",
    "sync",
    "sync_interval_ms",
    "ack_replicas",
];

fn address_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        List(Vec<String>),
    }
    let items = match Either::deserialize(deserializer)? {
        Either::Text(text) => text.split(',').map(str::to_string).collect(),
        Either::List(list) => list,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Command-line overrides: the top layer.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub file: Option<PathBuf>,
    pub pairs: Vec<(String, String)>,
}

/// A configuration error that names the setting and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The merged configuration together with the provenance of each value.
pub struct Loaded {
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// `(key, effective value as TOML-ish text, source)` for every key.
    pub fn explain(&self) -> Vec<(String, String, String)> {
        let dict: Dict = self.figment.extract().unwrap_or_default();
        KEYS.iter()
            .map(|key| {
                let value = dict
                    .get(*key)
                    .map(|v| render_value(key, v))
                    .unwrap_or_else(|| "(unset)".to_string());
                let source = self
                    .figment
                    .find_metadata(key)
                    .map(|m| describe_source(m, key))
                    .unwrap_or_else(|| "built-in default".to_string());
                (key.to_string(), value, source)
            })
            .collect()
    }
}

fn render_value(key: &str, value: &figment::value::Value) -> String {
    let empty = matches!(value, figment::value::Value::Array(_, items) if items.is_empty());
    if (key == "cluster_key" || key == "cluster_keys" || key == "admin_token") && !empty {
        return "(set, hidden)".to_string();
    }
    match value {
        figment::value::Value::String(_, s) => format!("{s:?}"),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

/// Names a value's origin: the variable, file or flag it came from.
fn describe_source(metadata: &Metadata, key: &str) -> String {
    let name: &str = metadata.name.as_ref();
    let upper = key.to_ascii_uppercase();
    if name.contains("HEARSAY_") {
        format!("environment variable HEARSAY_{upper}")
    } else if name.contains("environment") {
        format!("environment variable {upper}")
    } else if name.contains("TOML") {
        match &metadata.source {
            Some(figment::Source::File(path)) => format!("file {}", path.display()),
            _ => "TOML file".to_string(),
        }
    } else if name == FLAG_SOURCE {
        format!("command-line flag ({key})")
    } else {
        "built-in default".to_string()
    }
}

const FLAG_SOURCE: &str = "command-line flag";

/// The TOML layer, when a file is given: `--config` or `HEARSAY_CONFIG`.
fn config_file(overrides: &Overrides) -> Option<PathBuf> {
    overrides
        .file
        .clone()
        .or_else(|| std::env::var_os("HEARSAY_CONFIG").map(PathBuf::from))
}

/// Merges the layers and validates the result.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut figment =
        Figment::from(Serialized::defaults(Config::default()).profile(Profile::Default));
    if let Some(path) = config_file(overrides) {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment
        .merge(
            Env::raw()
                .only(&["SOCKET_ADDRESS", "VIEW"])
                .map(|k| k.as_str().to_ascii_lowercase().into()),
        )
        .merge(Env::prefixed("HEARSAY_").only(KEYS));
    if !overrides.pairs.is_empty() {
        figment = figment.merge(FlagProvider(overrides.pairs.clone()));
    }
    let config: Config = figment.extract().map_err(|error| {
        let mut text = String::new();
        for e in error {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| describe_source(m, &path))
                .unwrap_or_default();
            text.push_str(&format!(
                "invalid setting `{path}` from {source}: {}\n",
                e.kind
            ));
        }
        ConfigError(text.trim_end().to_string())
    })?;
    let mut loaded = Loaded { config, figment };
    loaded.canonicalise_addresses()?;
    loaded.validate()?;
    Ok(loaded)
}

/// Flags given on the command line as `key=value` pairs; values are parsed
/// like environment values (numbers, booleans, strings, lists).
struct FlagProvider(Vec<(String, String)>);

impl Provider for FlagProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(FLAG_SOURCE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.0 {
            let key = key.replace('-', "_");
            if !KEYS.contains(&key.as_str()) {
                return Err(figment::Error::from(format!(
                    "unknown setting `{key}` given as a flag"
                )));
            }
            let parsed: figment::value::Value =
                value.parse().expect("figment values parse infallibly");
            dict.insert(key, parsed);
        }
        Ok(Profile::Default.collect(dict))
    }
}

impl Loaded {
    fn fail(&self, key: &str, why: &str) -> ConfigError {
        let source = self
            .figment
            .find_metadata(key)
            .map(|m| describe_source(m, key))
            .unwrap_or_else(|| "built-in default".to_string());
        ConfigError(format!("invalid setting `{key}` from {source}: {why}"))
    }

    /// Puts `socket_address` and every `view` entry in the one spelling
    /// replicas use to name each other ([`crate::core::address`]); an
    /// unusable address (`0.0.0.0`, port 0, multicast, not `IP:PORT`) stops
    /// start-up naming the setting.
    fn canonicalise_addresses(&mut self) -> Result<(), ConfigError> {
        use crate::core::address::canonical;
        if !self.config.socket_address.is_empty() {
            match canonical(&self.config.socket_address) {
                Ok(address) => self.config.socket_address = address,
                Err(why) => {
                    let why = format!("expected IP:PORT where replicas reach this one: {why}");
                    return Err(self.fail("socket_address", &why));
                }
            }
        }
        let mut view = Vec::with_capacity(self.config.view.len());
        for entry in &self.config.view {
            match canonical(entry) {
                Ok(address) if !view.contains(&address) => view.push(address),
                Ok(_) => {}
                Err(why) => return Err(self.fail("view", &format!("`{entry}`: {why}"))),
            }
        }
        self.config.view = view;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        if c.socket_address.is_empty() {
            return Err(ConfigError(
                "missing setting `socket_address`: set SOCKET_ADDRESS=IP:PORT (or --socket-address)".into(),
            ));
        }
        if c.socket_address.parse::<SocketAddr>().is_err() {
            return Err(self.fail("socket_address", "expected IP:PORT, e.g. 10.10.0.2:8090"));
        }
        if let Some(bad) = c.view.iter().find(|a| a.parse::<SocketAddr>().is_err()) {
            return Err(self.fail("view", &format!("`{bad}` is not IP:PORT")));
        }
        if let Some(listen) = &c.listen {
            if listen.parse::<SocketAddr>().is_err() {
                return Err(self.fail("listen", "expected IP:PORT, e.g. 0.0.0.0:8090"));
            }
        }
        for (key, value) in c.numbers() {
            let (_, min, max) = RANGES
                .iter()
                .find(|(name, _, _)| *name == key)
                .expect("every number has a range (checked by a unit test)");
            if !(*min..=*max).contains(&value) {
                let unit = if key.ends_with("_ms") { " ms" } else { "" };
                let zero = if key == "worker_threads" {
                    " (0 picks automatically)"
                } else {
                    ""
                };
                return Err(self.fail(
                    key,
                    &format!("{value} is out of range: allowed {min}..={max}{unit}{zero}"),
                ));
            }
        }
        if c.suspect_after_ms <= c.heartbeat_interval_ms {
            return Err(self.fail("suspect_after_ms", "must exceed heartbeat_interval_ms"));
        }
        if c.dead_after_ms <= c.suspect_after_ms {
            return Err(self.fail("dead_after_ms", "must exceed suspect_after_ms"));
        }
        if c.max_value_bytes > c.max_body_bytes {
            return Err(self.fail("max_value_bytes", "must not exceed max_body_bytes"));
        }
        if c.admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_BYTES)
        {
            let why = format!("must be at least {MIN_ADMIN_TOKEN_BYTES} bytes when set");
            return Err(self.fail("admin_token", &why));
        }
        self.validate_keys()
    }

    /// At most one key source; its keys valid; the modes consistent.
    fn validate_keys(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        let sources: Vec<&str> = [
            ("cluster_key", c.cluster_key.is_some()),
            ("cluster_keys", !c.cluster_keys.is_empty()),
            ("keyring_file", c.keyring_file.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(key, _)| *key)
        .collect();
        if sources.len() > 1 {
            return Err(self.fail(
                sources[1],
                &format!(
                    "set only one of cluster_key, cluster_keys, keyring_file (also set: {})",
                    sources[0]
                ),
            ));
        }
        let checked = match (&c.cluster_key, &c.keyring_file) {
            (Some(key), _) => Keyring::new(&[key]).map_err(|e| ("cluster_key", e)),
            (_, Some(path)) => Keyring::load(path).map_err(|e| ("keyring_file", e)),
            _ if !c.cluster_keys.is_empty() => {
                Keyring::new(&c.cluster_keys).map_err(|e| ("cluster_keys", e))
            }
            _ => {
                if c.internal_auth.is_some() {
                    return Err(self.fail(
                        "internal_auth",
                        "needs a key (cluster_key, cluster_keys or keyring_file)",
                    ));
                }
                return Ok(());
            }
        };
        if let Err((key, why)) = checked {
            return Err(self.fail(key, &why.to_string()));
        }
        if c.protocol_version < 2 {
            return Err(self.fail(
                "protocol_version",
                "version 1 cannot be used with a key (it sent the key in clear); upgrade every replica to 2 first",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Every number in the configuration by key, for the range check.
    fn numbers(&self) -> [(&'static str, u64); 23] {
        // usize is at most 64 bits on every supported target.
        let size = |n: usize| n as u64;
        [
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("suspect_after_ms", self.suspect_after_ms),
            ("dead_after_ms", self.dead_after_ms),
            ("probe_interval_ms", self.probe_interval_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("causal_wait_ms", self.causal_wait_ms),
            ("dead_member_grace_ms", self.dead_member_grace_ms),
            ("gc_interval_ms", self.gc_interval_ms),
            ("max_body_bytes", size(self.max_body_bytes)),
            ("max_value_bytes", size(self.max_value_bytes)),
            ("max_message_bytes", size(self.max_message_bytes)),
            ("max_connections", size(self.max_connections)),
            ("request_timeout_ms", self.request_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_open_connections", size(self.max_open_connections)),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
            ("worker_threads", size(self.worker_threads)),
            ("signature_window_ms", self.signature_window_ms),
            ("protocol_version", u64::from(self.protocol_version)),
            ("sync_interval_ms", self.sync_interval_ms),
        ]
    }

    /// How internal messages are authenticated: `internal_auth`, or
    /// `required` when it is unset (it only matters with a key).
    pub fn effective_internal_auth(&self) -> InternalAuth {
        self.internal_auth.unwrap_or(InternalAuth::Required)
    }

    /// The address to bind.
    pub fn bind_address(&self) -> SocketAddr {
        self.listen
            .as_deref()
            .unwrap_or(&self.socket_address)
            .parse()
            .expect("validated at load")
    }

    /// Largest internal message accepted: one chunk may exceed the target by
    /// one version, which is bounded by the value limit.
    pub fn max_internal_body_bytes(&self) -> usize {
        self.max_message_bytes + self.max_value_bytes + 64 * 1024
    }

    /// The number of runtime threads to serve with.
    ///
    /// An explicit `worker_threads` wins. Otherwise every replica gets every
    /// core it sees, also when several share a host (`hearsay cluster`):
    /// dividing the cores among them left a replica that takes all of the
    /// clients' load on one thread of a two-core machine (PUT 0.52× the
    /// ceiling against 0.71× with two threads), while with the load spread
    /// over three co-located replicas the extra threads cost 0–10 % more CPU
    /// per request on a busy machine (~30 % on a quiet one in November;
    /// `bench/RESULTS.md`, 2026-12-02, "thread choice"). No setting serves
    /// both shapes on shared cores, and a replica cannot know its shape at
    /// start: independent single-threaded runtimes per core were worse in
    /// both (`bench/RESULTS.md`, "The thread choice"), and so were
    /// connections driven by one or two tasks on two workers (2026-12-03:
    /// the second thread, not the number of tasks, is what costs).
    pub fn effective_worker_threads(&self, cores: usize) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        cores.max(1)
    }

    /// A configuration for tests and the local cluster, from defaults.
    pub fn for_address(address: &str, view: &[String]) -> Config {
        Config {
            socket_address: address.to_string(),
            view: view.to_vec(),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests;
