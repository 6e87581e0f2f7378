//! The cluster keys this replica holds: validation, parsing of a keyring
//! file, and the key ids that name keys without revealing them.
//!
//! A [`Keyring`] is immutable once built; rotation builds a new one (from the
//! file, on SIGHUP) and swaps it in whole, so a message is always signed and
//! verified against one consistent set. The first key is the primary: it
//! signs. Every key verifies. Keys never leave the process: only their ids
//! (a truncated hash) appear in headers, logs, metrics and `GET /keyring`.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Shortest accepted key, in bytes (a guessable key is no key).
pub const MIN_KEY_BYTES: usize = 16;
/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys one keyring may hold (also bounds the metric labels per id).
pub const MAX_KEYS: usize = 16;
/// Largest keyring file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Separates key ids from every other use of SHA-256 over a key.
const KEY_ID_DOMAIN: &[u8] = b"hearsay key id v1\0";

/// One installed key: its secret bytes and its public id.
#[derive(Clone)]
pub struct Key {
    id: String,
    secret: Vec<u8>,
}

impl Key {
    /// The key's id: hex of the first 8 bytes of SHA-256 over a
    /// domain-separation prefix and the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in debug output.
        write!(f, "Key({})", self.id)
    }
}

/// The id of `secret` (see [`Key::id`]).
pub fn key_id(secret: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(KEY_ID_DOMAIN);
    hash.update(secret);
    hex::encode(&hash.finalize()[..8])
}

/// Why a key or a keyring is refused. Never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("key {position} is {len} bytes: allowed {MIN_KEY_BYTES}..={MAX_KEY_BYTES}")]
    Length { position: usize, len: usize },
    #[error("key {position} contains a control character")]
    Control { position: usize },
    #[error("key {position} repeats an earlier key (id {id})")]
    Duplicate { position: usize, id: String },
    #[error("no key: a keyring needs at least one")]
    Empty,
    #[error("more than {MAX_KEYS} keys")]
    TooMany,
    #[error("cannot read keyring file {path}: {why}")]
    Unreadable { path: String, why: String },
}

/// The keys of one replica, primary first. Never empty.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of `secrets`, primary first, each validated: 16..=256
    /// bytes, no control characters, no duplicates, at least one, at most
    /// [`MAX_KEYS`]. Positions in errors count from 1.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Keyring, KeyringError> {
        if secrets.is_empty() {
            return Err(KeyringError::Empty);
        }
        if secrets.len() > MAX_KEYS {
            return Err(KeyringError::TooMany);
        }
        let mut keys: Vec<Key> = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            let position = index + 1;
            if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&secret.len()) {
                return Err(KeyringError::Length {
                    position,
                    len: secret.len(),
                });
            }
            // What a stray newline, tab or terminal escape would add to a
            // pasted key: ASCII controls, and Unicode ones in UTF-8 text.
            let control = match std::str::from_utf8(secret) {
                Ok(text) => text.chars().any(char::is_control),
                Err(_) => secret.iter().any(u8::is_ascii_control),
            };
            if control {
                return Err(KeyringError::Control { position });
            }
            let id = key_id(secret);
            if keys.iter().any(|k| k.secret == secret) {
                return Err(KeyringError::Duplicate { position, id });
            }
            keys.push(Key {
                id,
                secret: secret.to_vec(),
            });
        }
        Ok(Keyring { keys })
    }

    /// Parses a keyring file: one key per line, primary first; blank lines
    /// and lines starting with `#` are skipped; surrounding spaces and the
    /// line ending are not part of a key.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let secrets: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        Keyring::new(&secrets)
    }

    /// Reads and parses a keyring file (bounded to 64 KiB).
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let unreadable = |why: String| KeyringError::Unreadable {
            path: path.display().to_string(),
            why,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| unreadable(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(unreadable(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        Keyring::parse(&text)
    }

    /// The key that signs.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if installed.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key id, primary first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-key-a";
    const B: &str = "0123456789abcdef-key-b";

    #[test]
    fn ids_are_stable_short_and_do_not_contain_the_key() {
        let id = key_id(A.as_bytes());
        assert_eq!(id.len(), 16);
        assert_eq!(id, key_id(A.as_bytes()));
        assert_ne!(id, key_id(B.as_bytes()));
        assert!(!id.contains("0123456789abcdef"));
    }

    #[test]
    fn files_skip_comments_and_blank_lines_and_keep_order() {
        let ring = Keyring::parse(&format!("# rotation 7\n\n  {B}  \n# old\n{A}\n")).unwrap();
        assert_eq!(ring.ids(), vec![key_id(B.as_bytes()), key_id(A.as_bytes())]);
        assert_eq!(ring.primary().id(), key_id(B.as_bytes()));
        assert!(ring.get(&key_id(A.as_bytes())).is_some());
        assert!(ring.get("0000000000000000").is_none());
    }

    #[test]
    fn bad_keys_are_refused_by_position_without_showing_them() {
        assert_eq!(
            Keyring::new(&["short"]).unwrap_err(),
            KeyringError::Length {
                position: 1,
                len: 5
            }
        );
        assert_eq!(
            Keyring::new(&[A, &"k".repeat(257)]).unwrap_err(),
            KeyringError::Length {
                position: 2,
                len: 257
            }
        );
        assert_eq!(
            Keyring::new(&[format!("{A}\t")]).unwrap_err(),
            KeyringError::Control { position: 1 }
        );
        assert_eq!(
            Keyring::new(&[format!("{A}\u{9b}")]).unwrap_err(),
            KeyringError::Control { position: 1 }
        );
        assert!(Keyring::new(&[format!("{A}-ключ")]).is_ok());
        let duplicate = Keyring::new(&[A, B, A]).unwrap_err();
        assert!(matches!(
            duplicate,
            KeyringError::Duplicate { position: 3, .. }
        ));
        assert!(!duplicate.to_string().contains(A));
        assert_eq!(
            Keyring::parse("# nothing\n\n").unwrap_err(),
            KeyringError::Empty
        );
        let many: Vec<String> = (0..17).map(|i| format!("{A}-{i}")).collect();
        assert_eq!(Keyring::new(&many).unwrap_err(), KeyringError::TooMany);
        assert!(Keyring::new(&["k".repeat(16)]).is_ok());
        assert!(Keyring::new(&["k".repeat(256)]).is_ok());
    }
}
