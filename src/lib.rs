//! hearsay: a replicated, fault-tolerant, causally consistent key-value store.
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

pub mod core;
