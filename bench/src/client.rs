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
//!
//! For comparison the same session also speaks to two other stores, chosen by
//! a scheme on the target address: `redis://IP:PORT` (RESP `GET`/`SET` on
//! one TCP connection, one command outstanding) and `etcd://IP:PORT` (etcd's
//! v3 HTTP/JSON gateway, `/v3/kv/put` and `/v3/kv/range` with base64 keys
//! and values). Neither carries causal metadata.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
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

/// The API a session speaks, from the target's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Hearsay,
    Redis,
    Etcd,
}

pub struct Session {
    addr: String,
    proto: Proto,
    conn: Option<SendRequest<Full<Bytes>>>,
    redis: Option<BufStream<TcpStream>>,
    timeout: Duration,
    pub metadata: Value,
}

/// A Redis reply larger than this is refused (the bench's values are far smaller).
const MAX_REDIS_REPLY: usize = 64 << 20;

impl Session {
    pub fn new(addr: &str) -> Self {
        Self::with_timeout(addr, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(addr: &str, timeout: Duration) -> Self {
        let (proto, addr) = if let Some(a) = addr.strip_prefix("redis://") {
            (Proto::Redis, a)
        } else if let Some(a) = addr.strip_prefix("etcd://") {
            (Proto::Etcd, a)
        } else {
            (Proto::Hearsay, addr)
        };
        Session {
            addr: addr.to_string(),
            proto,
            conn: None,
            redis: None,
            timeout,
            metadata: Value::Null,
        }
    }

    pub async fn put(&mut self, key: &str, value: &Value) -> Outcome {
        match self.proto {
            Proto::Hearsay => self.send(Method::PUT, key, Some(value)).await,
            Proto::Redis => self.redis_command(key, Some(value)).await,
            Proto::Etcd => self.etcd(key, Some(value)).await,
        }
    }

    pub async fn get(&mut self, key: &str) -> Outcome {
        match self.proto {
            Proto::Hearsay => self.send(Method::GET, key, None).await,
            Proto::Redis => self.redis_command(key, None).await,
            Proto::Etcd => self.etcd(key, None).await,
        }
    }

    /// `SET key value` or `GET key` over RESP; the value's text is stored as is.
    async fn redis_command(&mut self, key: &str, value: Option<&Value>) -> Outcome {
        let text = value.map(value_text);
        let mut cmd = Vec::with_capacity(64 + key.len() + text.as_ref().map_or(0, |t| t.len()));
        let args: Vec<&[u8]> = match &text {
            Some(t) => vec![b"SET", key.as_bytes(), t.as_bytes()],
            None => vec![b"GET", key.as_bytes()],
        };
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            cmd.extend_from_slice(a);
            cmd.extend_from_slice(b"\r\n");
        }
        let outcome = match tokio::time::timeout(self.timeout, self.redis_exchange(&cmd)).await {
            Ok(Ok(o)) => o,
            Ok(Err(kind)) => Outcome::Error(kind.into()),
            Err(_) => Outcome::Error("timeout".into()),
        };
        if let Outcome::Error(_) = outcome {
            self.redis = None;
        }
        outcome
    }

    async fn redis_exchange(&mut self, cmd: &[u8]) -> Result<Outcome, &'static str> {
        if self.redis.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|_| "connect")?;
            stream.set_nodelay(true).map_err(|_| "connect")?;
            self.redis = Some(BufStream::new(stream));
        }
        let conn = self.redis.as_mut().expect("connected above");
        conn.write_all(cmd).await.map_err(|_| "transport")?;
        conn.flush().await.map_err(|_| "transport")?;
        let mut line = String::new();
        conn.read_line(&mut line).await.map_err(|_| "transport")?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+') => Ok(Outcome::Ok(None)),
            Some(b'-') => Ok(Outcome::Error("redis error".into())),
            Some(b'$') if line == "$-1" => Ok(Outcome::NotFound),
            Some(b'$') => {
                let len: usize = line[1..].parse().map_err(|_| "bad reply")?;
                if len > MAX_REDIS_REPLY {
                    return Err("bad reply");
                }
                let mut buf = vec![0; len + 2];
                conn.read_exact(&mut buf).await.map_err(|_| "transport")?;
                buf.truncate(len);
                let text = String::from_utf8(buf).map_err(|_| "bad reply")?;
                Ok(Outcome::Ok(Some(Value::String(text))))
            }
            _ => Err("bad reply"),
        }
    }

    /// A put or a range read through etcd's v3 JSON gateway. The value is
    /// not decoded (the load never looks at it): a GET is found or not.
    async fn etcd(&mut self, key: &str, value: Option<&Value>) -> Outcome {
        let (path, body) = match value {
            Some(v) => (
                "/v3/kv/put",
                format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    base64(key.as_bytes()),
                    base64(value_text(v).as_bytes())
                ),
            ),
            None => (
                "/v3/kv/range",
                format!("{{\"key\":\"{}\"}}", base64(key.as_bytes())),
            ),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, &self.addr)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request built from valid parts");
        let outcome = match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(Ok((200, bytes))) if value.is_none() => {
                // A range answer lists `kvs` only when the key exists.
                if memmem(&bytes, b"\"kvs\"") {
                    Outcome::Ok(None)
                } else {
                    Outcome::NotFound
                }
            }
            Ok(Ok((200, _))) => Outcome::Ok(None),
            Ok(Ok((s, _))) => Outcome::Error(format!("http {s}")),
            Ok(Err(kind)) => Outcome::Error(kind.into()),
            Err(_) => Outcome::Error("timeout".into()),
        };
        if let Outcome::Error(_) = outcome {
            self.conn = None;
        }
        outcome
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

/// The bytes another store keeps for a JSON value: a string's text, else its JSON.
fn value_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Standard base64 with padding (what etcd's gateway expects for bytes).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"k17"), "azE3");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
