//! The vault's schema version and its migrations.
//!
//! `meta/schema_version` holds the version a vault was last written with. Opening for writing runs
//! every step from that version up to [`SCHEMA_VERSION`] in one transaction (after the key check, so
//! a wrong key never migrates anything). A vault from a newer build is refused, never guessed at.
//!
//! To change the format: bump [`SCHEMA_VERSION`], append a step to `STEPS`, and keep a vault written by the previous version as a test fixture.

use super::error::VaultError;
use super::store::{Table, WriteTx};

/// Schema version written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// Meta key of the schema version (4 bytes, big-endian).
pub(crate) const META_SCHEMA: &[u8] = b"schema_version";

/// Decode a stored schema version.
pub(crate) fn decode(bytes: &[u8]) -> Result<u32, VaultError> {
    let bytes: [u8; 4] = bytes
        .try_into()
        .map_err(|_| VaultError::Corrupt("meta/schema_version is not 4 bytes".into()))?;
    Ok(u32::from_be_bytes(bytes))
}

/// Refuse versions this build does not know.
pub(crate) fn check(found: u32) -> Result<(), VaultError> {
    if found == 0 || found > SCHEMA_VERSION {
        return Err(VaultError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// One migration step: moves a vault up by one version, inside the caller's transaction.
type Step = fn(&mut dyn WriteTx) -> Result<(), VaultError>;

/// `STEPS[i]` moves a vault from version `i + 1` to `i + 2`. Empty: version 1 is the first format.
const STEPS: &[Step] = &[];

/// Bring a vault at `from` up to [`SCHEMA_VERSION`] inside `tx`. Returns whether anything changed.
pub(crate) fn migrate(tx: &mut dyn WriteTx, from: u32) -> Result<bool, VaultError> {
    check(from)?;
    if from == SCHEMA_VERSION {
        return Ok(false);
    }
    for step in &STEPS[(from - 1) as usize..] {
        step(tx)?;
    }
    tx.put(Table::Meta, META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_per_version() {
        assert_eq!(STEPS.len() as u32, SCHEMA_VERSION - 1);
        assert!(
            check(0).is_err()
                && check(SCHEMA_VERSION + 1).is_err()
                && check(SCHEMA_VERSION).is_ok()
        );
    }
}
