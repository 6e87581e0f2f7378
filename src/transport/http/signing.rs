//! What a signed internal message is: its headers, what its MAC covers, and
//! how a replica refuses replays.
//!
//! A request's MAC (HMAC-SHA-256) covers a domain tag, the method, the path,
//! the protocol version, the timestamp, the nonce, the announced key ids and
//! the body; an answer's covers a different tag, the *request's* nonce (so an
//! answer cannot be replayed to another request), the status, the protocol
//! version, the timestamp, the announced key ids and the body. Every field is
//! length-prefixed (8 bytes, big-endian) so that no two different messages
//! MAC the same byte string. Verification is constant-time
//! (`Mac::verify_slice`).

use std::collections::{HashSet, VecDeque};

use axum::http::{HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keyring::{Key, Keyring};

/// The key id (see [`crate::keyring::key_id`]) that signed the message.
pub const KEY_ID_HEADER: &str = "x-hearsay-key-id";
/// Unix time in milliseconds at signing (the sender's wall clock).
pub const TIMESTAMP_HEADER: &str = "x-hearsay-timestamp";
/// A random u64 (decimal), requests only; answers are bound to it.
pub const NONCE_HEADER: &str = "x-hearsay-nonce";
/// Hex of the HMAC-SHA-256.
pub const SIGNATURE_HEADER: &str = "x-hearsay-signature";
/// The key ids the sender holds, primary first, comma-separated.
pub const KEYS_HEADER: &str = "x-hearsay-keys";

const REQUEST_TAG: &[u8] = b"hearsay internal request v2";
const ANSWER_TAG: &[u8] = b"hearsay internal answer v2";

/// Most (key id, nonce) pairs remembered against replays; the oldest is
/// evicted beyond it (see [`ReplayCache`]).
pub const REPLAY_CACHE_ENTRIES: usize = 65_536;

type HmacSha256 = Hmac<Sha256>;

fn field(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

/// What a request's MAC covers (besides the key).
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: u32,
    pub timestamp: u64,
    pub nonce: u64,
    pub keys: &'a str,
    pub body: &'a [u8],
}

/// What an answer's MAC covers (besides the key).
#[derive(Clone, Copy, Debug)]
pub struct AnswerParts<'a> {
    /// The nonce of the request this answers.
    pub nonce: u64,
    pub status: u16,
    pub protocol: u32,
    pub timestamp: u64,
    pub keys: &'a str,
    pub body: &'a [u8],
}

fn new_mac(key: &Key) -> HmacSha256 {
    HmacSha256::new_from_slice(key.secret()).expect("HMAC takes keys of any length")
}

fn request_mac(key: &Key, parts: &RequestParts<'_>) -> HmacSha256 {
    let mut mac = new_mac(key);
    field(&mut mac, REQUEST_TAG);
    field(&mut mac, parts.method.as_bytes());
    field(&mut mac, parts.path.as_bytes());
    field(&mut mac, &parts.protocol.to_be_bytes());
    field(&mut mac, &parts.timestamp.to_be_bytes());
    field(&mut mac, &parts.nonce.to_be_bytes());
    field(&mut mac, parts.keys.as_bytes());
    field(&mut mac, parts.body);
    mac
}

fn answer_mac(key: &Key, parts: &AnswerParts<'_>) -> HmacSha256 {
    let mut mac = new_mac(key);
    field(&mut mac, ANSWER_TAG);
    field(&mut mac, &parts.nonce.to_be_bytes());
    field(&mut mac, &parts.status.to_be_bytes());
    field(&mut mac, &parts.protocol.to_be_bytes());
    field(&mut mac, &parts.timestamp.to_be_bytes());
    field(&mut mac, parts.keys.as_bytes());
    field(&mut mac, parts.body);
    mac
}

/// The hex signature of a request.
pub fn sign_request(key: &Key, parts: &RequestParts<'_>) -> String {
    hex::encode(request_mac(key, parts).finalize().into_bytes())
}

/// The hex signature of an answer.
pub fn sign_answer(key: &Key, parts: &AnswerParts<'_>) -> String {
    hex::encode(answer_mac(key, parts).finalize().into_bytes())
}

/// Whether `signature` is the request's MAC under `key` (constant time).
pub fn verify_request(key: &Key, parts: &RequestParts<'_>, signature: &[u8]) -> bool {
    request_mac(key, parts).verify_slice(signature).is_ok()
}

/// Whether `signature` is the answer's MAC under `key` (constant time).
pub fn verify_answer(key: &Key, parts: &AnswerParts<'_>, signature: &[u8]) -> bool {
    answer_mac(key, parts).verify_slice(signature).is_ok()
}

/// Why a signed message was refused: the `reason` label of the failure
/// metric and, for requests, the 401's error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Unsigned,
    UnknownKey,
    BadSignature,
    OutsideWindow,
    Replayed,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Unsigned => "unsigned",
            Failure::UnknownKey => "unknown_key",
            Failure::BadSignature => "bad_signature",
            Failure::OutsideWindow => "outside_window",
            Failure::Replayed => "replayed",
        }
    }

    /// The refusal's `{"error": ...}` text.
    pub fn message(self) -> &'static str {
        match self {
            Failure::Unsigned => ERR_UNSIGNED,
            Failure::UnknownKey => ERR_UNKNOWN_KEY,
            Failure::BadSignature => ERR_BAD_SIGNATURE,
            Failure::OutsideWindow => ERR_OUTSIDE_WINDOW,
            Failure::Replayed => ERR_REPLAYED,
        }
    }
}

pub const ERR_UNSIGNED: &str = "Internal message is not signed";
pub const ERR_UNKNOWN_KEY: &str =
    "Internal message is signed with a key this replica does not hold";
pub const ERR_BAD_SIGNATURE: &str = "Internal message signature does not verify";
pub const ERR_OUTSIDE_WINDOW: &str =
    "Internal message timestamp is outside signature_window_ms (replica clocks must agree within it)";
pub const ERR_REPLAYED: &str = "Internal message was already received (replay refused)";

/// The signature headers of a message, parsed but not yet verified.
#[derive(Clone, Debug)]
pub struct Signature {
    pub key_id: String,
    pub timestamp: u64,
    /// Requests only.
    pub nonce: Option<u64>,
    pub mac: Vec<u8>,
    pub keys: String,
}

impl Signature {
    /// `Ok(None)` when the message carries no signature header at all;
    /// `Err` when it carries some but they are incomplete or malformed (a
    /// present but bad signature).
    pub fn from_headers(
        headers: &HeaderMap,
        nonce_required: bool,
    ) -> Result<Option<Self>, Failure> {
        let names = [
            KEY_ID_HEADER,
            TIMESTAMP_HEADER,
            SIGNATURE_HEADER,
            NONCE_HEADER,
        ];
        if !names.iter().any(|n| headers.contains_key(*n)) {
            return Ok(None);
        }
        let text = |name: &str| -> Result<&str, Failure> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(Failure::BadSignature)
        };
        let key_id = text(KEY_ID_HEADER)?.to_string();
        let timestamp = text(TIMESTAMP_HEADER)?
            .parse()
            .map_err(|_| Failure::BadSignature)?;
        let nonce = match headers.get(NONCE_HEADER) {
            Some(_) => Some(
                text(NONCE_HEADER)?
                    .parse()
                    .map_err(|_| Failure::BadSignature)?,
            ),
            None if nonce_required => return Err(Failure::BadSignature),
            None => None,
        };
        let mac = hex::decode(text(SIGNATURE_HEADER)?).map_err(|_| Failure::BadSignature)?;
        let keys = headers
            .get(KEYS_HEADER)
            .map(|v| v.to_str().map_err(|_| Failure::BadSignature))
            .transpose()?
            .unwrap_or("")
            .to_string();
        Ok(Some(Signature {
            key_id,
            timestamp,
            nonce,
            mac,
            keys,
        }))
    }

    /// The announced key ids (at most 16, each at most 64 characters: a
    /// peer cannot make this replica remember more).
    pub fn announced(&self) -> Vec<String> {
        self.keys
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .take(crate::keyring::MAX_KEYS)
            .map(|id| id.chars().take(64).collect())
            .collect()
    }
}

/// Adds the signature headers (a nonce only when given: requests).
pub fn put_headers(
    headers: &mut HeaderMap,
    key_id: &str,
    timestamp: u64,
    nonce: Option<u64>,
    keys: &str,
    signature: &str,
) {
    let value = |s: &str| HeaderValue::from_str(s).expect("ids, numbers and hex are header-safe");
    headers.insert(KEY_ID_HEADER, value(key_id));
    headers.insert(TIMESTAMP_HEADER, value(&timestamp.to_string()));
    if let Some(nonce) = nonce {
        headers.insert(NONCE_HEADER, value(&nonce.to_string()));
    }
    headers.insert(KEYS_HEADER, value(keys));
    headers.insert(SIGNATURE_HEADER, value(signature));
}

/// The headers that sign a `POST` of `body` to `path` at `protocol` with
/// the keyring's primary key (announcing all its ids), and the request's
/// nonce, to which the answer is bound.
pub fn signed_request_headers(
    keyring: &Keyring,
    path: &str,
    protocol: u32,
    body: &[u8],
) -> (HeaderMap, u64) {
    let key = keyring.primary();
    let keys = keyring.ids().join(",");
    let parts = RequestParts {
        method: "POST",
        path,
        protocol,
        timestamp: crate::node::wall_ms(),
        nonce: rand::random(),
        keys: &keys,
        body,
    };
    let signature = sign_request(key, &parts);
    let mut headers = HeaderMap::new();
    put_headers(
        &mut headers,
        key.id(),
        parts.timestamp,
        Some(parts.nonce),
        &keys,
        &signature,
    );
    (headers, parts.nonce)
}

/// Whether `timestamp` is within `window_ms` of `now` either way.
pub fn within_window(timestamp: u64, now: u64, window_ms: u64) -> bool {
    timestamp.abs_diff(now) <= window_ms
}

/// The (key id, nonce) pairs of verified requests still inside the window.
///
/// Bounded to [`REPLAY_CACHE_ENTRIES`]: entries leave when their timestamp
/// leaves the window, or, when the cache is full, oldest first. Eviction
/// raises a floor: a request stamped at or before the newest evicted
/// timestamp is refused as a possible replay, so eviction never lets a
/// replay through (it only narrows the window under extreme load).
#[derive(Default)]
pub struct ReplayCache {
    order: VecDeque<(u64, String, u64)>,
    seen: HashSet<(String, u64)>,
    floor: u64,
}

impl ReplayCache {
    /// Records a verified request; `false` if it was seen (or may have been).
    pub fn admit(
        &mut self,
        key_id: &str,
        nonce: u64,
        timestamp: u64,
        now: u64,
        window_ms: u64,
    ) -> bool {
        while let Some((stamp, _, _)) = self.order.front() {
            if stamp.saturating_add(window_ms) >= now {
                break;
            }
            let (_, id, n) = self.order.pop_front().expect("a front");
            self.seen.remove(&(id, n));
        }
        if timestamp <= self.floor {
            return false;
        }
        if !self.seen.insert((key_id.to_string(), nonce)) {
            return false;
        }
        self.order.push_back((timestamp, key_id.to_string(), nonce));
        if self.order.len() > REPLAY_CACHE_ENTRIES {
            let (stamp, id, n) = self.order.pop_front().expect("a front");
            self.seen.remove(&(id, n));
            self.floor = self.floor.max(stamp);
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;

    fn key(text: &str) -> Key {
        Keyring::new(&[text]).unwrap().primary().clone()
    }

    fn parts(body: &[u8]) -> RequestParts<'_> {
        RequestParts {
            method: "POST",
            path: "/internal/push",
            protocol: 2,
            timestamp: 1_000,
            nonce: 7,
            keys: "aa,bb",
            body,
        }
    }

    #[test]
    fn a_request_verifies_only_unchanged_and_under_its_key() {
        let k = key("0123456789abcdef-one");
        let signature = hex::decode(sign_request(&k, &parts(b"body"))).unwrap();
        assert!(verify_request(&k, &parts(b"body"), &signature));
        assert!(!verify_request(
            &key("0123456789abcdef-two"),
            &parts(b"body"),
            &signature
        ));
        assert!(!verify_request(&k, &parts(b"bodx"), &signature));
        let changes: [&dyn Fn(&mut RequestParts); 6] = [
            &|p| p.method = "GET",
            &|p| p.path = "/internal/pull",
            &|p| p.protocol = 1,
            &|p| p.timestamp += 1,
            &|p| p.nonce += 1,
            &|p| p.keys = "aa",
        ];
        for change in changes {
            let mut changed = parts(b"body");
            change(&mut changed);
            assert!(!verify_request(&k, &changed, &signature), "{changed:?}");
        }
    }

    #[test]
    fn fields_are_length_prefixed_so_bytes_cannot_move_between_them() {
        let k = key("0123456789abcdef-one");
        let a = RequestParts {
            path: "/internal/pu",
            keys: "",
            ..parts(b"shb")
        };
        let b = RequestParts {
            path: "/internal/push",
            keys: "",
            ..parts(b"b")
        };
        assert_ne!(sign_request(&k, &a), sign_request(&k, &b));
    }

    #[test]
    fn an_answer_is_bound_to_its_request_and_is_no_request() {
        let k = key("0123456789abcdef-one");
        let answer = AnswerParts {
            nonce: 7,
            status: 200,
            protocol: 2,
            timestamp: 1_000,
            keys: "aa",
            body: b"x",
        };
        let signature = hex::decode(sign_answer(&k, &answer)).unwrap();
        assert!(verify_answer(&k, &answer, &signature));
        let other = AnswerParts { nonce: 8, ..answer };
        assert!(!verify_answer(&k, &other, &signature));
        let status = AnswerParts {
            status: 500,
            ..answer
        };
        assert!(!verify_answer(&k, &status, &signature));
        let request = hex::decode(sign_request(&k, &parts(b"x"))).unwrap();
        assert!(!verify_answer(&k, &answer, &request));
    }

    #[test]
    fn headers_round_trip_and_partial_headers_are_a_bad_signature() {
        let mut headers = HeaderMap::new();
        assert!(Signature::from_headers(&headers, true).unwrap().is_none());
        put_headers(&mut headers, "abcd", 5, Some(9), "abcd,ef", "00ff");
        let parsed = Signature::from_headers(&headers, true).unwrap().unwrap();
        assert_eq!(parsed.key_id, "abcd");
        assert_eq!(parsed.timestamp, 5);
        assert_eq!(parsed.nonce, Some(9));
        assert_eq!(parsed.mac, vec![0, 255]);
        assert_eq!(parsed.announced(), vec!["abcd", "ef"]);
        headers.remove(SIGNATURE_HEADER);
        assert_eq!(
            Signature::from_headers(&headers, true).unwrap_err(),
            Failure::BadSignature
        );
        let mut answer = HeaderMap::new();
        put_headers(&mut answer, "abcd", 5, None, "abcd", "zz");
        assert_eq!(
            Signature::from_headers(&answer, false).unwrap_err(),
            Failure::BadSignature
        );
    }

    #[test]
    fn the_replay_cache_refuses_repeats_and_stays_bounded() {
        let mut cache = ReplayCache::default();
        assert!(cache.admit("k", 1, 100, 100, 50));
        assert!(!cache.admit("k", 1, 100, 101, 50));
        assert!(cache.admit("other", 1, 100, 101, 50));
        // Once out of the window the entry goes (the window check refuses it).
        assert!(cache.admit("k", 2, 200, 200, 50));
        assert_eq!(cache.len(), 1);
        for nonce in 0..(REPLAY_CACHE_ENTRIES as u64 + 10) {
            assert!(cache.admit("k", 1000 + nonce, 300 + nonce / 1000, 300, 1_000_000));
        }
        assert_eq!(cache.len(), REPLAY_CACHE_ENTRIES);
        // An evicted pair may not come back: the floor refuses it.
        assert!(!cache.admit("k", 1000, 300, 300, 1_000_000));
    }
}
