//! Login links: the daemon signs `{broker}/{user}/{until}` so that a link in a notice opens an
//! assisted login without credentials, for that account only and until then. The key is derived
//! from the master key (HKDF, its own label), so links survive a restart and die with a rekey.

use super::Vault;

impl Vault {
    /// The signature (hex) of `message` with the vault's link key.
    pub fn sign_link(&self, message: &str) -> String {
        hex::encode(self.keys.read().sign_link(message.as_bytes()))
    }

    /// Whether `signature` (hex) is `message`'s, by the vault's link key.
    pub fn link_signed(&self, message: &str, signature: &str) -> bool {
        hex::decode(signature)
            .is_ok_and(|tag| self.keys.read().link_signed(message.as_bytes(), &tag))
    }
}
