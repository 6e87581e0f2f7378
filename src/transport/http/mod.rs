//! The production transport: `POST http://<peer>/internal/<kind>` with a
//! MessagePack body, answered with a MessagePack body.
//!
//! Both halves of that protocol live here: the [`client`] that replicas use
//! to call each other and the [`server`] handler that answers those calls
//! (mounted by the public router in [`crate::api`]). What they must agree on
//! — the path, the headers, the content type, how messages are signed
//! ([`signing`]) and the state they share ([`plane`]) — is defined here.

pub mod client;
pub mod plane;
pub mod server;
pub mod signing;

pub use client::HttpTransport;
pub use plane::Plane;

/// The protocol version of a message (absent: 1, the unsigned protocol).
pub const PROTOCOL_HEADER: &str = "x-hearsay-protocol";
/// On every answer: the versions the answering replica speaks.
pub const PROTOCOLS_HEADER: &str = "x-hearsay-protocols";

/// The kind of the signed probe sent to an address that has not yet proved
/// it holds a key: `POST /internal/probe`, empty body, answered by the
/// transport itself with a signed empty answer.
pub const PROBE_KIND: &str = "probe";

/// The content type of every internal request and answer.
const MSGPACK: &str = "application/msgpack";
