//! The client half of the internal protocol: [`HttpTransport`] sends one
//! request to a peer's `/internal/<kind>` and reads its bounded answer.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{CLUSTER_KEY_HEADER, MSGPACK};
use crate::proto::{self, Request, Response};
use crate::transport::{Transport, TransportError};

pub struct HttpTransport {
    client: reqwest::Client,
    cluster_key: Option<String>,
    max_response_bytes: usize,
}

impl HttpTransport {
    pub fn new(cluster_key: Option<String>, max_response_bytes: usize) -> Self {
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
            cluster_key,
            max_response_bytes,
        }
    }
}

impl Transport for HttpTransport {
    fn call(
        &self,
        to: &str,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>> {
        let url = format!("http://{to}/internal/{}", request.kind());
        let body = proto::encode(&request);
        let mut builder = self
            .client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, MSGPACK);
        if let Some(key) = &self.cluster_key {
            builder = builder.header(CLUSTER_KEY_HEADER, key);
        }
        let limit = self.max_response_bytes;
        let to = to.to_string();
        async move {
            let body = body.map_err(|e| TransportError::Codec(e.to_string()))?;
            let response = builder
                .body(body)
                .send()
                .await
                .map_err(|e| classify(&to, e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(TransportError::Refused(format!("{to} answered {status}")));
            }
            let mut response = response;
            // Sized once from the announced length (never beyond the limit),
            // rather than doubling its way up to a megabyte-sized chunk.
            let announced = response.content_length().unwrap_or(0) as usize;
            let mut bytes = Vec::with_capacity(announced.min(limit));
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(&to, e))? {
                if bytes.len() + chunk.len() > limit {
                    return Err(TransportError::Codec(format!(
                        "answer from {to} exceeds {limit} bytes"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            proto::decode(&bytes).map_err(|e| TransportError::Codec(e.to_string()))
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
