//! Accepting and serving HTTP/1 connections with every wait bounded, so that
//! slow or silent clients cannot hold a replica's descriptors.
//!
//! One listener serves the public API and `/internal/*` alike, so these
//! bounds protect replica-to-replica traffic too. Per connection:
//!
//! * **Open connections.** At most `max_open_connections` at once, one
//!   semaphore permit each. A connection beyond the cap is accepted and closed
//!   at once: the client learns immediately (a reset) instead of waiting in
//!   the kernel's backlog behind the very connections that fill the cap, and
//!   the descriptor is freed at once.
//! * **Header.** Once the first byte of a request has arrived, the whole
//!   header must follow within `header_read_timeout_ms`, or the connection is
//!   closed. (hyper's own header timeout also runs while a keep-alive
//!   connection merely waits for its next request, which would make it the
//!   idle timeout too; hence this watchdog.)
//! * **Body.** The body must have arrived within `body_read_timeout_ms` of
//!   the header; reading it past that fails, the request is answered `408`
//!   and the connection closed. Public requests are also bounded as a whole
//!   by `request_timeout_ms` in the edge; `/internal/*` is bounded only here.
//! * **Idle.** A keep-alive connection without a request for
//!   `idle_timeout_ms` is closed, and so is one whose client has taken no
//!   byte of an answer for as long. The default (60 s) outlasts the 30 s a
//!   replica keeps its own idle connections to a peer, so a peer never picks
//!   a pooled connection this side is closing.
//!
//! Graceful shutdown: when `stop` is cancelled the listener is closed, idle
//! connections are closed, and requests in flight are answered first.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::config::Config;

/// The bounds applied to every connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
    pub max_open: usize,
}

impl Limits {
    pub fn of(config: &Config) -> Limits {
        Limits {
            header_read: Duration::from_millis(config.header_read_timeout_ms),
            body_read: Duration::from_millis(config.body_read_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
            max_open: config.max_open_connections,
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then returns the
/// semaphore of connection slots, which is whole again once every connection
/// has finished (the caller decides how long to wait for that).
pub fn spawn<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    stop: CancellationToken,
) -> (tokio::task::JoinHandle<()>, Arc<Semaphore>)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_open));
    let accepting = {
        let slots = slots.clone();
        tokio::spawn(accept_loop(listener, app, limits, stop, slots))
    };
    (accepting, slots)
}

async fn accept_loop<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(serve_connection(
                        stream,
                        app.clone(),
                        limits,
                        stop.clone(),
                        slot,
                    ));
                }
                Err(_) => {
                    // Over the cap: closing at once frees the descriptor.
                    drop(stream);
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            refused,
                            max_open_connections = limits.max_open,
                            "connection refused: too many open connections"
                        );
                    }
                }
            },
            Err(error) => {
                // Out of descriptors (or another resource): the connections
                // holding them are bounded in time, so wait a little for one
                // to close instead of spinning on accept.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// What a connection is doing, for the watchdog.
const IDLE: u8 = 0;
const READING_HEADER: u8 = 1;
const BUSY: u8 = 2;

/// One connection's activity, shared by its socket, its service and its
/// watchdog. Times are milliseconds since `opened`.
struct Activity {
    opened: Instant,
    /// The bounds this connection is held to.
    limits: Limits,
    phase: AtomicU8,
    /// When the current phase began.
    since_ms: AtomicU64,
    /// When a write of an answer last found the socket full; `u64::MAX` when
    /// writes are flowing.
    write_stalled_ms: AtomicU64,
    /// The body of the current request did not arrive in time.
    body_timed_out: AtomicBool,
    /// When the watchdog's timer will fire (ms since `opened`; `NOT_ARMED`
    /// when it has none). The watchdog may wake before the deadline and
    /// re-arm; it must never wake after it.
    armed_ms: AtomicU64,
    /// Wakes the watchdog when the deadline moves before `armed_ms`.
    changed: Notify,
}

const NOT_STALLED: u64 = u64::MAX;
const NOT_ARMED: u64 = u64::MAX;

impl Activity {
    fn new(limits: Limits) -> Activity {
        Activity {
            opened: Instant::now(),
            limits,
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
            write_stalled_ms: AtomicU64::new(NOT_STALLED),
            body_timed_out: AtomicBool::new(false),
            armed_ms: AtomicU64::new(NOT_ARMED),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Enters `phase` now; returns when (ms since `opened`).
    fn enter(&self, phase: u8) -> u64 {
        let now = self.now_ms();
        self.since_ms.store(now, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        now
    }

    /// Wakes the watchdog if a deadline `limit` after `from_ms` comes before
    /// its timer. Under steady traffic each new deadline is later than the
    /// armed one, so a request costs neither a wake-up nor a timer change.
    fn deadline_set(&self, from_ms: u64, limit: Duration) {
        let due = from_ms.saturating_add(limit.as_millis() as u64);
        if due < self.armed_ms.load(Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    /// The instant this connection is to be closed, as things stand.
    fn deadline(&self) -> Option<Instant> {
        let limits = &self.limits;
        let at = |ms: u64, limit: Duration| self.opened + Duration::from_millis(ms) + limit;
        let since = self.since_ms.load(Ordering::Relaxed);
        match self.phase.load(Ordering::Acquire) {
            IDLE => Some(at(since, limits.idle)),
            READING_HEADER => Some(at(since, limits.header_read)),
            _ => match self.write_stalled_ms.load(Ordering::Relaxed) {
                NOT_STALLED => None,
                stalled => Some(at(stalled, limits.idle)),
            },
        }
    }
}

async fn serve_connection<S>(
    stream: TcpStream,
    app: S,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::new(limits));
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let since = activity.enter(BUSY);
            activity.body_timed_out.store(false, Ordering::Relaxed);
            let request = request.map(|incoming| {
                axum::body::Body::new(DeadlineBody {
                    inner: incoming,
                    due: activity.opened + Duration::from_millis(since) + limits.body_read,
                    timer: None,
                    activity: activity.clone(),
                })
            });
            let answered = app.clone().oneshot(request);
            let activity = activity.clone();
            async move {
                let response = match answered.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                let response = if activity.body_timed_out.load(Ordering::Relaxed) {
                    body_too_slow()
                } else {
                    response
                };
                Ok::<_, Infallible>(response.map(|body| Tracked { body, activity }))
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        // The watchdog below bounds the header; hyper's timer would also
        // close keep-alive connections waiting for their next request.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    // One timer for the connection's life. It is re-armed only when it has
    // fired (then the deadline is checked and the timer set to the current
    // one) or when the deadline moves before it (`Activity::deadline_set`
    // wakes this loop): a request that merely pushes the deadline later
    // changes nothing here.
    let watchdog = tokio::time::sleep_until(far_future());
    tokio::pin!(watchdog);
    let mut armed = false;
    let mut draining = false;
    loop {
        let deadline = activity.deadline();
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // Dropping the connection closes the socket.
            return;
        }
        let due = deadline.unwrap_or_else(far_future);
        if !armed || due < watchdog.deadline() {
            watchdog.as_mut().reset(due);
            armed = true;
            let due_ms = due.saturating_duration_since(activity.opened).as_millis();
            activity.armed_ms.store(
                u64::try_from(due_ms).unwrap_or(NOT_ARMED),
                Ordering::Relaxed,
            );
        }
        let changed = activity.changed.notified();
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = changed => {}
            _ = watchdog.as_mut(), if armed => armed = false,
            _ = stop.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A watchdog instant that stands for "no deadline" (a busy connection).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// The answer when a request's body did not arrive in time (the handler saw
/// a failed read and answered something less accurate).
fn body_too_slow() -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(serde_json::json!({ "error": "Request body was not received in time" })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pin_project! {
    /// The socket of one connection: reports the first byte of a request
    /// and stalled writes to the watchdog.
    struct Watched {
        #[pin]
        stream: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if buf.filled().len() > before && this.activity.phase.load(Ordering::Acquire) == IDLE {
            let since = this.activity.enter(READING_HEADER);
            this.activity
                .deadline_set(since, this.activity.limits.header_read);
        }
        polled
    }
}

impl Watched {
    fn note_write<T>(&self, polled: &Poll<io::Result<T>>) {
        let stalled = &self.activity.write_stalled_ms;
        if polled.is_pending() {
            if stalled.load(Ordering::Relaxed) == NOT_STALLED {
                let now = self.activity.now_ms();
                stalled.store(now, Ordering::Relaxed);
                self.activity.deadline_set(now, self.activity.limits.idle);
            }
        } else if stalled.load(Ordering::Relaxed) != NOT_STALLED {
            stalled.store(NOT_STALLED, Ordering::Relaxed);
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().stream.poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().stream.poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

pin_project! {
    /// A request body that fails once its deadline has passed. The timer is
    /// made only when a read has to wait: a body that arrived with its
    /// header (nearly all of them) costs none.
    struct DeadlineBody {
        #[pin]
        inner: Incoming,
        due: Instant,
        timer: Option<Pin<Box<Sleep>>>,
        activity: Arc<Activity>,
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*this.due)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    this.activity.body_timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err("request body was not received in time".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body; when hyper drops it (written, or the connection gone)
/// the connection is idle again.
struct Tracked {
    body: axum::body::Body,
    activity: Arc<Activity>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity
            .write_stalled_ms
            .store(NOT_STALLED, Ordering::Relaxed);
        let since = self.activity.enter(IDLE);
        // A watchdog that woke while the request was busy armed no timer.
        self.activity.deadline_set(since, self.activity.limits.idle);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
