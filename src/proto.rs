//! Replica-to-replica messages. Encoded as MessagePack (with field names, so
//! that adding a field stays compatible) on `/internal/<kind>`. Batches of
//! versions are the exception: they are most of the bytes, so they travel
//! packed, with an origin table ([`crate::core::packed`]).

use serde::{Deserialize, Serialize};

use crate::core::checks::{self, Invalid};
use crate::core::{
    Admission, Covers, Life, PullChunk, PullRequest, PushRequest, Refusal, VClock, Version,
};

/// Who is speaking, and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's address.
    pub address: String,
    /// The sender's life.
    pub incarnation: u64,
    /// A random number the sending process chose at start (tells apart two
    /// processes that chose the same incarnation).
    pub process: u64,
    /// The sender's clock.
    pub clock: VClock,
    /// The identity of the sender's cluster (see
    /// [`crate::core::Replica::meet_cluster`]).
    pub cluster: u64,
    /// The sender's admission decisions (and its own standing).
    pub admissions: Vec<Admission>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A replica-to-replica request, on `/internal/<kind>`.
pub enum Request {
    /// Liveness and digest, to every member each heartbeat interval.
    Heartbeat(Hello),
    /// A replica starting up asks to be admitted.
    Join(Hello),
    /// Asks for the next chunk of what the sender lacks (or of everything).
    Pull(PullRequest),
    /// Versions the receiver's life lacks; the last chunk may carry a guarantee.
    Push(PushRequest),
    /// The sender is shutting down for good (this incarnation).
    Leave {
        /// The leaving replica's address.
        address: String,
        /// The life that is leaving.
        incarnation: u64,
        /// The process running that life (as in its digests); absent from
        /// replicas built before it was added.
        #[serde(default)]
        process: Option<u64>,
    },
}

impl Request {
    /// The path segment after `/internal/`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Heartbeat(_) => "heartbeat",
            Request::Join(_) => "join",
            Request::Pull(_) => "pull",
            Request::Push(_) => "push",
            Request::Leave { .. } => "leave",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The answer to a [`Request`].
pub enum Response {
    /// The answering replica's digest (to a heartbeat or a join).
    Hello(Hello),
    /// A chunk of a pull answer.
    Chunk(PullChunk),
    /// Taken (a push, a leave).
    Ack,
    /// The receiver would not take the request (a stale sender, or a message
    /// meant for another life of the receiver).
    Refused(Refusal),
    /// The request failed the checks every message must pass
    /// ([`crate::core::checks`]): nothing in it was taken in.
    Invalid {
        /// What was wrong, for the sender's log.
        reason: String,
    },
}

impl Hello {
    /// The checks of [`crate::core::checks`] on a digest.
    pub fn check(&self, now_wall_ms: u64) -> Result<(), Invalid> {
        checks::life("the sender", &self.address, self.incarnation, now_wall_ms)?;
        checks::clock("the sender's clock", &self.clock, now_wall_ms)?;
        checks::admissions(&self.admissions)
    }
}

fn check_life(what: &'static str, life: &Life, now_wall_ms: u64) -> Result<(), Invalid> {
    checks::life(what, &life.address, life.incarnation, now_wall_ms)
}

/// A guarantee claims no more than the sender's `clock` in the same message
/// (it is that clock: see [`crate::core::Replica::guarantee`]), and a
/// horizon never exceeds the clock of the replica holding it.
fn check_covers(covers: &Covers, clock: &VClock, now_wall_ms: u64) -> Result<(), Invalid> {
    checks::clock("a guarantee", &covers.clock, now_wall_ms)?;
    checks::clock("a horizon", &covers.horizon, now_wall_ms)?;
    if !clock.covers(&covers.clock) {
        return Err(Invalid::Overclaim(
            "a guarantee claims more than the sender's own clock",
        ));
    }
    if !covers.clock.covers(&covers.horizon) {
        return Err(Invalid::Overclaim("a horizon above the sender's clock"));
    }
    Ok(())
}

impl Request {
    /// The checks of [`crate::core::checks`], and a push's guarantee bounded
    /// by the sender's clock: a request that fails is refused whole.
    pub fn check(&self, now_wall_ms: u64) -> Result<(), Invalid> {
        match self {
            Request::Heartbeat(hello) | Request::Join(hello) => hello.check(now_wall_ms),
            Request::Pull(pull) => {
                check_life("the sender", &pull.from, now_wall_ms)?;
                checks::clock("the sender's clock", &pull.clock, now_wall_ms)
            }
            Request::Push(push) => {
                check_life("the sender", &push.from, now_wall_ms)?;
                checks::clock("the sender's clock", &push.clock, now_wall_ms)?;
                checks::versions(&push.entries, now_wall_ms)?;
                if let Some(completion) = &push.completion {
                    check_covers(&completion.covers, &push.clock, now_wall_ms)?;
                    checks::clock("a basis", &completion.basis, now_wall_ms)?;
                }
                Ok(())
            }
            Request::Leave {
                address,
                incarnation,
                ..
            } => checks::life("the leaving life", address, *incarnation, now_wall_ms),
        }
    }
}

impl Response {
    /// The checks of [`crate::core::checks`] on an answer; a refusal naming
    /// a life far in the future is invalid too (following it would push
    /// this replica's incarnation there).
    pub fn check(&self, now_wall_ms: u64) -> Result<(), Invalid> {
        match self {
            Response::Hello(hello) => hello.check(now_wall_ms),
            Response::Chunk(chunk) => {
                check_life("the sender", &chunk.from, now_wall_ms)?;
                checks::versions(&chunk.entries, now_wall_ms)?;
                check_covers(&chunk.covers, &chunk.covers.clock, now_wall_ms)
            }
            Response::Refused(Refusal::StaleSender { known }) => {
                if checks::plausible_incarnation(*known, now_wall_ms) {
                    Ok(())
                } else {
                    Err(Invalid::FutureLife {
                        what: "a refusal",
                        incarnation: *known,
                    })
                }
            }
            Response::Refused(Refusal::WrongReceiver { life }) => {
                check_life("a refusal", life, now_wall_ms)
            }
            Response::Refused(_) | Response::Ack | Response::Invalid { .. } => Ok(()),
        }
    }
}

/// Encoding errors (a bad message from the network is refused, never trusted).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    /// The message could not be encoded.
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decode: {0}")]
    /// The bytes are not a valid message.
    Decode(#[from] rmp_serde::decode::Error),
}

/// A message that can say about how large it will be when encoded, so the
/// buffer is allocated once instead of doubling (and copying) its way up to
/// a megabyte-sized chunk.
pub trait SizeHint {
    /// Bytes to reserve for the encoded message.
    fn size_hint(&self) -> usize;
}

/// Room for everything in a message besides its versions (names, clocks).
const FRAME_HINT: usize = 512;

fn versions_hint(versions: &[Version]) -> usize {
    versions.iter().map(Version::encoded_size_hint).sum()
}

impl SizeHint for Request {
    fn size_hint(&self) -> usize {
        match self {
            Request::Push(push) => FRAME_HINT + versions_hint(&push.entries),
            _ => FRAME_HINT,
        }
    }
}

impl SizeHint for Response {
    fn size_hint(&self) -> usize {
        match self {
            Response::Chunk(chunk) => FRAME_HINT + versions_hint(&chunk.entries),
            _ => FRAME_HINT,
        }
    }
}

/// Encodes a message as MessagePack with field names.
pub fn encode<T: Serialize + SizeHint>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut buffer = Vec::with_capacity(message.size_hint());
    rmp_serde::encode::write_named(&mut buffer, message)?;
    Ok(buffer)
}

/// Deepest nesting a message may have. Real messages nest about seven
/// levels (a push, its batch, a version, its dependencies); rmp-serde's own
/// limit (1024) lets a skipped field nest deep enough to overflow a 2 MiB
/// thread stack in a debug build (found by `tests/fuzz_corpus.rs`).
pub const MAX_DEPTH: usize = 32;

/// Decodes a message; malformed input is an error, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
    decoder.set_max_depth(MAX_DEPTH);
    Ok(T::deserialize(&mut decoder)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Covers, Dot, JsonText, Key, Life, Origin, PushCompletion};

    #[test]
    fn messages_round_trip() {
        let origin = Origin::new("127.0.0.1:1", 7);
        let version = Version {
            key: Key::from("k"),
            value: Some(JsonText::from("{\"a\":[1,null]}")),
            dot: Dot {
                origin: origin.clone(),
                seq: 3,
            },
            lamport: 9,
            deps: VClock::from_pairs([(origin.clone(), 3)]),
        };
        let request = Request::Push(PushRequest {
            from: Life {
                address: "127.0.0.1:1".into(),
                incarnation: 7,
            },
            to: 3,
            clock: VClock::from_pairs([(origin.clone(), 3)]),
            entries: vec![version],
            completion: Some(PushCompletion {
                covers: Covers {
                    clock: VClock::from_pairs([(origin.clone(), 3)]),
                    lamport: 9,
                    horizon: VClock::new(),
                },
                basis: VClock::from_pairs([(origin, 2)]),
            }),
        });
        let bytes = encode(&request).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), request);
    }

    const NOW: u64 = 1_800_000_000_000;

    fn hello(address: &str, incarnation: u64) -> Hello {
        Hello {
            address: address.into(),
            incarnation,
            process: 1,
            clock: VClock::new(),
            cluster: 0,
            admissions: Vec::new(),
        }
    }

    #[test]
    fn messages_naming_unusable_addresses_or_future_lives_are_invalid() {
        let far = NOW + crate::core::checks::MAX_INCARNATION_LEAD_MS + 1;
        assert!(Request::Heartbeat(hello("127.0.0.1:1", NOW))
            .check(NOW)
            .is_ok());
        for bad in [
            Request::Heartbeat(hello("0.0.0.0:1", 1)),
            Request::Join(hello("[::ffff:127.0.0.1]:1", 1)),
            Request::Heartbeat(hello("127.0.0.1:1", far)),
            Request::Leave {
                address: "127.0.0.1:1".into(),
                incarnation: u64::MAX,
                process: None,
            },
        ] {
            assert!(bad.check(NOW).is_err(), "{bad:?}");
        }
        let mut foreign = hello("127.0.0.1:1", 1);
        foreign.clock = VClock::from_pairs([(Origin::new("127.0.0.1:2", far), 1)]);
        assert!(Request::Heartbeat(foreign).check(NOW).is_err());
        let refusal = Response::Refused(Refusal::StaleSender { known: far });
        assert!(refusal.check(NOW).is_err());
        let refusal = Response::Refused(Refusal::StaleSender { known: NOW });
        assert!(refusal.check(NOW).is_ok());
    }

    #[test]
    fn a_push_guarantees_no_more_than_the_senders_clock() {
        let origin = Origin::new("127.0.0.1:2", 1);
        let push = |own: u64, claimed: u64| {
            Request::Push(PushRequest {
                from: Life {
                    address: "127.0.0.1:2".into(),
                    incarnation: 1,
                },
                to: 1,
                clock: VClock::from_pairs([(origin.clone(), own)]),
                entries: Vec::new(),
                completion: Some(PushCompletion {
                    covers: Covers {
                        clock: VClock::from_pairs([(origin.clone(), claimed)]),
                        lamport: 1,
                        horizon: VClock::new(),
                    },
                    basis: VClock::new(),
                }),
            })
        };
        assert!(push(3, 3).check(NOW).is_ok());
        assert!(push(3, 4).check(NOW).is_err());
    }

    #[test]
    fn a_leave_from_an_older_build_still_decodes() {
        #[derive(Serialize)]
        enum Old {
            Leave { address: String, incarnation: u64 },
        }
        let bytes = rmp_serde::to_vec_named(&Old::Leave {
            address: "127.0.0.1:1".into(),
            incarnation: 3,
        })
        .unwrap();
        assert_eq!(
            decode::<Request>(&bytes).unwrap(),
            Request::Leave {
                address: "127.0.0.1:1".into(),
                incarnation: 3,
                process: None,
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"\x81\xa4Push\xc0", b"\x92\x01"] {
            assert!(decode::<Request>(bytes).is_err());
        }
    }
}
