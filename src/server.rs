//! Serving one replica over HTTP until SIGTERM/SIGINT, then leaving gracefully.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api;
use crate::config::Config;
use crate::node::Node;
use crate::transport::http::HttpTransport;

/// A fresh incarnation: milliseconds since the Unix epoch, so a restarted
/// process (same address) always has a greater one than its earlier life.
pub fn new_incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        .max(1)
}

/// Binds, serves, joins the cluster; on a signal drains, hands off and exits.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the metrics recorder before anything counts, or early counts
    // (start-up, the first requests) would go to the no-op recorder.
    crate::telemetry::prometheus();
    crate::telemetry::spawn_metrics_upkeep();
    let bind = config.bind_address();
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let incarnation = new_incarnation();
    let transport = Arc::new(HttpTransport::new(
        config.cluster_key.clone(),
        config.max_internal_body_bytes(),
    ));
    let node = Node::new(config, transport, incarnation, rand::random());
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(api::app(node.clone()));
    let stop_accepting = CancellationToken::new();
    let graceful = stop_accepting.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
    });
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(address = %node.address(), %bind, incarnation, threads, view = ?node.config().view, "hearsay replica starting");
    let starter = {
        let node = node.clone();
        tokio::spawn(async move { node.start().await })
    };
    termination_signal().await;
    info!("signal received: draining, handing off, leaving");
    starter.abort();
    node.leave().await;
    stop_accepting.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), server).await;
    info!("bye");
    Ok(())
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
