//! Fault-injection harness for hearsay.
//!
//! The pieces, each in its own module:
//!
//! * [`history`] — the record of what client sessions did and saw;
//! * [`checker`] — causal-consistency and durability rules over a history
//!   (pure; unit-tested on hand-made histories);
//!
//! The scenarios themselves live in `faults/tests/`, one test per fault
//! type plus a seeded random schedule; see `docs/FAULTS.md`.

pub mod checker;
pub mod history;
