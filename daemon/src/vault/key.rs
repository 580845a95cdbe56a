//! Master key sources, in order of precedence: `ENCRYPTION_KEY` (64 hex chars, as the Node service
//! used), a passphrase stretched with argon2id (parameters and salt stored in the vault), a key
//! file (`[vault] key_file`), and last the default `vault.key` beside the vault, created with mode
//! 0600 on a fresh checkout.

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::VaultError;
use crate::config::VaultConfig;

/// The 256-bit master key. Zeroized on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the operating system's random source failed");
        MasterKey(bytes)
    }

    /// Parse 64 hex chars (surrounding whitespace ignored). `origin` names the source in errors;
    /// the value is never shown.
    pub fn from_hex(text: &str, origin: &str) -> Result<MasterKey, VaultError> {
        let text = text.trim();
        let bad = |reason| VaultError::BadKey {
            origin: origin.to_owned(),
            reason,
        };
        if text.len() != 64 {
            return Err(bad("expected 64 hex characters (32 bytes)"));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, bytes.as_mut()).map_err(|_| bad("not hexadecimal"))?;
        Ok(MasterKey(bytes))
    }

    /// The key as 64 lowercase hex chars, for a key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// What unlocks a vault: a raw master key, or a passphrase the vault's stored argon2id parameters
/// turn into one.
pub enum KeyMaterial {
    /// A raw key (`ENCRYPTION_KEY` or a key file).
    Key(MasterKey),
    /// A passphrase (`TOKENBOT_PASSPHRASE` or a prompt).
    Passphrase(SecretString),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl KeyMaterial {
    /// `a master key` or `a passphrase`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Key(_) => "a master key",
            KeyMaterial::Passphrase(_) => "a passphrase",
        }
    }
}

/// argon2id cost parameters, chosen when a passphrase vault is created (or rekeyed) and stored in
/// it, so later opens use what the vault was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Memory, in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Argon2Params {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation, single lane): a few hundred
    /// milliseconds once per start.
    fn default() -> Self {
        Argon2Params {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// How the vault's master key is obtained: the plain `meta/kdf` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum KdfRecord {
    /// A raw 32-byte key.
    Key,
    /// argon2id over a passphrase.
    Argon2id {
        #[serde(flatten)]
        params: Argon2Params,
        /// Hex salt (16 random bytes).
        salt: String,
    },
}

impl KdfRecord {
    /// The record for new key material (a fresh salt for a passphrase).
    pub(crate) fn new_for(material: &KeyMaterial, params: Argon2Params) -> KdfRecord {
        match material {
            KeyMaterial::Key(_) => KdfRecord::Key,
            KeyMaterial::Passphrase(_) => {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).expect("the operating system's random source failed");
                KdfRecord::Argon2id {
                    params,
                    salt: hex::encode(salt),
                }
            }
        }
    }

    /// What the vault expects, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            KdfRecord::Key => "a master key (ENCRYPTION_KEY or a key file)",
            KdfRecord::Argon2id { .. } => "a passphrase (TOKENBOT_PASSPHRASE)",
        }
    }

    /// The master key `material` gives under this record.
    pub(crate) fn derive(&self, material: &KeyMaterial) -> Result<MasterKey, VaultError> {
        match (self, material) {
            (KdfRecord::Key, KeyMaterial::Key(key)) => Ok(MasterKey::from_bytes(*key.expose())),
            (KdfRecord::Argon2id { params, salt }, KeyMaterial::Passphrase(pass)) => {
                let salt = hex::decode(salt)
                    .map_err(|_| VaultError::Corrupt("kdf salt is not hex".into()))?;
                argon2id(pass, *params, &salt)
            }
            (vault, given) => Err(VaultError::KeyKindMismatch {
                vault: vault.kind(),
                given: given.kind(),
            }),
        }
    }
}

fn argon2id(
    pass: &SecretString,
    params: Argon2Params,
    salt: &[u8],
) -> Result<MasterKey, VaultError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.expose_secret().as_bytes(), salt, out.as_mut())
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    Ok(MasterKey(out))
}

/// Where the key in use came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `ENCRYPTION_KEY` / `[vault] encryption_key`.
    EncryptionKey,
    /// `TOKENBOT_PASSPHRASE` / `[vault] passphrase`.
    Passphrase,
    /// Typed at a prompt.
    Prompt,
    /// An existing key file.
    KeyFile(PathBuf),
    /// A key file created just now because nothing was configured.
    CreatedKeyFile(PathBuf),
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::EncryptionKey => f.write_str("ENCRYPTION_KEY"),
            KeyOrigin::Passphrase => f.write_str("TOKENBOT_PASSPHRASE"),
            KeyOrigin::Prompt => f.write_str("the passphrase prompt"),
            KeyOrigin::KeyFile(p) => write!(f, "key file {}", p.display()),
            KeyOrigin::CreatedKeyFile(p) => write!(f, "new key file {}", p.display()),
        }
    }
}

/// Key material and where it came from.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The material.
    pub material: KeyMaterial,
    /// Its origin.
    pub origin: KeyOrigin,
}

/// `vault.key` beside the vault.
pub fn default_key_file(vault_path: &Path) -> PathBuf {
    match vault_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("vault.key"),
        _ => PathBuf::from("vault.key"),
    }
}

/// The configured key material. A key file (the configured one, else the default) is created only
/// when `allow_create` is set and no vault exists yet: a missing key file beside an existing vault
/// is an error, never a fresh key.
pub fn resolve(config: &VaultConfig, allow_create: bool) -> Result<ResolvedKey, VaultError> {
    if let Some(hex) = &config.encryption_key {
        return Ok(ResolvedKey {
            material: KeyMaterial::Key(MasterKey::from_hex(hex.expose_secret(), "ENCRYPTION_KEY")?),
            origin: KeyOrigin::EncryptionKey,
        });
    }
    if let Some(pass) = &config.passphrase {
        if pass.expose_secret().is_empty() {
            return Err(VaultError::NoKey("TOKENBOT_PASSPHRASE is empty".into()));
        }
        return Ok(ResolvedKey {
            material: KeyMaterial::Passphrase(pass.clone()),
            origin: KeyOrigin::Passphrase,
        });
    }
    let path = config
        .key_file
        .clone()
        .unwrap_or_else(|| default_key_file(&config.path));
    if path.exists() {
        let key = read_key_file(&path)?;
        return Ok(ResolvedKey {
            material: KeyMaterial::Key(key),
            origin: KeyOrigin::KeyFile(path),
        });
    }
    let at = super::configured::location(config);
    if at.exists()? {
        return Err(VaultError::NoKey(format!(
            "the vault {at} exists but the key file {} does not; set ENCRYPTION_KEY, \
             TOKENBOT_PASSPHRASE or [vault] key_file",
            path.display()
        )));
    }
    if !allow_create {
        return Err(VaultError::NotFound(at.to_string()));
    }
    let key = MasterKey::generate();
    write_key_file(&path, &key)?;
    tracing::warn!(
        key_file = %path.display(),
        "created a NEW DEVELOPMENT MASTER KEY at {} (mode 0600). Whoever has this file can read every \
         credential in the vault: back it up, keep it off shared disks, or set ENCRYPTION_KEY / \
         TOKENBOT_PASSPHRASE in production",
        path.display()
    );
    Ok(ResolvedKey {
        material: KeyMaterial::Key(key),
        origin: KeyOrigin::CreatedKeyFile(path),
    })
}

/// Read a key file: 64 hex chars. Warns when group or others may read it.
pub fn read_key_file(path: &Path) -> Result<MasterKey, VaultError> {
    let io = |source| VaultError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key_file = %path.display(),
                "key file {} has mode {:o}: group or others can read it (chmod 600)",
                path.display(),
                mode & 0o777
            );
        }
    }
    MasterKey::from_hex(&text, &format!("key file {}", path.display()))
}

/// Write `key` to a new file (mode 0600 on Unix), creating parent directories. Refuses to
/// overwrite an existing file.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), VaultError> {
    let io = |source| VaultError::KeyFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::engine::create_private_dir(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut line = key.to_hex();
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_key_errors_never_show_the_value() {
        let err = MasterKey::from_hex("zz".repeat(32).as_str(), "ENCRYPTION_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ENCRYPTION_KEY") && !err.contains("zz"),
            "{err}"
        );
        let err = MasterKey::from_hex("abc", "ENCRYPTION_KEY")
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex") && !err.contains("abc"), "{err}");
        let key = MasterKey::from_hex(&format!(" {}\n", "0f".repeat(32)), "x").unwrap();
        assert_eq!(key.to_hex().as_str(), "0f".repeat(32));
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }

    #[test]
    fn default_key_file_sits_beside_the_vault() {
        assert_eq!(
            default_key_file(Path::new("data/vault.redb")),
            PathBuf::from("data/vault.key")
        );
        assert_eq!(
            default_key_file(Path::new("vault.redb")),
            PathBuf::from("vault.key")
        );
    }

    #[test]
    fn key_file_is_created_0600_only_for_a_fresh_vault() {
        let dir = tempfile::tempdir().unwrap();
        let config = VaultConfig {
            path: dir.path().join("data/vault.redb"),
            ..VaultConfig::default()
        };
        assert!(matches!(
            resolve(&config, false),
            Err(VaultError::NotFound(_))
        ));
        let created = resolve(&config, true).unwrap();
        let path = dir.path().join("data/vault.key");
        assert_eq!(created.origin, KeyOrigin::CreatedKeyFile(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = resolve(&config, true).unwrap();
        assert_eq!(again.origin, KeyOrigin::KeyFile(path.clone()));
        let (KeyMaterial::Key(a), KeyMaterial::Key(b)) = (created.material, again.material) else {
            panic!("expected raw keys")
        };
        assert_eq!(a.expose(), b.expose());
        // A vault without its key file: an error, not a new key.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&config.path, b"x").unwrap();
        let err = resolve(&config, true).unwrap_err().to_string();
        assert!(err.contains("key file") && !path.exists(), "{err}");
    }

    #[test]
    fn kind_mismatch_is_reported() {
        let kdf = KdfRecord::new_for(
            &KeyMaterial::Passphrase("p".into()),
            Argon2Params::default(),
        );
        let err = kdf
            .derive(&KeyMaterial::Key(MasterKey::generate()))
            .unwrap_err();
        assert!(matches!(err, VaultError::KeyKindMismatch { .. }), "{err}");
    }

    #[test]
    fn argon2id_is_deterministic_per_salt() {
        let params = Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let pass = KeyMaterial::Passphrase("correct horse".into());
        let kdf = KdfRecord::new_for(&pass, params);
        let a = kdf.derive(&pass).unwrap();
        let b = kdf.derive(&pass).unwrap();
        assert_eq!(a.expose(), b.expose());
        let other = KdfRecord::new_for(&pass, params).derive(&pass).unwrap();
        assert_ne!(a.expose(), other.expose());
    }
}
