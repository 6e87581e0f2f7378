//! What causal metadata stands for, shared by the model check and the
//! seeded simulation: an answer names only the latest writes a client
//! observed, and a replica whose clock covers a write covers that write's
//! dependencies too (C1), so their dependencies count, transitively.

use hearsay::core::{Dot, VClock};

/// `metadata` joined, to a fixpoint, with the dependencies of every write
/// in `writes` (each a dot and its dependencies) that it covers.
pub fn closure<'a>(
    metadata: &VClock,
    writes: impl Iterator<Item = (&'a Dot, &'a VClock)> + Clone,
) -> VClock {
    let mut closure = metadata.clone();
    loop {
        let before = closure.clone();
        for (dot, deps) in writes.clone() {
            if closure.covers_dot(dot) {
                closure.merge(deps);
            }
        }
        if closure == before {
            return closure;
        }
    }
}
