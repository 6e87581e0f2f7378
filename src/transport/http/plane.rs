//! The state both halves of the HTTP transport share: the keyring, the
//! authentication mode, the replay cache, the protocol versions spoken, and
//! what is known of each peer address (the key ids it announced, whether it
//! has proved it holds a key, the protocol version to use with it).
//!
//! One [`Plane`] per replica process, shared by [`super::HttpTransport`]
//! (client half), [`super::server`] (server half) and `GET /keyring`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::HeaderMap;
use serde::Serialize;
use tracing::{error, info};

use super::signing::{self, Failure, ReplayCache, Signature};
use crate::config::{Config, InternalAuth};
use crate::keyring::{Keyring, KeyringError};
use crate::telemetry::names;

/// The protocol version of today's signed internal plane.
pub const PROTOCOL_SIGNED: u32 = 2;
/// The version before it (no signatures; the key, if any, travelled in clear).
pub const PROTOCOL_LEGACY: u32 = 1;

/// Most peer addresses remembered; beyond it the record of an arbitrary
/// address is dropped (it is rebuilt by the next answer from that address).
const MAX_PEERS: usize = 4096;

/// What is known of one peer address.
#[derive(Clone, Debug, Default)]
struct PeerRecord {
    /// Key ids announced in the last verified answer from it.
    announced: Option<Vec<String>>,
    /// It answered a signed probe or request with a valid signature, and no
    /// answer has failed verification since.
    trusted: bool,
    /// The versions it speaks, from its last answer (`None`: not heard).
    speaks: Option<Vec<u32>>,
}

/// One member as `GET /keyring` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PeerKeys {
    pub address: String,
    /// Key ids it announced in its last verified message, primary first
    /// (`null`: none verified yet).
    pub announced: Option<Vec<String>>,
    /// Whether it has proved it holds a key this replica holds.
    pub trusted: bool,
    /// The protocol version this replica uses with it.
    pub protocol: u32,
}

pub struct Plane {
    keyring: RwLock<Option<Arc<Keyring>>>,
    keyring_file: Option<PathBuf>,
    mode: InternalAuth,
    window_ms: u64,
    /// The highest version this replica speaks (`protocol_version`).
    protocol: u32,
    seen: Mutex<ReplayCache>,
    peers: Mutex<HashMap<String, PeerRecord>>,
}

impl Plane {
    /// The plane of a configuration (keys are validated by the config load,
    /// but a keyring file may have changed since: it is read again here).
    pub fn from_config(config: &Config) -> Result<Plane, KeyringError> {
        let keyring = match (&config.keyring_file, &config.cluster_key) {
            (Some(path), _) => Some(Keyring::load(path)?),
            (None, Some(key)) => Some(Keyring::new(&[key])?),
            (None, None) if !config.cluster_keys.is_empty() => {
                Some(Keyring::new(&config.cluster_keys)?)
            }
            (None, None) => None,
        };
        Ok(Plane::new(
            keyring,
            config.keyring_file.clone(),
            config.effective_internal_auth(),
            config.signature_window_ms,
            config.protocol_version,
        ))
    }

    pub fn new(
        keyring: Option<Keyring>,
        keyring_file: Option<PathBuf>,
        mode: InternalAuth,
        window_ms: u64,
        protocol: u32,
    ) -> Plane {
        Plane {
            keyring: RwLock::new(keyring.map(Arc::new)),
            keyring_file,
            mode,
            window_ms,
            protocol,
            seen: Mutex::new(ReplayCache::default()),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The keys in force (`None`: this replica has no key and ignores
    /// signature headers).
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// `required`, `transitional`, or `off` (no key).
    pub fn mode_name(&self) -> &'static str {
        match (self.keyring().is_some(), self.mode) {
            (false, _) => "off",
            (true, InternalAuth::Required) => "required",
            (true, InternalAuth::Transitional) => "transitional",
        }
    }

    /// Whether a key is set and unsigned messages are refused.
    pub fn required(&self) -> bool {
        self.keyring().is_some() && self.mode == InternalAuth::Required
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The highest protocol version this replica speaks.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// The versions this replica answers. Version 1 is unsigned, so a
    /// replica that requires signatures does not speak it; a replica set to
    /// version 1 (rolling upgrades) speaks only it.
    pub fn speaks(&self) -> Vec<u32> {
        if self.protocol == PROTOCOL_LEGACY {
            vec![PROTOCOL_LEGACY]
        } else if self.required() {
            vec![PROTOCOL_SIGNED]
        } else {
            vec![PROTOCOL_LEGACY, PROTOCOL_SIGNED]
        }
    }

    /// Reads the keyring file again and installs it if valid. An invalid
    /// file is refused whole: the keyring is unchanged, an error logged and
    /// counted. Without a keyring file there is nothing to reload.
    pub fn reload(&self) -> Result<Vec<String>, KeyringError> {
        let Some(path) = &self.keyring_file else {
            info!("SIGHUP: no keyring_file configured; nothing to reload");
            return Ok(self.keyring().map(|k| k.ids()).unwrap_or_default());
        };
        match Keyring::load(path) {
            Ok(keyring) => {
                let ids = keyring.ids();
                *self
                    .keyring
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(keyring));
                info!(keys = ?ids, "keyring reloaded");
                metrics::counter!(names::KEYRING_RELOADS, "outcome" => "installed").increment(1);
                Ok(ids)
            }
            Err(why) => {
                error!(file = %path.display(), %why, "keyring reload refused; keeping the keys in force");
                metrics::counter!(names::KEYRING_RELOADS, "outcome" => "refused").increment(1);
                Err(why)
            }
        }
    }

    /// Counts a verification failure, labelled with the key id only when it
    /// is installed (else `unknown`), so that labels stay bounded.
    pub fn count_failure(&self, direction: &'static str, key_id: Option<&str>, failure: Failure) {
        let label = match (key_id, self.keyring()) {
            (Some(id), Some(ring)) if ring.get(id).is_some() => id.to_string(),
            _ => "unknown".to_string(),
        };
        metrics::counter!(names::INTERNAL_AUTH_FAILURES,
            "direction" => direction, "key_id" => label, "reason" => failure.label())
        .increment(1);
    }

    /// Checks a parsed signature against the keyring: the key id must be
    /// installed, the timestamp inside the window, and `verify` (given the
    /// key; it recomputes the MAC over the message) must pass. A request's
    /// (`is_request`) nonce is then recorded, refusing replays.
    pub fn check(
        &self,
        keyring: &Keyring,
        signature: &Signature,
        is_request: bool,
        verify: impl FnOnce(&crate::keyring::Key) -> bool,
    ) -> Result<(), Failure> {
        let key = keyring.get(&signature.key_id).ok_or(Failure::UnknownKey)?;
        let now = crate::node::wall_ms();
        if !signing::within_window(signature.timestamp, now, self.window_ms) {
            return Err(Failure::OutsideWindow);
        }
        if !verify(key) {
            return Err(Failure::BadSignature);
        }
        if is_request {
            let nonce = signature.nonce.ok_or(Failure::BadSignature)?;
            // Only after the MAC verified: forged nonces cannot fill the cache.
            let fresh = self
                .seen
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .admit(
                    &signature.key_id,
                    nonce,
                    signature.timestamp,
                    now,
                    self.window_ms,
                );
            if !fresh {
                return Err(Failure::Replayed);
            }
        }
        Ok(())
    }

    fn with_peer<T>(&self, address: &str, f: impl FnOnce(&mut PeerRecord) -> T) -> T {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The common case, on every call: no allocation for the key.
        if let Some(record) = peers.get_mut(address) {
            return f(record);
        }
        if peers.len() >= MAX_PEERS {
            if let Some(any) = peers.keys().next().cloned() {
                peers.remove(&any);
            }
        }
        f(peers.entry(address.to_string()).or_default())
    }

    /// Whether `address` has proved it holds one of this replica's keys.
    pub fn trusted(&self, address: &str) -> bool {
        self.with_peer(address, |p| p.trusted)
    }

    /// A verified answer from `address`, announcing `ids`.
    pub fn verified(&self, address: &str, ids: Vec<String>) {
        self.with_peer(address, |p| {
            p.trusted = true;
            p.announced = Some(ids);
        });
    }

    /// An answer from `address` failed verification: it is a stranger again.
    pub fn distrust(&self, address: &str) {
        self.with_peer(address, |p| p.trusted = false);
    }

    /// Records the versions `address` says it speaks.
    pub fn heard_versions(&self, address: &str, speaks: Vec<u32>) {
        self.with_peer(address, |p| p.speaks = Some(speaks));
    }

    /// The version to use with `address`: the highest both speak, or this
    /// replica's own until the peer has said.
    /// With a key it is always this replica's own: version 1 is unsigned.
    pub fn version_for(&self, address: &str) -> u32 {
        if self.keyring().is_some() {
            return self.protocol;
        }
        let ours = self.speaks();
        let theirs = self.with_peer(address, |p| p.speaks.clone());
        let own_best = *ours.last().expect("a replica speaks some version");
        match theirs {
            None => own_best,
            Some(theirs) => ours
                .iter()
                .rev()
                .find(|v| theirs.contains(v))
                .copied()
                .unwrap_or(own_best),
        }
    }

    /// `GET /keyring`'s view of these addresses.
    pub fn peer_keys(&self, addresses: impl IntoIterator<Item = String>) -> Vec<PeerKeys> {
        addresses
            .into_iter()
            .map(|address| {
                let record = self.with_peer(&address, |p| p.clone());
                let protocol = self.version_for(&address);
                PeerKeys {
                    address,
                    announced: record.announced,
                    trusted: record.trusted,
                    protocol,
                }
            })
            .collect()
    }
}

/// The versions named in an answer's `x-hearsay-protocols` header. Absent
/// from a successful answer: `[1]`, what a replica from before versioning
/// speaks; absent from a failed one: unknown (`None`), since whatever
/// answered (a proxy, a connection limit) may not be a replica at all.
/// Bounded: at most 8 read.
pub fn versions_in(status: u16, headers: &HeaderMap) -> Option<Vec<u32>> {
    let success = (200..300).contains(&status);
    Some(
        match headers
            .get(super::PROTOCOLS_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            None if success => vec![PROTOCOL_LEGACY],
            None => return None,
            Some(text) => text
                .split(',')
                .take(8)
                .filter_map(|v| v.trim().parse().ok())
                .collect(),
        },
    )
}

/// The version named in a `x-hearsay-protocol` header (absent: 1).
pub fn version_of(headers: &HeaderMap) -> Result<u32, String> {
    match headers.get(super::PROTOCOL_HEADER) {
        None => Ok(PROTOCOL_LEGACY),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{value:?}")),
    }
}

/// `1, 2` — for headers and error texts.
pub fn list(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::key_id;

    const K1: &str = "first-key-of-16-bytes";
    const K2: &str = "second-key-of-16-bytes";

    fn plane(keyring: Option<Keyring>, mode: InternalAuth, protocol: u32) -> Plane {
        Plane::new(keyring, None, mode, 30_000, protocol)
    }

    #[test]
    fn the_version_used_is_the_highest_both_speak() {
        let open = plane(None, InternalAuth::Required, 2);
        assert_eq!(open.speaks(), vec![1, 2]);
        assert_eq!(open.version_for("a"), 2, "until the peer has said");
        open.heard_versions("a", vec![1]);
        assert_eq!(open.version_for("a"), 1);
        open.heard_versions("a", vec![1, 2, 3]);
        assert_eq!(open.version_for("a"), 2);
        let legacy = plane(None, InternalAuth::Required, 1);
        assert_eq!(legacy.speaks(), vec![1]);
        legacy.heard_versions("a", vec![1, 2]);
        assert_eq!(legacy.version_for("a"), 1);
        // With a key, never the unsigned version 1.
        let keyed = plane(
            Some(Keyring::new(&[K1]).unwrap()),
            InternalAuth::Required,
            2,
        );
        assert_eq!(keyed.speaks(), vec![2]);
        keyed.heard_versions("a", vec![1]);
        assert_eq!(keyed.version_for("a"), 2);
        let transitional = plane(
            Some(Keyring::new(&[K1]).unwrap()),
            InternalAuth::Transitional,
            2,
        );
        assert_eq!(transitional.speaks(), vec![1, 2]);
        assert_eq!(transitional.mode_name(), "transitional");
    }

    #[test]
    fn a_reload_installs_a_valid_file_whole_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        std::fs::write(&path, format!("{K1}\n")).unwrap();
        let plane = Plane::new(
            Some(Keyring::load(&path).unwrap()),
            Some(path.clone()),
            InternalAuth::Required,
            30_000,
            2,
        );
        let (id1, id2) = (key_id(K1.as_bytes()), key_id(K2.as_bytes()));
        std::fs::write(&path, format!("{K2}\n{K1}\n")).unwrap();
        assert_eq!(plane.reload().unwrap(), vec![id2.clone(), id1.clone()]);
        assert_eq!(plane.keyring().unwrap().primary().id(), id2);
        for bad in [
            "# no key left\n".to_string(),
            format!("{K2}\nshort\n"),
            format!("{K2}\n{K2}\n"),
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(plane.reload().is_err());
            assert_eq!(
                plane.keyring().unwrap().ids(),
                vec![id2.clone(), id1.clone()]
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(plane.reload().is_err(), "a missing file changes nothing");
        assert_eq!(plane.keyring().unwrap().ids(), vec![id2, id1]);
    }

    #[test]
    fn trust_follows_verification() {
        let plane = plane(
            Some(Keyring::new(&[K1]).unwrap()),
            InternalAuth::Required,
            2,
        );
        assert!(!plane.trusted("a"));
        plane.verified("a", vec!["x".into()]);
        assert!(plane.trusted("a"));
        let shown = plane.peer_keys(["a".to_string(), "b".to_string()]);
        assert_eq!(shown[0].announced, Some(vec!["x".to_string()]));
        assert!(shown[0].trusted);
        assert_eq!(shown[1].announced, None);
        plane.distrust("a");
        assert!(!plane.trusted("a"));
    }
}
