//! The portal's password encryption: OpenSSL `enc` "Salted__" format (CryptoJS-compatible), i.e.
//! an 8-byte random salt, key and IV from EVP_BytesToKey with MD5 (32 + 16 bytes), AES-256-CBC
//! with PKCS#7 padding, base64 of `"Salted__" || salt || ciphertext`.

use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

/// EVP_BytesToKey(MD5, 1 iteration): 32 key bytes and 16 IV bytes.
fn evp_bytes_to_key(passphrase: &[u8], salt: &[u8; 8]) -> Zeroizing<[u8; 48]> {
    let mut out = Zeroizing::new([0u8; 48]);
    let mut prev: Option<Zeroizing<[u8; 16]>> = None;
    let mut filled = 0;
    while filled < 48 {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p.as_slice());
        }
        h.update(passphrase);
        h.update(salt);
        let block: [u8; 16] = h.finalize().into();
        let n = (48 - filled).min(16);
        out[filled..filled + n].copy_from_slice(&block[..n]);
        filled += n;
        prev = Some(Zeroizing::new(block));
    }
    out
}

/// Encrypt `plaintext` under `passphrase` with the given salt.
pub fn openssl_encrypt_with_salt(plaintext: &[u8], passphrase: &[u8], salt: [u8; 8]) -> String {
    let key_iv = evp_bytes_to_key(passphrase, &salt);
    let (key, iv) = key_iv.split_at(32);
    let cipher =
        cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv).expect("32-byte key, 16-byte IV");
    let ciphertext = cipher.encrypt_padded_vec::<Pkcs7>(plaintext);
    let mut framed = Zeroizing::new(Vec::with_capacity(16 + ciphertext.len()));
    framed.extend_from_slice(b"Salted__");
    framed.extend_from_slice(&salt);
    framed.extend_from_slice(&ciphertext);
    base64::engine::general_purpose::STANDARD.encode(framed.as_slice())
}

/// Encrypt `plaintext` under `passphrase` with a random salt.
pub fn openssl_encrypt(plaintext: &[u8], passphrase: &[u8]) -> Result<String, getrandom::Error> {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt)?;
    Ok(openssl_encrypt_with_salt(plaintext, passphrase, salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl_enc() {
        // printf 'Secret#123' | openssl enc -aes-256-cbc -md md5 -S 0001020304050607 \
        //   -pass pass:encKey-From-Portal -base64
        // gives the ciphertext (OpenSSL 3 omits the header when -S is given); framed here as
        // base64("Salted__" || salt || ciphertext), as `openssl enc` writes with a random salt.
        assert_eq!(
            openssl_encrypt_with_salt(
                b"Secret#123",
                b"encKey-From-Portal",
                [0, 1, 2, 3, 4, 5, 6, 7]
            ),
            OPENSSL_VECTOR
        );
    }

    const OPENSSL_VECTOR: &str = "U2FsdGVkX18AAQIDBAUGB+iSU98kSsY6SN22YB8YByM=";
}
