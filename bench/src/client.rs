//! One client session against hearsay's `/kvs/<key>` API (`docs/API.md`).
//!
//! A session sticks to one replica and carries its own causal metadata: it
//! sends back the latest metadata it was given (starting from `null`), as a
//! real client must for the store's guarantees to hold. Metadata is kept
//! opaque (`serde_json::Value`).
//!
//! Each session owns one HTTP/1.1 keep-alive connection driven by hyper's
//! low-level client, not a pooled high-level client: on two shared cores the
//! load generator's own CPU is taken from the server under test, and a
//! connection per session skips the pool's locking, URL parsing and request
//! layering (measured: the pooled client spent about 60 % of the machine to
//! drive the ceiling).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;

/// What one request came to, in the categories the reports count.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200/201: the operation took effect (for GET: the value).
    Ok(Option<Value>),
    /// 404 `Key does not exist`: a valid answer, counted separately.
    NotFound,
    /// 503 `Causal dependencies not satisfied`.
    Unavailable,
    /// Anything else: transport error, timeout or unexpected status.
    Error(String),
}

#[derive(Serialize)]
struct RequestBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
    #[serde(rename = "causal-metadata")]
    causal_metadata: &'a Value,
}

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    value: Option<Value>,
    #[serde(rename = "causal-metadata", default)]
    causal_metadata: Option<Value>,
}

/// Requests that take longer than this count as errors unless a session is
/// given another timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Session {
    addr: String,
    conn: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
    pub metadata: Value,
}

impl Session {
    pub fn new(addr: &str) -> Self {
        Self::with_timeout(addr, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(addr: &str, timeout: Duration) -> Self {
        Session {
            addr: addr.to_string(),
            conn: None,
            timeout,
            metadata: Value::Null,
        }
    }

    pub async fn put(&mut self, key: &str, value: &Value) -> Outcome {
        self.send(Method::PUT, key, Some(value)).await
    }

    pub async fn get(&mut self, key: &str) -> Outcome {
        self.send(Method::GET, key, None).await
    }

    async fn send(&mut self, method: Method, key: &str, value: Option<&Value>) -> Outcome {
        let body = serde_json::to_vec(&RequestBody {
            value,
            causal_metadata: &self.metadata,
        })
        .expect("serialising JSON values cannot fail");
        // Keys the bench makes are ASCII alphanumerics and '-', so the path
        // needs no percent-encoding.
        let request = Request::builder()
            .method(method)
            .uri(format!("/kvs/{key}"))
            .header(HOST, &self.addr)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request built from valid parts");
        let outcome = match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(Ok((status, bytes))) => self.interpret(status, &bytes),
            Ok(Err(kind)) => Outcome::Error(kind.into()),
            Err(_) => Outcome::Error("timeout".into()),
        };
        if let Outcome::Error(_) = outcome {
            // The connection may be half-way through a response or dead:
            // start the next request on a fresh one.
            self.conn = None;
        }
        outcome
    }

    /// Send one request on the session's connection (opening it if needed)
    /// and read the whole response. Errors are short labels for reports.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), &'static str> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|_| "connect")?;
            stream.set_nodelay(true).map_err(|_| "connect")?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "connect")?;
            // The connection task ends when the session drops its sender or
            // the server closes; its error, if any, shows up on the sender.
            tokio::spawn(connection);
            self.conn = Some(sender);
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.ready().await.map_err(|_| "transport")?;
        let response = conn.send_request(request).await.map_err(|_| "transport")?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body")?
            .to_bytes();
        Ok((status, bytes))
    }

    fn interpret(&mut self, status: u16, bytes: &[u8]) -> Outcome {
        match status {
            200 | 201 | 404 => {}
            503 => return Outcome::Unavailable,
            s => return Outcome::Error(format!("http {s}")),
        }
        // A 404 carries metadata too (it may cover a delete the session must
        // not see undone); the ceiling server's 404 has none.
        match serde_json::from_slice::<ResponseBody>(bytes) {
            Ok(parsed) => {
                if let Some(m) = parsed.causal_metadata.filter(|m| !m.is_null()) {
                    self.metadata = m;
                }
                if status == 404 {
                    Outcome::NotFound
                } else {
                    Outcome::Ok(parsed.value)
                }
            }
            Err(_) if status == 404 => Outcome::NotFound,
            Err(_) => Outcome::Error("bad json".into()),
        }
    }
}

/// Poll every replica (with null metadata) until `key` holds `value`; bounded.
pub async fn wait_visible(
    addrs: &[String],
    key: &str,
    value: &serde_json::Value,
    timeout: Duration,
) -> bool {
    let started = Instant::now();
    for addr in addrs {
        loop {
            if let Outcome::Ok(Some(v)) = Session::new(addr).get(key).await {
                if &v == value {
                    break;
                }
            }
            if started.elapsed() > timeout {
                eprintln!("warning: {key} not visible on {addr} within {timeout:?}");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    true
}
