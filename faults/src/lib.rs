//! Fault-injection harness (placeholder).
