//! Record sealing: AES-256-CBC with a random IV per record, then HMAC-SHA256 (encrypt-then-MAC)
//! over the table name, the record key, the format version, the IV and the ciphertext. The
//! encryption and MAC keys are derived from the master key by HKDF-SHA256.
//!
//! Sealed record: `version (1) | iv (16) | ciphertext (16·n) | mac (32)`. Binding the table and the
//! key into the MAC means a record copied to another key (another user's credentials) or another
//! table fails to open, as does any flipped byte. The MAC is checked, in constant time, before
//! anything is decrypted.

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::MasterKey;

/// Format version of sealed records written by this build.
pub const FORMAT_V1: u8 = 1;
const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;
const BLOCK: usize = 16;
const INFO_ENC: &[u8] = b"tokenbot vault v1 aes-256-cbc";
const INFO_MAC: &[u8] = b"tokenbot vault v1 hmac-sha256";
const INFO_LINK: &[u8] = b"tokenbot link v1 hmac-sha256";

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why a sealed record did not open. Deliberately coarse: the caller reports an integrity error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short, or not a whole number of blocks.
    Malformed,
    /// A format version this build does not know.
    UnknownVersion(u8),
    /// The MAC does not match (tampered, moved, or another key).
    Mac,
}

/// The encryption and MAC keys of one master key, and the key that signs login links. Zeroized
/// on drop; never printed.
pub struct RecordKeys {
    enc: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    link: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKeys(..)")
    }
}

impl RecordKeys {
    /// Derive the keys from `master` with HKDF-SHA256 (distinct `info` strings).
    pub fn derive(master: &MasterKey) -> RecordKeys {
        let hk = Hkdf::<Sha256>::new(None, master.expose());
        let expand = |info: &[u8]| {
            let mut key = Zeroizing::new([0u8; 32]);
            hk.expand(info, key.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            key
        };
        RecordKeys {
            enc: expand(INFO_ENC),
            mac: expand(INFO_MAC),
            link: expand(INFO_LINK),
        }
    }

    fn link_mac(&self, message: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.link.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(message);
        mac
    }

    /// The HMAC-SHA256 of `message` under the link key.
    pub fn sign_link(&self, message: &[u8]) -> [u8; MAC_LEN] {
        self.link_mac(message).finalize().into_bytes().into()
    }

    /// Whether `tag` is `message`'s link signature (compared in constant time).
    pub fn link_signed(&self, message: &[u8], tag: &[u8]) -> bool {
        self.link_mac(message).verify_slice(tag).is_ok()
    }

    /// Encrypt `plaintext` for `table`/`key` with a fresh random IV.
    pub fn seal(&self, table: &str, key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).expect("the operating system's random source failed");
        self.seal_with_iv(table, key, plaintext, iv)
    }

    fn seal_with_iv(&self, table: &str, key: &[u8], plaintext: &[u8], iv: [u8; IV_LEN]) -> Vec<u8> {
        let padded_len = (plaintext.len() / BLOCK + 1) * BLOCK;
        let mut buf = Zeroizing::new(vec![0u8; padded_len]);
        buf[..plaintext.len()].copy_from_slice(plaintext);
        let ciphertext = cbc::Encryptor::<Aes256>::new_from_slices(self.enc.as_slice(), &iv)
            .expect("key and IV have the right lengths")
            .encrypt_padded::<Pkcs7>(&mut buf, plaintext.len())
            .expect("the buffer has room for the padding");
        let mut out = Vec::with_capacity(1 + IV_LEN + ciphertext.len() + MAC_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(ciphertext);
        let tag = self.tag(table, key, FORMAT_V1, &iv, ciphertext);
        out.extend_from_slice(&tag);
        out
    }

    /// Check the MAC of `sealed` for `table`/`key`, then decrypt it.
    pub fn open(
        &self,
        table: &str,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < 1 + IV_LEN + BLOCK + MAC_LEN
            || !(sealed.len() - 1 - IV_LEN - MAC_LEN).is_multiple_of(BLOCK)
        {
            return Err(OpenError::Malformed);
        }
        let version = sealed[0];
        let (iv, rest) = sealed[1..].split_at(IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - MAC_LEN);
        // Checked before the version, so a flipped version byte is a MAC failure too.
        self.mac(table, key, version, iv, ciphertext)
            .verify_slice(tag)
            .map_err(|_| OpenError::Mac)?;
        if version != FORMAT_V1 {
            return Err(OpenError::UnknownVersion(version));
        }
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = cbc::Decryptor::<Aes256>::new_from_slices(self.enc.as_slice(), iv)
            .expect("key and IV have the right lengths")
            .decrypt_padded::<Pkcs7>(&mut buf)
            // Cannot happen once the MAC matched, short of a bug; still no garbage.
            .map_err(|_| OpenError::Mac)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    fn mac(
        &self,
        table: &str,
        key: &[u8],
        version: u8,
        iv: &[u8],
        ciphertext: &[u8],
    ) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.mac.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(&(table.len() as u32).to_be_bytes());
        mac.update(table.as_bytes());
        mac.update(&(key.len() as u32).to_be_bytes());
        mac.update(key);
        mac.update(&[version]);
        mac.update(iv);
        mac.update(ciphertext);
        mac
    }

    fn tag(
        &self,
        table: &str,
        key: &[u8],
        version: u8,
        iv: &[u8],
        ciphertext: &[u8],
    ) -> [u8; MAC_LEN] {
        self.mac(table, key, version, iv, ciphertext)
            .finalize()
            .into_bytes()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> RecordKeys {
        RecordKeys::derive(&MasterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_link_signature_holds_for_its_message_and_key_only() {
        let k = keys(1);
        let tag = k.sign_link(b"kite/u1/1700000000000");
        assert!(k.link_signed(b"kite/u1/1700000000000", &tag));
        assert!(!k.link_signed(b"kite/u2/1700000000000", &tag));
        assert!(!k.link_signed(b"kite/u1/1700000000001", &tag));
        assert!(!k.link_signed(b"kite/u1/1700000000000", &tag[..31]));
        assert!(!keys(2).link_signed(b"kite/u1/1700000000000", &tag));
        // Not the record MAC key: a link tag is no record tag.
        assert_ne!(k.link.as_ref(), k.mac.as_ref());
    }

    #[test]
    fn round_trip_of_every_length_around_block_boundaries() {
        let k = keys(1);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 1000] {
            let plain = vec![0xa5u8; len];
            let sealed = k.seal("t", b"k", &plain);
            assert_eq!(sealed.len() % BLOCK, (1 + MAC_LEN) % BLOCK);
            assert_eq!(
                k.open("t", b"k", &sealed).unwrap().as_slice(),
                plain.as_slice()
            );
        }
    }

    #[test]
    fn fresh_iv_per_record() {
        let k = keys(1);
        assert_ne!(k.seal("t", b"k", b"same"), k.seal("t", b"k", b"same"));
    }

    #[test]
    fn every_flipped_byte_fails_the_mac() {
        let k = keys(2);
        let sealed = k.seal("credentials", b"user/broker", b"hunter2 is the password");
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert_eq!(
                    k.open("credentials", b"user/broker", &bad),
                    Err(OpenError::Mac),
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn table_key_and_master_key_are_bound() {
        let k = keys(3);
        let sealed = k.seal("credentials", b"a", b"secret");
        assert_eq!(k.open("credentials", b"b", &sealed), Err(OpenError::Mac));
        assert_eq!(k.open("tokens", b"a", &sealed), Err(OpenError::Mac));
        assert_eq!(
            keys(4).open("credentials", b"a", &sealed),
            Err(OpenError::Mac)
        );
        // Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        let sealed = k.seal("ab", b"c", b"x");
        assert_eq!(k.open("a", b"bc", &sealed), Err(OpenError::Mac));
    }

    #[test]
    fn truncated_and_extended_records_are_refused() {
        let k = keys(5);
        let sealed = k.seal("t", b"k", b"0123456789abcdef0123");
        for len in 0..sealed.len() {
            assert!(k.open("t", b"k", &sealed[..len]).is_err(), "len {len}");
        }
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 16]);
        assert!(k.open("t", b"k", &longer).is_err());
    }

    #[test]
    fn unknown_version_with_a_valid_mac_is_reported_as_such() {
        let k = keys(6);
        let mut sealed = k.seal("t", b"k", b"x");
        sealed[0] = 9;
        let body_end = sealed.len() - MAC_LEN;
        let tag = k.tag(
            "t",
            b"k",
            9,
            &sealed[1..1 + IV_LEN],
            &sealed[1 + IV_LEN..body_end],
        );
        sealed[body_end..].copy_from_slice(&tag);
        assert_eq!(
            k.open("t", b"k", &sealed),
            Err(OpenError::UnknownVersion(9))
        );
    }
}
