//! Logs and metrics: `tracing` set-up and the Prometheus recorder.
//!
//! Metric names live in [`names`] so that code, docs and benchmarks agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod names {
    pub const HTTP_REQUESTS: &str = "hearsay_http_requests_total";
    pub const HTTP_DURATION: &str = "hearsay_http_request_duration_seconds";
    pub const CAUSAL_WAITS: &str = "hearsay_causal_waits_total";
    pub const CAUSAL_WAITS_SATISFIED: &str = "hearsay_causal_waits_satisfied_total";
    pub const CAUSAL_UNAVAILABLE: &str = "hearsay_causal_unavailable_total";
    pub const GOSSIP_ROUNDS: &str = "hearsay_gossip_rounds_total";
    pub const INTERNAL_MESSAGES: &str = "hearsay_internal_messages_total";
    pub const INTERNAL_BYTES: &str = "hearsay_internal_bytes_total";
    pub const INTERNAL_REFUSED: &str = "hearsay_internal_refused_total";
    /// Signed internal messages that failed verification; labels
    /// `direction` (`request`, `answer`), `key_id` (an installed id, else
    /// `unknown`) and `reason`.
    pub const INTERNAL_AUTH_FAILURES: &str = "hearsay_internal_auth_failures_total";
    /// Unsigned messages accepted in transitional mode; label `direction`.
    pub const INTERNAL_UNSIGNED: &str = "hearsay_internal_unsigned_accepted_total";
    /// Keyring reloads (SIGHUP); label `outcome` (`installed`, `refused`).
    pub const KEYRING_RELOADS: &str = "hearsay_keyring_reloads_total";
    pub const DELTA_VERSIONS_SENT: &str = "hearsay_delta_versions_sent_total";
    pub const DELTA_VERSIONS_RECEIVED: &str = "hearsay_delta_versions_received_total";
    /// Versions and admission records from peers refused as malformed or
    /// beyond the counter bounds; label `what` is `version` or `admission`.
    pub const PEER_DATA_REFUSED: &str = "hearsay_peer_data_refused_total";
    pub const VIEW_CHANGES: &str = "hearsay_view_changes_total";
    pub const LIVENESS_CHANGES: &str = "hearsay_liveness_changes_total";
    pub const STATE_TRANSFERS: &str = "hearsay_state_transfers_total";
    /// Values re-issued after a snapshot because a delete collected while
    /// this replica was away past the grace period may have beaten them.
    pub const WRITES_REISSUED: &str = "hearsay_writes_reissued_total";
    /// Lives this process started after its first (a peer knew a newer one).
    pub const NEW_LIVES: &str = "hearsay_new_lives_total";
    pub const TOMBSTONES_COLLECTED: &str = "hearsay_tombstones_collected_total";
    pub const KEYS: &str = "hearsay_keys";
    pub const TOMBSTONES: &str = "hearsay_tombstones";
    pub const VIEW_SIZE: &str = "hearsay_view_size";
    pub const MEMBERS: &str = "hearsay_members";
    pub const CLOCK_ENTRIES: &str = "hearsay_clock_entries";
    pub const READY: &str = "hearsay_ready";
    /// Batches written to the data directory (`data_dir`).
    pub const STORAGE_COMMITS: &str = "hearsay_storage_commits_total";
    /// Client writes released by those batches: over `STORAGE_COMMITS`,
    /// the writes that shared one commit (group commit).
    pub const STORAGE_WRITES_RELEASED: &str = "hearsay_storage_writes_released_total";
    /// Version records dropped as damaged when the data directory was opened.
    pub const STORAGE_DROPPED: &str = "hearsay_storage_records_dropped_total";
}

/// Installs the global `tracing` subscriber (once; later calls are no-ops).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in container logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds.
///
/// The exporter keeps every histogram sample in a queue until the next
/// render or upkeep; without this task a replica under load that nobody
/// scrapes would grow by 8 bytes per request without bound.
pub fn spawn_metrics_upkeep() -> tokio::task::JoinHandle<()> {
    let handle = prometheus();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// The request duration histogram's bucket bounds, in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::HTTP_DURATION.to_string()),
                    &HTTP_DURATION_BUCKETS,
                )
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (tests running several nodes
                // in one process): render from a private one instead.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// At most one log line per period for an event anyone on the network can
/// cause at will (a refused internal request): a log line per forged
/// message would let an unauthenticated sender fill the disk the logs go
/// to. The events in between are counted, and the next line says how many
/// were left out. Metrics still count every one.
pub struct LogThrottle {
    period_ms: u64,
    /// Milliseconds since [`monotonic_ms`]'s start before which no line is
    /// written.
    next_ms: AtomicU64,
    left_out: AtomicU64,
}

impl LogThrottle {
    pub const fn new(period_ms: u64) -> LogThrottle {
        LogThrottle {
            period_ms,
            next_ms: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: write a line now, `n` events since the last line were
    /// left out; `None`: leave this one out.
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Milliseconds since the first call, on a clock that never steps back.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod throttle_tests {
    use super::LogThrottle;

    #[test]
    fn one_line_per_period_and_the_next_counts_what_was_left_out() {
        let throttle = LogThrottle::new(1000);
        assert_eq!(throttle.admit(5), Some(0));
        for now in 6..=1004 {
            assert_eq!(throttle.admit(now), None, "at {now}");
        }
        assert_eq!(throttle.admit(1005), Some(999));
        assert_eq!(throttle.admit(1006), None);
        assert_eq!(throttle.admit(10_000), Some(1));
    }
}
