//! Serving under hostile connections, end to end with a real process: slow
//! or silent clients must not take a replica's descriptors.

mod support;

use std::time::{Duration, Instant};

use support::{holds_throughout, wait_until, Cluster, Http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Half a request header, then silence: the slowloris pattern.
const HALF_HEADER: &[u8] = b"GET /health HTTP/1.1\r\nHo";

/// Sends one whole `GET /health` on `stream` and returns the status line.
async fn health_over(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: hearsay\r\n\r\n")
        .await
        .expect("writing a request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("reading an answer");
        assert!(n > 0, "connection closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_string()
}

/// Reads `stream` until the replica closes it (end of stream or reset) or
/// `limit` has passed; returns what was read and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (read, closed)
}

#[tokio::test]
async fn half_open_connections_neither_starve_health_nor_stay_open() {
    let header_timeout = Duration::from_millis(1000);
    let cluster = Cluster::builder(1)
        .descriptor_limit(128)
        .set("max_open_connections", 32)
        .set("header_read_timeout_ms", header_timeout.as_millis())
        .start()
        .await;
    let addr = cluster.addr(0).to_string();

    // A keep-alive connection that has finished a request is idle, not
    // reading a header: the header timeout must not close it.
    let mut keep_alive = TcpStream::connect(&addr).await.expect("connecting");
    assert!(health_over(&mut keep_alive)
        .await
        .starts_with("HTTP/1.1 200"));

    // Far more half-open connections than the cap, and than the replica's
    // descriptors. Those beyond the cap may be closed before the write.
    // Connected at once, each bounded: a full accept queue drops further
    // handshakes, which the kernel then retries for minutes.
    let attempts = (0..300).map(|_| async {
        let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr))
            .await
            .ok()?
            .ok()?;
        let _ = stream.write_all(HALF_HEADER).await;
        Some(stream)
    });
    let mut silent: Vec<TcpStream> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(silent.len() >= 100, "only {} connected", silent.len());

    // /health keeps answering while they are held: at worst after waiting
    // for the header timeout to free a connection slot.
    let http = Http::with_timeout(Duration::from_secs(1));
    let within = header_timeout * 3;
    holds_throughout(Duration::from_secs(4), Duration::from_millis(250), || {
        let http = http.clone();
        let addr = addr.clone();
        async move {
            let started = Instant::now();
            loop {
                match http
                    .try_send("GET", &addr, "/health", support::Body::None)
                    .await
                {
                    Ok(reply) if reply.status == 200 => return Ok(()),
                    other if started.elapsed() >= within => {
                        return Err(format!("/health not answered within {within:?}: {other:?}"))
                    }
                    _ => tokio::time::sleep(support::POLL).await,
                }
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Every half-open connection has been closed by the replica (end of
    // stream or reset), none is still waiting for the rest of its header.
    let mut open = silent.len();
    wait_until(
        header_timeout * 5,
        "every half-open connection is closed",
        || {
            let mut still_open = 0;
            for stream in &mut silent {
                let mut buf = [0u8; 64];
                match stream.try_read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
                    _ => {}
                }
            }
            open = still_open;
            std::future::ready(still_open == 0)
        },
    )
    .await;
    assert_eq!(open, 0);

    // The idle keep-alive connection outlived the header timeout.
    assert!(health_over(&mut keep_alive)
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_after_a_request_is_closed() {
    let idle = Duration::from_millis(500);
    let cluster = Cluster::builder(1)
        .set("idle_timeout_ms", idle.as_millis())
        .start()
        .await;
    let mut stream = TcpStream::connect(cluster.addr(0))
        .await
        .expect("connecting");
    assert!(health_over(&mut stream).await.starts_with("HTTP/1.1 200"));

    // The answer has been read; the connection now sits idle and must be
    // closed by the replica (end of stream or reset) once the idle timeout
    // has passed, with a generous margin for a slow machine.
    let (_, closed) = read_until_closed(&mut stream, idle * 10).await;
    assert!(
        closed,
        "an idle keep-alive connection stayed open for {:?} with idle_timeout_ms = {}",
        idle * 10,
        idle.as_millis()
    );
}

#[tokio::test]
async fn a_connection_idle_after_a_request_that_outlasted_the_header_timeout_is_closed() {
    let (header, idle) = (Duration::from_millis(300), Duration::from_millis(500));
    let cluster = Cluster::builder(1)
        .set("header_read_timeout_ms", header.as_millis())
        .set("idle_timeout_ms", idle.as_millis())
        .set("body_read_timeout_ms", 10_000)
        .start()
        .await;
    let mut stream = TcpStream::connect(cluster.addr(0))
        .await
        .expect("connecting");
    // The header at once, the body only after the header timeout has
    // passed: the connection is busy (not reading a header) meanwhile, and
    // must then be watched as idle again.
    let body = br#"{"value": 1}"#;
    let head = format!(
        "PUT /kvs/slow HTTP/1.1\r\nHost: hearsay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("header");
    tokio::time::sleep(header * 3).await;
    stream.write_all(body).await.expect("body");
    let (answer, closed) = read_until_closed(&mut stream, idle * 10).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 201"), "answer: {text}");
    assert!(
        closed,
        "the connection stayed open for {:?} after its answer (idle_timeout_ms = {})",
        idle * 10,
        idle.as_millis()
    );
}
