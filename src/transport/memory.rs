//! An in-memory network for deterministic simulation.
//!
//! Every message is encoded and decoded exactly as on the wire, so codec bugs
//! show up here too. A seeded RNG decides drops, duplicates and delays (which
//! also reorder messages); directed links can be cut to build two-way,
//! one-way and non-transitive partitions. Run it under tokio's paused clock
//! and a current-thread runtime and a seed replays the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Transport, TransportError};
use crate::proto::{self, Request, Response};

/// What a registered replica does with a request.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Random faults applied to every message that crosses an uncut link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 3,
        }
    }
}

/// Message counts, for assertions and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub bytes: u64,
}

struct State {
    rng: StdRng,
    handlers: BTreeMap<String, Handler>,
    cut: BTreeSet<(String, String)>,
    faults: Faults,
    stats: NetStats,
}

pub struct SimNetwork {
    state: Mutex<State>,
}

enum Fate {
    Lost,
    Deliver { delay: Duration, duplicate: bool },
}

impl SimNetwork {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(SimNetwork {
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                handlers: BTreeMap::new(),
                cut: BTreeSet::new(),
                faults: Faults::default(),
                stats: NetStats::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A replica at `address` is up and answers with `handler`.
    pub fn register(&self, address: &str, handler: Handler) {
        self.lock().handlers.insert(address.to_string(), handler);
    }

    /// The replica at `address` is down: connections are refused.
    pub fn unregister(&self, address: &str) {
        self.lock().handlers.remove(address);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Messages from `from` to `to` are lost (one direction only).
    pub fn cut(&self, from: &str, to: &str) {
        self.lock().cut.insert((from.to_string(), to.to_string()));
    }

    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn partition(&self, a: &[String], b: &[String]) {
        for x in a {
            for y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// The transport a replica at `from` uses.
    pub fn endpoint(self: &Arc<Self>, from: &str) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            network: self.clone(),
            from: from.to_string(),
        })
    }

    fn fate(&self, from: &str, to: &str, bytes: usize) -> Fate {
        let mut state = self.lock();
        state.stats.sent += 1;
        state.stats.bytes += bytes as u64;
        let faults = state.faults;
        let cut = state.cut.contains(&(from.to_string(), to.to_string()));
        if cut || state.rng.random_bool(faults.drop.clamp(0.0, 1.0)) {
            state.stats.dropped += 1;
            return Fate::Lost;
        }
        let delay = state
            .rng
            .random_range(faults.min_delay_ms..=faults.max_delay_ms.max(faults.min_delay_ms));
        let duplicate = state.rng.random_bool(faults.duplicate.clamp(0.0, 1.0));
        if duplicate {
            state.stats.duplicated += 1;
        }
        Fate::Deliver {
            delay: Duration::from_millis(delay),
            duplicate,
        }
    }

    fn handler(&self, address: &str) -> Option<Handler> {
        self.lock().handlers.get(address).cloned()
    }
}

struct SimTransport {
    network: Arc<SimNetwork>,
    from: String,
}

impl Transport for SimTransport {
    fn call(
        &self,
        to: &str,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let network = self.network.clone();
        let from = self.from.clone();
        let to = to.to_string();
        let exchange = async move {
            let bytes =
                proto::encode(&request).map_err(|e| TransportError::Codec(e.to_string()))?;
            let Fate::Deliver { delay, duplicate } = network.fate(&from, &to, bytes.len()) else {
                return futures::future::pending().await;
            };
            tokio::time::sleep(delay).await;
            let handler = network
                .handler(&to)
                .ok_or_else(|| TransportError::Unreachable(format!("{to}: connection refused")))?;
            let decoded: Request =
                proto::decode(&bytes).map_err(|e| TransportError::Codec(e.to_string()))?;
            let response = handler(decoded);
            if duplicate {
                if let Ok(again) = proto::decode::<Request>(&bytes) {
                    let _ = handler(again);
                }
            }
            let bytes =
                proto::encode(&response).map_err(|e| TransportError::Codec(e.to_string()))?;
            let Fate::Deliver { delay, .. } = network.fate(&to, &from, bytes.len()) else {
                return futures::future::pending().await;
            };
            tokio::time::sleep(delay).await;
            proto::decode(&bytes).map_err(|e| TransportError::Codec(e.to_string()))
        };
        async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(TransportError::Timeout))
        }
        .boxed()
    }
}
