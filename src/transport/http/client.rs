//! The client half of the internal protocol: [`HttpTransport`] sends one
//! request to a peer's `/internal/<kind>` and reads its bounded answer.
//!
//! With a key, every request is signed and every answer verified (an
//! unsigned or badly signed answer is a transport error, except that
//! `transitional` mode accepts unsigned ones). In `required` mode an address
//! that has not yet answered with a valid signature — a stranger — gets
//! nothing but a signed, empty probe until it does. The protocol version
//! used with a peer is the highest both speak, learnt from its answers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;

use super::plane::{self, Plane, PROTOCOL_SIGNED};
use super::signing::{self, AnswerParts, Failure, Signature};
use super::{MSGPACK, PROBE_KIND, PROTOCOLS_HEADER, PROTOCOL_HEADER};
use crate::keyring::Keyring;
use crate::proto::{self, Request, Response};
use crate::telemetry::names;
use crate::transport::{Transport, TransportError};

pub struct HttpTransport {
    client: reqwest::Client,
    plane: Arc<Plane>,
    max_response_bytes: usize,
}

impl HttpTransport {
    pub fn new(plane: Arc<Plane>, max_response_bytes: usize) -> Self {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .tcp_nodelay(true)
            // Peers never redirect; skipping the policy check saves work on
            // every internal request.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(500))
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        HttpTransport {
            client,
            plane,
            max_response_bytes,
        }
    }
}

/// One request to one address, as sent.
struct Outgoing<'a> {
    client: &'a reqwest::Client,
    plane: &'a Plane,
    keyring: Option<&'a Keyring>,
    to: &'a str,
    limit: usize,
    deadline: Instant,
}

/// An answer as received, before it is trusted.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The nonce of the signed request it answers.
    nonce: Option<u64>,
}

impl Outgoing<'_> {
    /// Sends `body` to `/internal/<kind>` at `version`, signed when this
    /// replica has a key, and reads the (bounded) answer.
    async fn send(&self, kind: &str, version: u32, body: Bytes) -> Result<Answer, TransportError> {
        let to = self.to;
        let path = format!("/internal/{kind}");
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TransportError::Timeout);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static(MSGPACK),
        );
        headers.insert(PROTOCOL_HEADER, version.into());
        let mut nonce = None;
        if let Some(keyring) = self.keyring {
            let (signed, sent) = signing::signed_request_headers(keyring, &path, version, &body);
            headers.extend(signed);
            nonce = Some(sent);
        }
        let mut response = self
            .client
            .post(format!("http://{to}{path}"))
            .timeout(remaining)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // Whatever answers at this address next must prove itself
                // again: the process that held it may be gone.
                if e.is_connect() {
                    self.plane.distrust(to);
                }
                classify(to, e)
            })?;
        let limit = self.limit;
        // Sized once from the announced length (never beyond the limit),
        // rather than doubling its way up to a megabyte-sized chunk.
        let announced = response.content_length().unwrap_or(0) as usize;
        let mut bytes = Vec::with_capacity(announced.min(limit));
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(to, e))? {
            if bytes.len() + chunk.len() > limit {
                return Err(TransportError::Codec(format!(
                    "answer from {to} exceeds {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: bytes,
            nonce,
        })
    }

    /// Whether the answer may be trusted: verified when the request was
    /// signed (and the peer then remembered as holding a key and announcing
    /// its ids); unsigned answers pass only in transitional mode.
    fn verify(&self, answer: &Answer) -> Result<(), TransportError> {
        let (Some(keyring), Some(nonce)) = (self.keyring, answer.nonce) else {
            return Ok(());
        };
        let outcome = match Signature::from_headers(&answer.headers, false) {
            Ok(None) if !self.plane.required() => {
                metrics::counter!(names::INTERNAL_UNSIGNED, "direction" => "answer").increment(1);
                return Ok(());
            }
            Ok(None) => Err((None, Failure::Unsigned)),
            Err(failure) => Err((None, failure)),
            Ok(Some(signature)) => {
                let protocol = plane::version_of(&answer.headers).unwrap_or(0);
                let checked = self.plane.check(keyring, &signature, false, |key| {
                    let parts = AnswerParts {
                        nonce,
                        status: answer.status,
                        protocol,
                        timestamp: signature.timestamp,
                        keys: &signature.keys,
                        body: &answer.body,
                    };
                    signing::verify_answer(key, &parts, &signature.mac)
                });
                match checked {
                    Ok(()) => {
                        self.plane.verified(self.to, signature.announced());
                        Ok(())
                    }
                    Err(failure) => Err((Some(signature.key_id), failure)),
                }
            }
        };
        outcome.map_err(|(key_id, failure)| {
            self.plane
                .count_failure("answer", key_id.as_deref(), failure);
            self.plane.distrust(self.to);
            TransportError::Refused(format!(
                "{} answered {}: {}",
                self.to,
                answer.status,
                failure.message()
            ))
        })
    }

    /// Sends the signed probe and returns once `to` has proved it holds a key.
    async fn probe(&self) -> Result<(), TransportError> {
        let answer = self.send(PROBE_KIND, PROTOCOL_SIGNED, Bytes::new()).await?;
        self.verify(&answer)?;
        if answer.status != 200 || !self.plane.trusted(self.to) {
            return Err(TransportError::Refused(format!(
                "{} has not proved it holds a cluster key (probe answered {})",
                self.to, answer.status
            )));
        }
        Ok(())
    }
}

impl Transport for HttpTransport {
    fn call(
        &self,
        to: &str,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let kind = request.kind();
        let body = proto::encode(&request);
        let client = self.client.clone();
        let plane = self.plane.clone();
        let limit = self.max_response_bytes;
        let to = to.to_string();
        async move {
            // Shared, not copied, should the request go a second time.
            let body = Bytes::from(body.map_err(|e| TransportError::Codec(e.to_string()))?);
            let keyring = plane.keyring();
            let out = Outgoing {
                client: &client,
                plane: &plane,
                keyring: keyring.as_deref(),
                to: &to,
                limit,
                deadline: Instant::now() + timeout,
            };
            // A stranger gets the probe and nothing else.
            if plane.required() && !plane.trusted(&to) {
                out.probe().await?;
            }
            let version = plane.version_for(&to);
            let mut answer = out.send(kind, version, body.clone()).await?;
            if let Some(speaks) = plane::versions_in(answer.status, &answer.headers) {
                plane.heard_versions(&to, speaks);
            }
            if answer.status == 400 && answer.headers.contains_key(PROTOCOLS_HEADER) {
                // The peer does not speak `version`: once more at the
                // highest version both speak, if that is another one.
                let next = plane.version_for(&to);
                if next != version {
                    answer = out.send(kind, next, body).await?;
                    if let Some(speaks) = plane::versions_in(answer.status, &answer.headers) {
                        plane.heard_versions(&to, speaks);
                    }
                }
            }
            out.verify(&answer)?;
            if !(200..300).contains(&answer.status) {
                return Err(TransportError::Refused(format!(
                    "{to} answered {}",
                    answer.status
                )));
            }
            proto::decode(&answer.body).map_err(|e| TransportError::Codec(e.to_string()))
        }
        .boxed()
    }
}

fn classify(to: &str, error: reqwest::Error) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Unreachable(format!("{to}: {error}"))
    }
}
