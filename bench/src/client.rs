//! One client session against the SPEC's `/kvs/<key>` API.
//!
//! A session sticks to one replica and carries its own causal metadata: it
//! sends back the latest metadata it was given (starting from `null`), as a
//! real client must for the store's guarantees to hold. Metadata is kept
//! opaque (`serde_json::Value`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The HTTP client every session of a run shares (one connection pool).
pub fn shared_http(max_sessions: usize, request_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .pool_max_idle_per_host(max_sessions.max(1))
        .tcp_nodelay(true)
        .build()
        .expect("building an HTTP client with static settings cannot fail")
}

pub struct Session {
    http: reqwest::Client,
    base: String,
    pub metadata: Value,
}

impl Session {
    pub fn new(http: reqwest::Client, addr: &str) -> Self {
        Session {
            http,
            base: format!("http://{addr}/kvs/"),
            metadata: Value::Null,
        }
    }

    pub async fn put(&mut self, key: &str, value: &Value) -> Outcome {
        self.send(reqwest::Method::PUT, key, Some(value)).await
    }

    pub async fn get(&mut self, key: &str) -> Outcome {
        self.send(reqwest::Method::GET, key, None).await
    }

    async fn send(&mut self, method: reqwest::Method, key: &str, value: Option<&Value>) -> Outcome {
        let body = serde_json::to_vec(&RequestBody {
            value,
            causal_metadata: &self.metadata,
        })
        .expect("serialising JSON values cannot fail");
        // Keys the bench makes are ASCII alphanumerics and '-', so the path
        // needs no percent-encoding.
        let resp = match self
            .http
            .request(method, format!("{}{key}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Error(classify(&e)),
        };
        let status = resp.status().as_u16();
        match status {
            200 | 201 => {}
            404 => return Outcome::NotFound,
            503 => return Outcome::Unavailable,
            s => return Outcome::Error(format!("http {s}")),
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Error(classify(&e)),
        };
        match serde_json::from_slice::<ResponseBody>(&bytes) {
            Ok(parsed) => {
                if let Some(m) = parsed.causal_metadata {
                    self.metadata = m;
                }
                Outcome::Ok(parsed.value)
            }
            Err(_) => Outcome::Error("bad json".into()),
        }
    }
}

/// Short, stable labels for transport errors, so reports can count them.
fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "transport".into()
    }
}
