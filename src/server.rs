//! Serving one replica over HTTP until told to stop, then leaving gracefully.
//!
//! What "told to stop" means is the caller's: the binary passes
//! [`termination_signal`] (SIGTERM/SIGINT), tests pass any future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api;
use crate::config::Config;
use crate::connections;
use crate::node::Node;
use crate::transport::http::{HttpTransport, Plane};

/// Binds, serves and joins the cluster; once `shutdown` resolves, drains,
/// hands off, leaves the cluster and returns.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Install the metrics recorder before anything counts, or early counts
    // (start-up, the first requests) would go to the no-op recorder.
    crate::telemetry::prometheus();
    crate::telemetry::spawn_metrics_upkeep();
    let bind = config.bind_address();
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let plane = Arc::new(Plane::from_config(&config)?);
    let transport = Arc::new(HttpTransport::new(
        plane.clone(),
        config.max_internal_body_bytes(),
    ));
    let node = Node::open(config, transport, rand::random())?;
    let incarnation = node.incarnation();
    let reloader = reload_keyring_on_sighup(plane.clone());
    let limits = connections::Limits::of(node.config());
    warn_if_descriptors_are_short(limits.max_open);
    let stop_accepting = CancellationToken::new();
    let (accepting, slots) = connections::spawn(
        listener,
        api::app(node.clone(), plane.clone()),
        limits,
        stop_accepting.clone(),
    );
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(address = %node.address(), %bind, incarnation, threads, view = ?node.config().view,
        internal_auth = plane.mode_name(), keys = ?plane.keyring().map(|k| k.ids()),
        protocol = plane.protocol(), "hearsay replica starting");
    let starter = {
        let node = node.clone();
        tokio::spawn(async move { node.start().await })
    };
    shutdown.await;
    info!("shutting down: draining, handing off, leaving");
    starter.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    node.leave().await;
    // Stop accepting, close idle connections, and give requests in flight a
    // moment to be answered: every connection slot back means all are done.
    stop_accepting.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        let _ = accepting.await;
        let _ = slots.acquire_many(limits.max_open as u32).await;
    })
    .await;
    info!("bye");
    Ok(())
}

/// Warns when the descriptor limit is below `max_open_connections` plus a
/// margin for the replica's own sockets: the cap would then never be reached
/// and accepting would fail instead (retried, but with no clear cause).
fn warn_if_descriptors_are_short(max_open: usize) {
    const OWN_DESCRIPTORS: u64 = 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = max_open as u64 + OWN_DESCRIPTORS;
    if limit.rlim_cur < wanted {
        warn!(
            descriptor_limit = limit.rlim_cur,
            max_open_connections = max_open,
            "the descriptor limit (ulimit -n) is below max_open_connections + {OWN_DESCRIPTORS}"
        );
    }
}

/// Reads the keyring file again on every SIGHUP, for key rotation without a
/// restart. A refused file leaves the keys in force (see [`Plane::reload`]).
///
/// The handler is installed before this returns, not when the task first
/// runs: until it is, SIGHUP's default action would end the process, and a
/// replica may already answer `/ready` by then.
fn reload_keyring_on_sighup(plane: Arc<Plane>) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            warn!(%error, "cannot install a SIGHUP handler: keyring reloads need a restart");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = plane.reload();
        }
    }))
}

/// Resolves on SIGTERM (docker stop) or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
