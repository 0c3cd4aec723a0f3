//! The secret box: AES-256-GCM with the key id stored beside every ciphertext.
//!
//! A key ring holds several keys; the first encrypts, all decrypt. Rotation puts a new key in
//! front and re-encrypts the stored values, after which older keys can be retired. The
//! associated data binds a ciphertext to the row it belongs to, so a ciphertext copied into
//! another row (or tenant) does not decrypt.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

const NONCE_LEN: usize = 12;

/// Why a key ring could not be read or written, or a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    /// The key ring's text holds no key.
    #[error("the key ring is empty")]
    EmptyKeyRing,
    /// An entry of the key ring's text is malformed.
    #[error("key ring entry {line}: {reason}")]
    BadKeyLine {
        /// Which entry, counted from 1 (comment lines are not counted).
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value was sealed with a key that is not in the ring; holds that key's id.
    #[error("no key with id {0:?} is in the key ring")]
    UnknownKey(String),
    /// Decryption failed: the ciphertext was altered or truncated, or the context differs.
    #[error("the ciphertext is corrupt or belongs to another record")]
    Corrupt,
    /// Reading, writing or syncing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file (or its temporary file, or its directory) concerned.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// One master key. The bytes are wiped when it is dropped and never printed.
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    /// A new random 256-bit key with a random id (`mk_` and 8 hex digits).
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        let mut tag = [0u8; 4];
        rand::rngs::OsRng.fill_bytes(&mut tag);
        Self { id: format!("mk_{}", hex::encode(tag)), bytes }
    }

    /// The key's id, stored beside every value it seals.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The ordered list of master keys. Its text form is one `id:base64` line per key, first
/// line first; that is both the key file's content and the accepted `SWITCHBOARD_MASTER_KEY`
/// value (entries may also be separated by commas there). Errors count entries, not lines.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<MasterKey>,
}

impl KeyRing {
    /// A ring of one new random key.
    pub fn generate() -> Self {
        Self { keys: vec![MasterKey::generate()] }
    }

    /// Reads the text form (see [`KeyRing`]); lines starting with `#` are comments. Malformed
    /// entries, duplicate ids and an empty ring are refused.
    pub fn parse(text: &str) -> Result<Self, SecretBoxError> {
        let mut keys = Vec::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim);
        for (index, line) in entries.enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = |reason| SecretBoxError::BadKeyLine { line: index + 1, reason };
            let (id, encoded) = line.split_once(':').ok_or(bad("expected <id>:<base64 key>"))?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(bad("the key id must be letters, digits, '_' or '-'"));
            }
            let mut decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad("the key is not base64"))?;
            if decoded.len() != 32 {
                decoded.zeroize();
                return Err(bad("the key must be 32 bytes"));
            }
            let mut bytes = Zeroizing::new([0u8; 32]);
            bytes.copy_from_slice(&decoded);
            decoded.zeroize();
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(bad("duplicate key id"));
            }
            keys.push(MasterKey { id: id.to_string(), bytes });
        }
        if keys.is_empty() {
            return Err(SecretBoxError::EmptyKeyRing);
        }
        Ok(Self { keys })
    }

    /// The text form. It contains the keys themselves: write it only to the key file.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out =
            String::from("# Switchboard master keys: the first encrypts, all decrypt. Keep this file secret.\n");
        for key in &self.keys {
            out.push_str(&key.id);
            out.push(':');
            out.push_str(&STANDARD.encode(key.bytes.as_ref()));
            out.push('\n');
        }
        Zeroizing::new(out)
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, SecretBoxError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|source| SecretBoxError::Io { path: path.display().to_string(), source })?,
        );
        Self::parse(&text)
    }

    /// Writes the key file with mode 0600, atomically (a temporary file renamed over it, then
    /// the directory synced), so a crash leaves either the old ring or the new one on disk.
    pub fn save(&self, path: &Path) -> Result<(), SecretBoxError> {
        let tmp = self.write_temporary(path)?;
        std::fs::rename(&tmp, path).map_err(|source| io_error(path, source))?;
        sync_parent(path)
    }

    /// Writes the key file only if none exists yet. Returns false (writing nothing) when
    /// another process created it first; that file is then the one to load.
    pub fn save_new(&self, path: &Path) -> Result<bool, SecretBoxError> {
        let tmp = self.write_temporary(path)?;
        // A hard link publishes the complete file under its name, or fails if the name exists.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_parent(path).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(io_error(path, source)),
        }
    }

    fn write_temporary(&self, path: &Path) -> Result<std::path::PathBuf, SecretBoxError> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(|source| io_error(&tmp, source))?;
        file.write_all(self.to_text().as_bytes()).map_err(|source| io_error(&tmp, source))?;
        file.sync_all().map_err(|source| io_error(&tmp, source))?;
        Ok(tmp)
    }

    /// Puts a new key in front; returns its id.
    pub fn rotate(&mut self) -> String {
        let key = MasterKey::generate();
        let id = key.id.clone();
        self.keys.insert(0, key);
        id
    }

    /// The id of the key that seals new values.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key's id, the primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }
}

fn io_error(path: &Path, source: std::io::Error) -> SecretBoxError {
    SecretBoxError::Io { path: path.display().to_string(), source }
}

/// Makes a rename or link durable: the directory entry itself must reach the disk.
fn sync_parent(path: &Path) -> Result<(), SecretBoxError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(|source| io_error(parent, source))
}

/// A sealed value: which key sealed it and `nonce || ciphertext || tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// The 12-byte nonce, then the ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Encrypts and decrypts with a key ring.
pub struct SecretBox {
    ring: KeyRing,
    ciphers: Vec<(String, Aes256Gcm)>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").field("ring", &self.ring).finish()
    }
}

impl SecretBox {
    /// A box that seals with the ring's first key and opens with any of its keys.
    pub fn new(ring: KeyRing) -> Self {
        let ciphers = ring
            .keys
            .iter()
            .map(|k| (k.id.clone(), Aes256Gcm::new_from_slice(k.bytes.as_ref()).expect("32-byte key")))
            .collect();
        Self { ring, ciphers }
    }

    /// The key ring this box uses.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Encrypts with the primary key. `context` is authenticated but not stored: pass the same
    /// bytes (e.g. the owning tenant and record id) to [`SecretBox::open`].
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let (key_id, cipher) = &self.ciphers[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let body = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + body.len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&body);
        Sealed { key_id: key_id.clone(), ciphertext }
    }

    /// Decrypts with the key `sealed` names. `context` must be the bytes given to
    /// [`SecretBox::seal`]; any other context, or an altered ciphertext, is
    /// [`SecretBoxError::Corrupt`].
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretBoxError> {
        let cipher = self
            .ciphers
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretBoxError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.ciphertext.len() < NONCE_LEN {
            return Err(SecretBoxError::Corrupt);
        }
        let (nonce, body) = sealed.ciphertext.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: context })
            .map(Zeroizing::new)
            .map_err(|_| SecretBoxError::Corrupt)
    }

    /// Whether a value was sealed with an older key and should be re-encrypted.
    pub fn needs_rotation(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.ring.primary_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_context() {
        let sb = SecretBox::new(KeyRing::generate());
        let sealed = sb.seal(b"hunter2", b"ten_a/sec_1");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(&sb.open(&sealed, b"ten_a/sec_1").unwrap()[..], b"hunter2");
        assert!(matches!(sb.open(&sealed, b"ten_b/sec_1"), Err(SecretBoxError::Corrupt)));
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let sb = SecretBox::new(KeyRing::generate());
        let mut sealed = sb.seal(b"value", b"ctx");
        let last = sealed.ciphertext.len() - 1;
        sealed.ciphertext[last] ^= 1;
        assert!(matches!(sb.open(&sealed, b"ctx"), Err(SecretBoxError::Corrupt)));
    }

    #[test]
    fn after_rotation_the_new_key_encrypts_and_old_values_still_open() {
        let mut ring = KeyRing::generate();
        let old_id = ring.primary_id().to_string();
        let text = ring.to_text();
        let old_box = SecretBox::new(KeyRing::parse(&text).unwrap());
        let old_value = old_box.seal(b"old", b"c");

        let new_id = ring.rotate();
        let sb = SecretBox::new(ring);
        assert_ne!(new_id, old_id);
        assert_eq!(&sb.open(&old_value, b"c").unwrap()[..], b"old");
        assert!(sb.needs_rotation(&old_value));
        let fresh = sb.seal(b"new", b"c");
        assert_eq!(fresh.key_id, new_id);
        assert!(!sb.needs_rotation(&fresh));
    }

    #[test]
    fn key_ring_text_round_trips_and_bad_lines_name_the_line() {
        let mut ring = KeyRing::generate();
        ring.rotate();
        let parsed = KeyRing::parse(&ring.to_text()).unwrap();
        assert_eq!(parsed.key_ids().collect::<Vec<_>>(), ring.key_ids().collect::<Vec<_>>());
        let err = KeyRing::parse("a:AAAA").unwrap_err();
        assert!(matches!(err, SecretBoxError::BadKeyLine { line: 1, .. }), "{err}");
        assert!(matches!(KeyRing::parse("# only a comment"), Err(SecretBoxError::EmptyKeyRing)));
    }

    #[test]
    fn key_file_is_written_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("sb-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let ring = KeyRing::generate();
        ring.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(KeyRing::load(&path).unwrap().primary_id(), ring.primary_id());
        // A second first start never replaces an existing ring.
        assert!(!KeyRing::generate().save_new(&path).unwrap());
        assert_eq!(KeyRing::load(&path).unwrap().primary_id(), ring.primary_id());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
