//! HTTP client sessions that speak hearsay's `/kvs` API (`docs/API.md`) and
//! record every operation into a [`Recorder`].
//!
//! A [`Session`] is one chain of causal metadata: it sends the metadata of
//! its last successful answer (a 404 `Key does not exist` included: its
//! metadata may cover the delete it saw) and replaces it with the one that
//! comes back; the history records it too, for the checker.
//! This module decides how an answer maps to an [`Outcome`]: a status the
//! contract documents as an error (503 and the 4xx) or a refused connection is
//! a definite failure; a timeout or a broken connection after the request may
//! have left is *unknown* for writes (the replica may have applied it) and a
//! failure for reads (a read has no effect either way).

use std::time::Duration;

use serde_json::{json, Value};

use crate::history::{Op, OpKind, Outcome, Recorder, Reply};

/// A replica as the host reaches it: its name and its published
/// `127.0.0.1:PORT` address (never a container address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub base_url: String,
}

impl Endpoint {
    pub fn new(name: &str, host_port: u16) -> Self {
        Endpoint {
            name: name.to_owned(),
            base_url: format!("http://127.0.0.1:{host_port}"),
        }
    }
}

/// Builds the HTTP client every session shares: short timeouts so a paused
/// or cut-off replica turns into an unknown outcome instead of a stall.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        // A kept-alive connection to a restarted container is dead; new
        // connections keep outcomes about the replica, not about the pool.
        .pool_max_idle_per_host(0)
        .build()
        .expect("building the HTTP client")
}

/// Percent-encodes a key for the URL path (keys here are plain ASCII, but
/// be safe).
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One client that passes its causal metadata along.
pub struct Session {
    pub id: usize,
    metadata: Value,
    /// Send `null` instead of the metadata: a broken client, used only to
    /// show that the checker catches the stale reads it gets.
    forget_metadata: bool,
    http: reqwest::Client,
    recorder: Recorder,
}

enum Method {
    Put,
    Get,
    Delete,
}

impl Session {
    pub fn new(id: usize, http: reqwest::Client, recorder: Recorder) -> Self {
        Session {
            id,
            metadata: Value::Null,
            forget_metadata: false,
            http,
            recorder,
        }
    }

    /// Makes this session send no causal metadata (see `forget_metadata`).
    pub fn forgetting_metadata(mut self) -> Self {
        self.forget_metadata = true;
        self
    }

    /// The metadata the next request will carry.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    pub async fn put(&mut self, ep: &Endpoint, key: &str, value: Value) -> Outcome {
        let kind = OpKind::Put {
            key: key.to_owned(),
            value,
        };
        self.run(ep, kind).await
    }

    pub async fn get(&mut self, ep: &Endpoint, key: &str) -> Outcome {
        self.run(
            ep,
            OpKind::Get {
                key: key.to_owned(),
            },
        )
        .await
    }

    pub async fn delete(&mut self, ep: &Endpoint, key: &str) -> Outcome {
        self.run(
            ep,
            OpKind::Delete {
                key: key.to_owned(),
            },
        )
        .await
    }

    async fn run(&mut self, ep: &Endpoint, kind: OpKind) -> Outcome {
        let meta = if self.forget_metadata {
            Value::Null
        } else {
            self.metadata.clone()
        };
        let (method, body) = match &kind {
            OpKind::Put { value, .. } => (
                Method::Put,
                json!({"value": value, "causal-metadata": meta}),
            ),
            OpKind::Get { .. } => (Method::Get, json!({"causal-metadata": meta})),
            OpKind::Delete { .. } => (Method::Delete, json!({"causal-metadata": meta})),
        };
        let url = format!("{}/kvs/{}", ep.base_url, key_path(kind.key()));
        let builder = match method {
            Method::Put => self.http.put(&url),
            Method::Get => self.http.get(&url),
            Method::Delete => self.http.delete(&url),
        };
        let invoke_us = self.recorder.now_us();
        let answer = async {
            let resp = builder.json(&body).send().await?;
            let status = resp.status().as_u16();
            let body: Result<Value, reqwest::Error> = resp.json().await;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let complete_us = self.recorder.now_us();
        let is_write = !matches!(method, Method::Get);
        let mut metadata = None;
        let outcome = match answer {
            Err(e) if e.is_connect() => Outcome::Fail(format!("connect: {e}")),
            Err(e) if is_write => Outcome::Unknown(describe(&e)),
            Err(e) => Outcome::Fail(describe(&e)),
            Ok((status, Err(e))) if is_write && (200..300).contains(&status) => {
                Outcome::Unknown(format!("{status} with unreadable body: {e}"))
            }
            Ok((status, Err(e))) => Outcome::Fail(format!("{status} with unreadable body: {e}")),
            Ok((status, Ok(body))) => {
                let outcome = self.interpret(&method, status, &body);
                if outcome.is_ok() {
                    metadata = body
                        .get("causal-metadata")
                        .filter(|m| !m.is_null())
                        .cloned();
                }
                outcome
            }
        };
        self.recorder.record(Op {
            session: self.id,
            kind,
            replica: ep.name.clone(),
            invoke_us,
            complete_us,
            outcome: outcome.clone(),
            metadata,
        });
        outcome
    }

    /// Maps a complete HTTP answer to an outcome and keeps the metadata.
    fn interpret(&mut self, method: &Method, status: u16, body: &Value) -> Outcome {
        let meta = body.get("causal-metadata").cloned();
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
        let reply = match (method, status) {
            (Method::Put, 200 | 201) => Reply::Written {
                created: status == 201,
            },
            (Method::Get, 200) => match body.get("value") {
                Some(v) if !v.is_null() => Reply::Read(Some(v.clone())),
                _ => return Outcome::Fail(format!("200 without a value: {body}")),
            },
            (Method::Get, 404) if error == "Key does not exist" => Reply::Read(None),
            (Method::Delete, 200) => Reply::Deleted { existed: true },
            (Method::Delete, 404) if error == "Key does not exist" => {
                Reply::Deleted { existed: false }
            }
            // A server error other than 503 may come after the write was
            // applied; only the documented refusals are definite.
            (Method::Put | Method::Delete, s) if s >= 500 && s != 503 => {
                return Outcome::Unknown(format!("{status} {body}"))
            }
            _ => return Outcome::Fail(format!("{status} {body}")),
        };
        match meta {
            Some(m) if !m.is_null() => self.metadata = m,
            // A successful write must hand back metadata; without it the
            // session could not pass its causal past along.
            _ if matches!(
                reply,
                Reply::Written { .. } | Reply::Deleted { existed: true }
            ) =>
            {
                return Outcome::Unknown(format!("{status} without causal-metadata: {body}"));
            }
            _ => {}
        }
        Outcome::Ok(reply)
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else {
        // The source chain says whether it was a reset, EOF, ...
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}

/// GET a key with no causal metadata, as an observer (not recorded): used
/// to read the converged state. `Ok(None)` is a 404.
pub async fn observe(
    http: &reqwest::Client,
    ep: &Endpoint,
    key: &str,
) -> Result<Option<Value>, String> {
    let url = format!("{}/kvs/{}", ep.base_url, key_path(key));
    let resp = http
        .get(&url)
        .json(&json!({"causal-metadata": null}))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.map_err(|e| describe(&e))?;
    match status {
        200 => Ok(body.get("value").cloned()),
        404 => Ok(None),
        _ => Err(format!("{status} {body}")),
    }
}

/// `GET /view` of one replica, sorted.
pub async fn view(http: &reqwest::Client, ep: &Endpoint) -> Result<Vec<String>, String> {
    let resp = http
        .get(format!("{}/view", ep.base_url))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.map_err(|e| describe(&e))?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let mut view: Vec<String> = body
        .get("view")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no view in {body}"))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    view.sort();
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(key_path("k-1_a.b~"), "k-1_a.b~");
        assert_eq!(key_path("a b/c"), "a%20b%2Fc");
    }
}
