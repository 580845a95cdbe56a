//! Maintenance: verify every record, rekey in one transaction, copy to another engine.

use std::collections::BTreeSet;

use super::codec::{from_plain_json, open_credentials, open_token, record_key_text, seal, unseal};
use super::crypto::RecordKeys;
use super::engine;
use super::ids::AccountKey;
use super::key::KdfRecord;
use super::logs::parse_attempt;
use super::model::{Account, VerifyFailure, VerifyReport};
use super::opening::{META_KEY_CHECK, read_kdf, read_schema, write_key_records};
use super::outbox::open_outbox;
use super::store::{Mode, Table};
use super::{Engine, KeyMaterial, Location, Vault, VaultError};

/// Tables whose records are sealed (besides `meta/key_check`).
const SEALED: [Table; 3] = [Table::Credentials, Table::Tokens, Table::Outbox];

impl Vault {
    /// Decrypt and parse every record; count them per table and list every failure (integrity,
    /// format, or an account missing its credentials and the like). Errors only when the store
    /// itself cannot be read.
    pub fn verify(&self) -> Result<VerifyReport, VaultError> {
        self.read(|tx, keys| {
            let fail = report_failure;
            let mut failures = Vec::new();
            let mut counts = std::collections::BTreeMap::new();
            for table in Table::ALL {
                counts.insert(table.name(), tx.len(table)?);
            }
            if let Err(e) = read_kdf(tx).and_then(|_| read_schema(tx)) {
                failures.push(fail(Table::Meta, b"", e.to_string()));
            }
            match tx.get(Table::Meta, META_KEY_CHECK)? {
                Some(sealed) => {
                    if let Err(e) = unseal(keys, Table::Meta, META_KEY_CHECK, &sealed) {
                        failures.push(fail(Table::Meta, META_KEY_CHECK, e.to_string()));
                    }
                }
                None => failures.push(fail(Table::Meta, META_KEY_CHECK, "missing".into())),
            }
            let mut accounts = BTreeSet::new();
            for (k, v) in tx.scan(Table::Accounts, &[], false, usize::MAX)? {
                match from_plain_json::<Account>(Table::Accounts, &k, &v) {
                    Ok(a) if a.key().encode() == k => {
                        accounts.insert(k);
                    }
                    Ok(_) => failures.push(fail(
                        Table::Accounts,
                        &k,
                        "the record names another account".into(),
                    )),
                    Err(e) => failures.push(fail(Table::Accounts, &k, e.to_string())),
                }
            }
            let mut with_credentials = BTreeSet::new();
            for (k, v) in tx.scan(Table::Credentials, &[], false, usize::MAX)? {
                if let Err(e) = open_credentials(keys, &k, &v) {
                    failures.push(fail(Table::Credentials, &k, e.to_string()));
                }
                if !accounts.contains(&k) {
                    failures.push(fail(
                        Table::Credentials,
                        &k,
                        "no account owns these credentials".into(),
                    ));
                }
                with_credentials.insert(k);
            }
            for k in accounts.difference(&with_credentials) {
                failures.push(fail(
                    Table::Accounts,
                    k,
                    "the account has no credentials record".into(),
                ));
            }
            for (k, v) in tx.scan(Table::Tokens, &[], false, usize::MAX)? {
                if let Err(e) = open_token(keys, &k, &v) {
                    failures.push(fail(Table::Tokens, &k, e.to_string()));
                }
                if !accounts.contains(&k) {
                    failures.push(fail(Table::Tokens, &k, "no account owns this token".into()));
                }
            }
            for (k, v) in tx.scan(Table::Attempts, &[], false, usize::MAX)? {
                if let Err(e) = parse_attempt(&k, &v) {
                    failures.push(fail(Table::Attempts, &k, e.to_string()));
                }
            }
            for (k, v) in tx.scan(Table::Audit, &[], false, usize::MAX)? {
                if let Err(e) = super::logs::audit_batch(&k, &v) {
                    failures.push(fail(Table::Audit, &k, e.to_string()));
                }
            }
            for (k, v) in tx.scan(Table::Outbox, &[], false, usize::MAX)? {
                if let Err(e) = open_outbox(keys, &k, &v) {
                    failures.push(fail(Table::Outbox, &k, e.to_string()));
                }
            }
            Ok(VerifyReport { counts, failures })
        })
    }

    /// Re-encrypt every sealed record under `new` in one transaction, and switch to it. If any
    /// record fails its integrity check nothing changes. A passphrase gets a fresh salt and this
    /// vault's configured argon2 parameters.
    pub fn rekey(&self, new: &KeyMaterial) -> Result<(), VaultError> {
        if self.read_only {
            return Err(VaultError::ReadOnly);
        }
        let kdf = KdfRecord::new_for(new, self.options.argon2);
        let new_keys = RecordKeys::derive(&kdf.derive(new)?);
        let _writer = self.writer.lock();
        // Held for writing until the new keys are in place: no read sees new records with old keys.
        let mut keys = self.keys.write();
        let store = self.store.read();
        let mut tx = store.write()?;
        for table in SEALED {
            for (k, v) in tx.scan(table, &[], false, usize::MAX)? {
                let plain = unseal(&keys, table, &k, &v)?;
                tx.put(table, &k, &seal(&new_keys, table, &k, &plain))?;
            }
        }
        write_key_records(&mut *tx, &new_keys, &kdf)?;
        tx.commit()?;
        *keys = new_keys;
        tracing::info!(at = %self.location, "vault rekeyed");
        Ok(())
    }

    /// Copy every record, as stored, into a new vault at `at` on `engine`; it opens with the same
    /// key. Returns the number of records copied per table.
    pub fn copy_to(
        &self,
        engine: Engine,
        at: impl Into<Location>,
    ) -> Result<VerifyReport, VaultError> {
        let target =
            engine::open(engine, &at.into(), Mode::Create)?.expect("a create yields a store");
        self.read(|tx, _| {
            let mut out = target.write()?;
            let mut report = VerifyReport::default();
            for table in Table::ALL {
                let entries = tx.scan(table, &[], false, usize::MAX)?;
                report.counts.insert(table.name(), entries.len() as u64);
                out.len(table)?;
                for (k, v) in entries {
                    out.put(table, &k, &v)?;
                }
            }
            out.commit()?;
            Ok(report)
        })
    }

    /// Test support: the stored bytes of an account's record in `table` (`accounts`,
    /// `credentials` or `tokens`), to tamper with.
    #[doc(hidden)]
    pub fn raw_account_record(
        &self,
        table: &str,
        key: &AccountKey,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        let table = account_table(table)?;
        self.read(|tx, _| tx.get(table, &key.encode()))
    }

    /// Test support: overwrite the stored bytes of an account's record in `table`.
    #[doc(hidden)]
    pub fn put_raw_account_record(
        &self,
        table: &str,
        key: &AccountKey,
        bytes: &[u8],
    ) -> Result<(), VaultError> {
        let table = account_table(table)?;
        self.write(|tx, _| tx.put(table, &key.encode(), bytes))
    }

    /// Records per table.
    pub fn counts(&self) -> Result<std::collections::BTreeMap<&'static str, u64>, VaultError> {
        self.read(|tx, _| {
            Table::ALL
                .iter()
                .map(|t| Ok((t.name(), tx.len(*t)?)))
                .collect()
        })
    }
}

fn account_table(name: &str) -> Result<Table, VaultError> {
    [Table::Accounts, Table::Credentials, Table::Tokens]
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| VaultError::Storage(format!("no account table {name:?}")))
}

fn report_failure(table: Table, key: &[u8], error: String) -> VerifyFailure {
    VerifyFailure {
        table: table.name(),
        key: record_key_text(table, key),
        error,
    }
}
