//! Webhook path tokens (Upstox's notifier webhook, `/webhook/:broker/:hook`): per broker app,
//! only the SHA-256 of the token is kept, so a copy of the vault cannot forge a delivery URL.
//! Plain (unsealed) Meta records: neither the hash nor the app's API key is a secret.

use super::Vault;
use super::error::VaultError;
use super::store::Table;

fn by_hash(broker: &str, hash_hex: &str) -> Vec<u8> {
    format!("webhook/{broker}/hash/{hash_hex}").into_bytes()
}

fn by_app(broker: &str, app: &str) -> Vec<u8> {
    format!("webhook/{broker}/app/{app}").into_bytes()
}

impl Vault {
    /// Make `hash_hex` the one webhook token of `broker`'s app `app` (its API key), forgetting
    /// the app's previous one.
    pub fn put_webhook_hook(
        &self,
        broker: &str,
        app: &str,
        hash_hex: &str,
    ) -> Result<(), VaultError> {
        self.write(|tx, _| {
            if let Some(old) = tx.get(Table::Meta, &by_app(broker, app))? {
                tx.delete(
                    Table::Meta,
                    &by_hash(broker, &String::from_utf8_lossy(&old)),
                )?;
            }
            tx.put(Table::Meta, &by_app(broker, app), hash_hex.as_bytes())?;
            tx.put(Table::Meta, &by_hash(broker, hash_hex), app.as_bytes())?;
            Ok(())
        })
    }

    /// The app (API key) whose webhook token hashes to `hash_hex`, if any.
    pub fn webhook_app(&self, broker: &str, hash_hex: &str) -> Result<Option<String>, VaultError> {
        self.read(|tx, _| {
            Ok(tx
                .get(Table::Meta, &by_hash(broker, hash_hex))?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
    }
}
