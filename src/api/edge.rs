//! What every request goes through before routing: admission, a time bound,
//! request metrics and a debug log line.
//!
//! This is one hand-written tower layer around the whole router rather than a
//! stack of generic middlewares, because it runs on every request and the
//! stack was a fifth of a replica's CPU per request in the profile
//! (`bench/RESULTS.md`): each `from_fn` middleware boxes the rest of the
//! request's future, the trace layer builds a span per request, and label
//! sets were hashed into the metrics registry on every call. Here:
//!
//! * **Admission.** At most `max_connections` public requests are handled at
//!   once; more wait for a slot (bounded by the time limit below). Internal
//!   (replica-to-replica) requests are not counted against it, so clients
//!   cannot starve the heartbeats that keep the view correct. A connection
//!   carries one HTTP/1 request at a time, so when `max_connections` is at
//!   least `max_open_connections` (the defaults) the cap cannot be reached
//!   and no slot is taken: the semaphore's counter and its release lock would
//!   be cache lines every request on every core writes, for nothing.
//! * **Time bound.** A public request that has not been answered within
//!   `request_timeout_ms` (queueing included) gets `503 Request timed out`.
//!   The timer is only armed if the request does not complete on its first
//!   poll, which is the common case for a replica that is caught up.
//! * **Metrics.** `hearsay_http_requests_total{endpoint,method,status}` and
//!   `hearsay_http_request_duration_seconds{endpoint,method}`, tallied per
//!   thread and folded into the exporter when `/metrics` is scraped (exact:
//!   a scrape counts every request answered before it), so a request writes
//!   no cache line another core writes.
//! * **Log.** One `debug` event per request (method, path, status, µs).
//!
//! The no-allocation fast path is no slot (or an uncontended one) plus a
//! handler that finishes without waiting; queueing boxes one future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::{Layer, Service, ServiceExt};

use super::ApiError;
use crate::telemetry::{self, names};

/// Wraps a service (the router) in the edge.
#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None` when the cap cannot be reached (see the module docs).
    slots: Option<Arc<Semaphore>>,
    timeout: Duration,
}

impl EdgeLayer {
    /// `max_in_flight` public requests at once, each answered within
    /// `timeout`, on a server that keeps at most `max_open_connections`
    /// HTTP/1 connections open.
    pub fn new(max_in_flight: usize, max_open_connections: usize, timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let reachable = max_in_flight < max_open_connections;
        EdgeLayer {
            shared: Arc::new(Shared {
                slots: reachable.then(|| Arc::new(Semaphore::new(max_in_flight))),
                timeout,
            }),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`EdgeLayer`] produces.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let endpoint = Endpoint::of(request.uri().path());
        let method = MethodLabel::of(request.method());
        let path_for_log =
            tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().path().to_string());
        // Replica-to-replica requests carry their own client-side timeouts
        // and must not queue behind clients: no slot, no time bound.
        let public = endpoint != Endpoint::Internal;
        let timeout = public.then_some(self.shared.timeout);
        let slots = self.shared.slots.as_ref().filter(|_| public);
        let work = match slots.map(|slots| (slots, slots.clone().try_acquire_owned())) {
            None => Work::Running {
                future: self.inner.call(request),
                slot: None,
            },
            Some((_, Ok(slot))) => Work::Running {
                future: self.inner.call(request),
                slot: Some(slot),
            },
            Some((slots, Err(_))) => {
                // Every slot is taken: wait for one, then route. The service
                // was polled ready for this call; the clone used later is
                // readied by `oneshot`.
                let slots = slots.clone();
                let inner = self.inner.clone();
                Work::Queued {
                    future: Box::pin(async move {
                        let _slot = slots.acquire_owned().await;
                        match inner.oneshot(request).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }),
                }
            }
        };
        EdgeFuture {
            work,
            deadline: None,
            timeout,
            started,
            endpoint,
            method,
            path_for_log,
        }
    }
}

pin_project! {
    /// The response future of [`Edge`].
    pub struct EdgeFuture<F> {
        #[pin]
        work: Work<F>,
        #[pin]
        deadline: Option<Sleep>,
        timeout: Option<Duration>,
        started: Instant,
        endpoint: Endpoint,
        method: MethodLabel,
        path_for_log: Option<String>,
    }
}

pin_project! {
    #[project = WorkProjection]
    enum Work<F> {
        Running {
            #[pin]
            future: F,
            // Held until the answer is ready; dropping it admits the next request.
            slot: Option<OwnedSemaphorePermit>,
        },
        Queued {
            future: BoxFuture<'static, Response>,
        },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.work.project() {
            WorkProjection::Running { future, .. } => future.poll(cx).map(|result| match result {
                Ok(response) => response,
                Err(never) => match never {},
            }),
            WorkProjection::Queued { future } => future.as_mut().poll(cx),
        };
        let response = match polled {
            Poll::Ready(response) => response,
            Poll::Pending => {
                let Some(limit) = *this.timeout else {
                    return Poll::Pending;
                };
                if this.deadline.is_none() {
                    let at = tokio::time::Instant::from_std(*this.started + limit);
                    this.deadline.set(Some(tokio::time::sleep_until(at)));
                }
                let deadline = this.deadline.as_pin_mut().expect("armed just above");
                match deadline.poll(cx) {
                    Poll::Ready(()) => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, super::ERR_TIMED_OUT)
                            .into_response()
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        record_request(*this.endpoint, *this.method, status, elapsed);
        if let Some(path) = this.path_for_log.as_deref() {
            tracing::debug!(
                method = this.method.as_str(),
                path,
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request"
            );
        }
        Poll::Ready(Ok(response))
    }
}

// --------------------------------------------------------------------------
// Labels
// --------------------------------------------------------------------------

/// The `endpoint` label: the route family a path belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Kvs,
    Internal,
    View,
    Members,
    Health,
    Ready,
    Metrics,
    OpenApi,
    Unknown,
}

/// Every endpoint label, in discriminant order.
const ENDPOINTS: [Endpoint; Endpoint::COUNT] = [
    Endpoint::Kvs,
    Endpoint::Internal,
    Endpoint::View,
    Endpoint::Members,
    Endpoint::Health,
    Endpoint::Ready,
    Endpoint::Metrics,
    Endpoint::OpenApi,
    Endpoint::Unknown,
];

impl Endpoint {
    const COUNT: usize = 9;

    fn of(path: &str) -> Self {
        match path {
            "/view" => Endpoint::View,
            "/members" => Endpoint::Members,
            "/health" => Endpoint::Health,
            "/ready" => Endpoint::Ready,
            "/metrics" => Endpoint::Metrics,
            "/openapi.json" => Endpoint::OpenApi,
            "/kvs" => Endpoint::Kvs,
            _ if path.starts_with("/kvs/") => Endpoint::Kvs,
            _ if path.starts_with("/internal/") => Endpoint::Internal,
            _ => Endpoint::Unknown,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Kvs => "kvs",
            Endpoint::Internal => "internal",
            Endpoint::View => "view",
            Endpoint::Members => "members",
            Endpoint::Health => "health",
            Endpoint::Ready => "ready",
            Endpoint::Metrics => "metrics",
            Endpoint::OpenApi => "openapi",
            Endpoint::Unknown => "unknown",
        }
    }
}

/// The `method` label.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MethodLabel {
    Get,
    Put,
    Delete,
    Post,
    Other,
}

/// Every method label, in discriminant order.
const METHODS: [MethodLabel; MethodLabel::COUNT] = [
    MethodLabel::Get,
    MethodLabel::Put,
    MethodLabel::Delete,
    MethodLabel::Post,
    MethodLabel::Other,
];

impl MethodLabel {
    const COUNT: usize = 5;

    fn of(method: &Method) -> Self {
        match *method {
            Method::GET => MethodLabel::Get,
            Method::PUT => MethodLabel::Put,
            Method::DELETE => MethodLabel::Delete,
            Method::POST => MethodLabel::Post,
            _ => MethodLabel::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Put => "PUT",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Post => "POST",
            MethodLabel::Other => "other",
        }
    }
}

/// Statuses this server answers with, as static label strings; anything else
/// is counted through the registry's slower path.
const STATUSES: [(u16, &str); 9] = [
    (200, "200"),
    (201, "201"),
    (400, "400"),
    (401, "401"),
    (404, "404"),
    (405, "405"),
    (413, "413"),
    (500, "500"),
    (503, "503"),
];

/// Metric handles, resolved on first use of each label combination (so that
/// `/metrics` lists only combinations that occurred) and reused after.
#[derive(Default)]
struct RequestMetrics {
    requests: [[[OnceLock<Counter>; STATUSES.len()]; MethodLabel::COUNT]; Endpoint::COUNT],
    durations: [[OnceLock<Histogram>; MethodLabel::COUNT]; Endpoint::COUNT],
}

/// The duration histogram's bucket bounds, in seconds (`+Inf` comes on top).
const DURATION_BUCKETS: usize = telemetry::HTTP_DURATION_BUCKETS.len() + 1;

/// One thread's request counts since the last fold: per label combination,
/// requests by status, and per duration bucket the count and the sum of
/// the durations that fell in it.
#[derive(Default)]
struct Tally {
    requests: [[[u64; STATUSES.len()]; MethodLabel::COUNT]; Endpoint::COUNT],
    durations: [[[(u64, f64); DURATION_BUCKETS]; MethodLabel::COUNT]; Endpoint::COUNT],
}

/// Every thread's tally, for [`fold_request_metrics`]. Bounded by the
/// threads that ever answered a request (the runtime's workers).
static TALLIES: Mutex<Vec<Arc<Mutex<Tally>>>> = Mutex::new(Vec::new());

/// The process's handles (the recorder is process-wide too).
static HANDLES: OnceLock<RequestMetrics> = OnceLock::new();

thread_local! {
    /// This thread's tally. Its lock is taken by this thread for every
    /// request and by a scrape now and then, so it is never contended and
    /// its cache line stays with this core: a counter and a histogram
    /// sample in the exporter are atomics every core writes, which cost
    /// ~3 % of a replica's CPU per GET (`bench/RESULTS.md`, "Per-thread
    /// request metrics").
    static TALLY: Arc<Mutex<Tally>> = {
        let tally = Arc::new(Mutex::new(Tally::default()));
        TALLIES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(tally.clone());
        tally
    };
}

/// Moves every thread's request counts and durations into the exporter.
/// `/metrics` calls it before rendering, so a scrape sees every request
/// answered before it. A bucket's samples go in as their mean, which lies
/// in the same bucket (clamped there against rounding), so counts and
/// bucket counts stay exact and the sum exact up to that rounding.
pub fn fold_request_metrics() {
    let tallies: Vec<Arc<Mutex<Tally>>> = TALLIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let handles = HANDLES.get_or_init(RequestMetrics::default);
    for tally in tallies {
        let taken = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
        for e in 0..Endpoint::COUNT {
            for m in 0..MethodLabel::COUNT {
                for (s, &count) in taken.requests[e][m].iter().enumerate() {
                    if count > 0 {
                        handles.counter(e, m, s).increment(count);
                    }
                }
                for (b, &(count, sum)) in taken.durations[e][m].iter().enumerate() {
                    if count > 0 {
                        let mean = (sum / count as f64).clamp(bucket_floor(b), bucket_ceiling(b));
                        handles
                            .histogram(e, m)
                            .record_many(mean, usize::try_from(count).unwrap_or(usize::MAX));
                    }
                }
            }
        }
    }
}

impl RequestMetrics {
    fn counter(&self, e: usize, m: usize, s: usize) -> &Counter {
        self.requests[e][m][s].get_or_init(|| {
            metrics::counter!(names::HTTP_REQUESTS,
                "endpoint" => ENDPOINTS[e].as_str(), "method" => METHODS[m].as_str(),
                "status" => STATUSES[s].1)
        })
    }

    fn histogram(&self, e: usize, m: usize) -> &Histogram {
        self.durations[e][m].get_or_init(|| {
            metrics::histogram!(names::HTTP_DURATION,
                "endpoint" => ENDPOINTS[e].as_str(), "method" => METHODS[m].as_str())
        })
    }
}

/// The least value bucket `b` holds (its bounds are `(previous, own]`).
fn bucket_floor(b: usize) -> f64 {
    b.checked_sub(1).map_or(0.0, |below| {
        telemetry::HTTP_DURATION_BUCKETS[below].next_up()
    })
}

/// The greatest value bucket `b` holds (`+Inf` for the last).
fn bucket_ceiling(b: usize) -> f64 {
    telemetry::HTTP_DURATION_BUCKETS
        .get(b)
        .copied()
        .unwrap_or(f64::INFINITY)
}

/// Counts one answered request in this thread's tally.
fn record_request(endpoint: Endpoint, method: MethodLabel, status: StatusCode, took: Duration) {
    let (e, m) = (endpoint as usize, method as usize);
    let seconds = took.as_secs_f64();
    let bucket = telemetry::HTTP_DURATION_BUCKETS
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(DURATION_BUCKETS - 1);
    let known = STATUSES
        .iter()
        .position(|(code, _)| *code == status.as_u16());
    TALLY.with(|tally| {
        let mut tally = tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(s) = known {
            tally.requests[e][m][s] += 1;
        }
        let (count, sum) = &mut tally.durations[e][m][bucket];
        *count += 1;
        *sum += seconds;
    });
    if known.is_none() {
        // A status this server does not answer with on its own (the
        // slower registry path; rare).
        metrics::counter!(names::HTTP_REQUESTS,
            "endpoint" => endpoint.as_str(), "method" => method.as_str(),
            "status" => status.as_u16().to_string())
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_endpoint_label() {
        for (path, endpoint) in [
            ("/kvs/x", Endpoint::Kvs),
            ("/kvs", Endpoint::Kvs),
            ("/kvs/", Endpoint::Kvs),
            ("/internal/pull", Endpoint::Internal),
            ("/view", Endpoint::View),
            ("/members", Endpoint::Members),
            ("/health", Endpoint::Health),
            ("/ready", Endpoint::Ready),
            ("/metrics", Endpoint::Metrics),
            ("/openapi.json", Endpoint::OpenApi),
            ("/kvsx", Endpoint::Unknown),
            ("/internal", Endpoint::Unknown),
            ("/", Endpoint::Unknown),
        ] {
            assert_eq!(Endpoint::of(path), endpoint, "{path}");
        }
    }

    #[test]
    fn folded_request_metrics_keep_counts_buckets_and_sum_exact() {
        let handle = telemetry::prometheus();
        // A label combination no other test answers.
        let (endpoint, method) = (Endpoint::OpenApi, MethodLabel::Post);
        let took = [0.00003, 0.00007, 0.0003, 3.0];
        let recording = std::thread::spawn(move || {
            for seconds in took {
                let status = StatusCode::METHOD_NOT_ALLOWED;
                record_request(endpoint, method, status, Duration::from_secs_f64(seconds));
            }
        });
        recording.join().unwrap();
        for seconds in [0.0004, 0.0004] {
            record_request(
                endpoint,
                method,
                StatusCode::METHOD_NOT_ALLOWED,
                Duration::from_secs_f64(seconds),
            );
        }
        fold_request_metrics();
        let text = handle.render();
        let line = |name: &str, extra: &str| {
            let wanted = format!(r#"{name}{{endpoint="openapi",method="POST"{extra}}}"#);
            let found = text.lines().find(|l| l.starts_with(&wanted));
            let value = found.unwrap_or_else(|| panic!("no {wanted} in:\n{text}"));
            value.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
        };
        assert_eq!(line(names::HTTP_REQUESTS, r#",status="405""#), 6.0);
        let duration = names::HTTP_DURATION;
        assert_eq!(line(&format!("{duration}_count"), ""), 6.0);
        assert_eq!(line(&format!("{duration}_bucket"), r#",le="0.0001""#), 2.0);
        assert_eq!(line(&format!("{duration}_bucket"), r#",le="0.0005""#), 5.0);
        assert_eq!(line(&format!("{duration}_bucket"), r#",le="2.5""#), 5.0);
        assert_eq!(line(&format!("{duration}_bucket"), r#",le="+Inf""#), 6.0);
        let sum = line(&format!("{duration}_sum"), "");
        assert!((sum - 3.0012).abs() < 1e-6, "{sum}");
    }

    /// Calls an edge with `max_in_flight` and `max_open_connections` twice
    /// over a handler that never finishes, and says how many calls reached
    /// the handler.
    async fn handlers_reached(max_in_flight: usize, max_open_connections: usize) -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reached = Arc::new(AtomicUsize::new(0));
        let counted = reached.clone();
        let handler = tower::service_fn(move |_: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Response, Infallible>>()
        });
        let layer = EdgeLayer::new(max_in_flight, max_open_connections, Duration::from_secs(60));
        let mut edge = layer.layer(handler);
        let request = || {
            Request::get("/kvs/x")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let mut first = Box::pin(edge.call(request()));
        let mut second = Box::pin(edge.call(request()));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(first.as_mut().poll(&mut cx).is_pending());
            assert!(second.as_mut().poll(&mut cx).is_pending());
            tokio::task::yield_now().await;
        }
        reached.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn admission_queues_past_the_cap_only_when_connections_can_exceed_it() {
        // One slot, two connections possible: the second request waits.
        assert_eq!(handlers_reached(1, 2).await, 1);
        // One slot and one connection: a second request could only come from
        // a second connection, which the listener refuses; none is queued
        // here (this edge is called directly, as no server could).
        assert_eq!(handlers_reached(1, 1).await, 2);
        assert_eq!(handlers_reached(1024, 1024).await, 2);
    }
}
