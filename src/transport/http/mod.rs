//! The production transport: `POST http://<peer>/internal/<kind>` with a
//! MessagePack body, answered with a MessagePack body.
//!
//! Both halves of that protocol live here: the [`client`] that replicas use
//! to call each other and the [`server`] handler that answers those calls
//! (mounted by the public router in [`crate::api`]). What they must agree on
//! — the path, the header with the cluster key, the content type — is
//! defined once, below.

pub mod client;
pub mod server;

pub use client::HttpTransport;

/// Header carrying the shared cluster key, when one is configured.
pub const CLUSTER_KEY_HEADER: &str = "x-hearsay-cluster-key";

/// The content type of every internal request and answer.
const MSGPACK: &str = "application/msgpack";
