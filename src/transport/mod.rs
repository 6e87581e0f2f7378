//! How replicas reach each other.
//!
//! [`Transport`] carries one request to one peer and brings back its answer.
//! Production uses [`http::HttpTransport`] (HTTP + MessagePack on
//! `/internal/...`, signed when a cluster key is set); tests use [`memory::SimNetwork`], which serialises every
//! message just the same and can drop, duplicate, delay, reorder and partition
//! them, driven by a seeded RNG.

pub mod http;
pub mod memory;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::proto::{Request, Response};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("timed out")]
    Timeout,
    #[error("peer refused the request: {0}")]
    Refused(String),
    #[error("bad message: {0}")]
    Codec(String),
}

pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `to` (`IP:PORT`) and waits at most `timeout`.
    fn call(
        &self,
        to: &str,
        request: Request,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Response, TransportError>>;
}
