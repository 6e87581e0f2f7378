//! What a message from another replica must satisfy before anything in it
//! is taken in: checks of its *form* that need no state beyond the
//! receiver's wall clock (state-dependent checks — stale lives, counter
//! leaps, claims about lives the receiver knows — are made where the message
//! is applied).
//!
//! * Every address (a sender's, an admission's, every origin's in every
//!   clock and version) is canonical ([`super::address`]): real replicas only
//!   ever send canonical ones, so anything else is forged or corrupt.
//! * Every incarnation (a sender's life, a leave, every origin's) is at most
//!   [`MAX_INCARNATION_LEAD_MS`] ahead of the receiver's wall clock.
//!   Incarnations are start times in milliseconds, so a real one is never
//!   far ahead; one near `u64::MAX` would otherwise outlive every real life
//!   of its address for good (and a refusal naming it would push the
//!   receiver's own incarnation there).
//! * At most [`MAX_ADMISSION_RECORDS`] admission records in one digest.
//!
//! A message that fails is refused whole: nothing in it is applied.

use std::collections::HashSet;

use super::address::is_canonical;
use super::clock::{Origin, VClock};
use super::membership::{Admission, MAX_MEMBERS};
use super::store::Version;

/// How far ahead of the receiver's wall clock an incarnation (a start time
/// in milliseconds) may be: 24 hours, far beyond any clock skew between
/// hosts, far below anything that could exhaust incarnations.
pub const MAX_INCARNATION_LEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// Most admission records one digest may carry: one per member at most.
pub const MAX_ADMISSION_RECORDS: usize = MAX_MEMBERS + 1;

/// Why a message from the network was refused whole.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Invalid {
    /// An address that is not canonical `IP:PORT`, or not usable.
    #[error("{what} {address:?} is not a canonical, usable IP:PORT")]
    Address {
        /// Where in the message.
        what: &'static str,
        /// The address as sent.
        address: String,
    },
    /// An incarnation too far ahead of the receiver's wall clock.
    #[error(
        "{what} names incarnation {incarnation}, more than 24 h ahead of this replica's clock"
    )]
    FutureLife {
        /// Where in the message.
        what: &'static str,
        /// The incarnation as sent.
        incarnation: u64,
    },
    /// More admission records than members a table can hold.
    #[error("{0} admission records (at most {MAX_ADMISSION_RECORDS})")]
    TooManyAdmissions(usize),
    /// A transfer's guarantee claims more than the sender's own clock, or a
    /// horizon above its clock.
    #[error("{0}")]
    Overclaim(&'static str),
}

/// Whether `incarnation` is no further ahead of `now_wall_ms` than
/// [`MAX_INCARNATION_LEAD_MS`]. Small incarnations (tests, simulations) are
/// always plausible.
pub fn plausible_incarnation(incarnation: u64, now_wall_ms: u64) -> bool {
    incarnation <= now_wall_ms.saturating_add(MAX_INCARNATION_LEAD_MS)
}

/// Checks one life named in a message (a sender, a leave).
pub fn life(
    what: &'static str,
    address: &str,
    incarnation: u64,
    now_wall_ms: u64,
) -> Result<(), Invalid> {
    if !is_canonical(address) {
        return Err(Invalid::Address {
            what,
            address: address.to_string(),
        });
    }
    if !plausible_incarnation(incarnation, now_wall_ms) {
        return Err(Invalid::FutureLife { what, incarnation });
    }
    Ok(())
}

fn origin(what: &'static str, origin: &Origin, now_wall_ms: u64) -> Result<(), Invalid> {
    // Origins from the network are `<address>@<u64>` (checked as read).
    life(what, origin.address(), origin.incarnation(), now_wall_ms)
}

/// Checks every origin of a clock.
pub fn clock(what: &'static str, clock: &VClock, now_wall_ms: u64) -> Result<(), Invalid> {
    clock
        .iter()
        .try_for_each(|(o, _)| origin(what, o, now_wall_ms))
}

/// Checks every origin named by a batch of versions (each distinct one once).
pub fn versions(versions: &[Version], now_wall_ms: u64) -> Result<(), Invalid> {
    let mut seen: HashSet<&str> = HashSet::new();
    for version in versions {
        let named = std::iter::once(&version.dot.origin).chain(version.deps.iter().map(|(o, _)| o));
        for o in named {
            if seen.insert(o.as_str()) {
                origin("an origin in a version", o, now_wall_ms)?;
            }
        }
    }
    Ok(())
}

/// Checks a digest's admission records.
pub fn admissions(records: &[Admission]) -> Result<(), Invalid> {
    if records.len() > MAX_ADMISSION_RECORDS {
        return Err(Invalid::TooManyAdmissions(records.len()));
    }
    match records.iter().find(|r| !is_canonical(&r.address)) {
        Some(bad) => Err(Invalid::Address {
            what: "an admission record",
            address: bad.address.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_far_ahead_of_the_wall_clock_are_refused() {
        let now = 1_700_000_000_000;
        assert!(plausible_incarnation(1, now));
        assert!(plausible_incarnation(now + MAX_INCARNATION_LEAD_MS, now));
        assert!(!plausible_incarnation(
            now + MAX_INCARNATION_LEAD_MS + 1,
            now
        ));
        assert!(!plausible_incarnation(u64::MAX, now));
        assert!(plausible_incarnation(u64::MAX, u64::MAX));
    }

    #[test]
    fn every_origin_of_a_clock_is_checked() {
        let now = 1_000;
        let good = VClock::from_pairs([(Origin::new("127.0.0.1:1", 5), 1)]);
        assert!(clock("c", &good, now).is_ok());
        for bad in [
            Origin::new("127.0.0.1:1", u64::MAX),
            Origin::new("0.0.0.0:1", 5),
            Origin::new("[::ffff:127.0.0.1]:1", 5),
        ] {
            let bad = VClock::from_pairs([(Origin::new("127.0.0.1:1", 5), 1), (bad, 1)]);
            assert!(clock("c", &bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn admission_records_name_canonical_addresses() {
        let record = |address: &str| Admission {
            address: address.into(),
            admitted: true,
            version: 1,
        };
        assert!(admissions(&[record("127.0.0.1:1")]).is_ok());
        assert!(admissions(&[record("127.0.0.1:1"), record("0.0.0.0:0")]).is_err());
        let many: Vec<Admission> = (0..=MAX_ADMISSION_RECORDS)
            .map(|i| record(&format!("127.0.0.1:{}", i + 1)))
            .collect();
        assert!(admissions(&many).is_err());
    }
}
