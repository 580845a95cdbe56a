//! The HMAC crypto `jsonwebtoken` signs and verifies with: HS256, HS384 and HS512 on `hmac` and
//! `sha2`, the crates the daemon already links.
//!
//! `jsonwebtoken` is built without a crypto feature: its `rust_crypto` feature brings RSA, ECDSA and
//! Ed25519 (and an older generation of the RustCrypto crates) for algorithms the daemon never
//! accepts, the largest part of its size in the release binary (docs/performance.md, "Binary
//! size"). Its `CryptoProvider` is the crate's own way to choose the crypto instead: this one does
//! what `jsonwebtoken::crypto::rust_crypto` does for the HMAC family and refuses every other
//! algorithm, which [`super::jwt`] refuses before it gets here anyway (HS256 only). HS384 and
//! HS512 are here so that tests can still make the tokens the daemon must refuse.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::{Sha256, Sha384, Sha512};

/// The provider [`install`] installs.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    // No JWKs: the daemon takes a shared secret only.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] `jsonwebtoken`'s for this process; later calls do nothing. Called before the
/// daemon builds a JWT key, and by tests before they sign a token.
pub fn install() {
    // Err when one is installed already: this one, by an earlier call.
    let _ = PROVIDER.install_default();
}

/// An HMAC key over one hash, for one algorithm.
enum HmacKey {
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

/// Signs and verifies with an [`HmacKey`].
struct HmacJwt {
    algorithm: Algorithm,
    key: HmacKey,
}

impl HmacJwt {
    /// Refuses every algorithm outside the HMAC family, as `jsonwebtoken`'s own providers do with
    /// a key of the wrong family.
    fn new(algorithm: Algorithm, secret: &[u8]) -> Result<HmacJwt, Error> {
        let invalid = |_| Error::from(ErrorKind::InvalidKeyFormat);
        let key = match algorithm {
            Algorithm::HS256 => HmacKey::Sha256(KeyInit::new_from_slice(secret).map_err(invalid)?),
            Algorithm::HS384 => HmacKey::Sha384(KeyInit::new_from_slice(secret).map_err(invalid)?),
            Algorithm::HS512 => HmacKey::Sha512(KeyInit::new_from_slice(secret).map_err(invalid)?),
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        };
        Ok(HmacJwt { algorithm, key })
    }

    fn mac(&self, message: &[u8]) -> Vec<u8> {
        match &self.key {
            HmacKey::Sha256(key) => key
                .clone()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
            HmacKey::Sha384(key) => key
                .clone()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
            HmacKey::Sha512(key) => key
                .clone()
                .chain_update(message)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }
}

impl Signer<Vec<u8>> for HmacJwt {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.mac(message))
    }
}

impl Verifier<Vec<u8>> for HmacJwt {
    /// Compares in constant time (`Mac::verify_slice`).
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match &self.key {
            HmacKey::Sha256(key) => key.clone().chain_update(message).verify_slice(signature),
            HmacKey::Sha384(key) => key.clone().chain_update(message).verify_slice(signature),
            HmacKey::Sha512(key) => key.clone().chain_update(message).verify_slice(signature),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for HmacJwt {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl JwtVerifier for HmacJwt {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// A key of another family than HMAC is refused as `jsonwebtoken`'s own HMAC signer refuses it.
fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(HmacJwt::new(*algorithm, key.as_bytes())?))
}

/// A key of another family than HMAC is refused as `jsonwebtoken`'s own HMAC verifier refuses it.
fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(HmacJwt::new(*algorithm, key.try_get_as_bytes()?)?))
}
