//! The pure replica core: data, rules and invariants, no I/O.
//!
//! * [`address`] — the canonical spelling of replica addresses.
//! * [`checks`] — what every message from a peer must satisfy before it is read.
//! * [`clock`] — origins, dots and vector clocks.
//! * [`store`] — versioned map, total order of writes, delta indexes.
//! * [`membership`] — admission, liveness, stability frontier.
//! * [`exchange`] — the pull / push / snapshot protocol between replica lives.
//! * [`replica`] — one replica's state and every operation on it.

pub mod address;
pub mod checks;
pub mod clock;
pub mod exchange;
pub mod membership;
pub mod replica;
pub mod store;

pub use clock::{Dot, Origin, VClock};
pub use exchange::{
    Covers, ExchangeError, Life, Pull, PullChunk, PullDone, PullRequest, PullStep, Push,
    PushApplied, PushCompletion, PushRequest, Refusal,
};
pub use membership::{
    Admission, AdmissionMerge, Heard, Liveness, Membership, Timing, ViewChange, MAX_ADMISSION_LEAP,
    MAX_MEMBERS,
};
pub use replica::{
    ApplyReport, DurableState, NotYet, ReadOutcome, Recovering, Replica, SnapshotApplied,
    WriteError, WriteOutcome, MAX_LAMPORT_LEAP, MAX_SEQ_LEAP,
};
pub use store::{packed, Footprint, JsonText, Key, Stamp, Store, Version, VersionRef};
