//! Accounts and their credentials (their tokens are in `tokens.rs`).

use super::Vault;
use super::codec::{from_plain_json, open_credentials, seal_credentials};
use super::credentials::Credentials;
use super::crypto::RecordKeys;
use super::error::VaultError;
use super::ids::{AccountKey, UserId};
use super::model::{Account, Attention, Backoff, Flags, NewAccount, PendingApproval};
use super::store::{ReadTx, Table, WriteTx};
use super::tokens::revoke_token;

fn load_account(tx: &dyn ReadTx, key: &AccountKey) -> Result<Option<Account>, VaultError> {
    let k = key.encode();
    match tx.get(Table::Accounts, &k)? {
        Some(bytes) => Ok(Some(from_plain_json(Table::Accounts, &k, &bytes)?)),
        None => Ok(None),
    }
}

pub(super) fn require_account(tx: &dyn ReadTx, key: &AccountKey) -> Result<Account, VaultError> {
    load_account(tx, key)?.ok_or_else(|| VaultError::NoSuchAccount(key.clone()))
}

pub(super) fn store_account(tx: &mut dyn WriteTx, account: &Account) -> Result<(), VaultError> {
    let bytes = serde_json::to_vec(account).expect("accounts serialise");
    tx.put(Table::Accounts, &account.key().encode(), &bytes)
}

/// The credential fields `new` changes against what the vault holds under `k`.
fn changed_credentials(
    tx: &dyn ReadTx,
    keys: &RecordKeys,
    k: &[u8],
    new: &Credentials,
) -> Result<Vec<String>, VaultError> {
    Ok(match tx.get(Table::Credentials, k)? {
        Some(sealed) => new.changed_fields(&open_credentials(keys, k, &sealed)?),
        None => Credentials::secret_fields().map(str::to_owned).collect(),
    })
}

/// Who holds each broker account: `(broker, lowercase broker_user_id)` to user ids (several
/// where sharing was allowed when they were saved).
type Holders = std::collections::HashMap<(String, String), std::collections::HashSet<String>>;

fn broker_account_holders(tx: &dyn ReadTx) -> Result<Holders, VaultError> {
    let mut holders = Holders::new();
    for (k, v) in tx.scan(Table::Accounts, &[], false, usize::MAX)? {
        let a: Account = from_plain_json(Table::Accounts, &k, &v)?;
        holders
            .entry((
                a.broker.as_str().to_owned(),
                a.broker_user_id.to_ascii_lowercase(),
            ))
            .or_default()
            .insert(a.user.as_str().to_owned());
    }
    Ok(holders)
}

/// Refuse `new` if only other users' accounts hold the same broker account; else record it.
fn claim_broker_account(holders: &mut Holders, new: &NewAccount) -> Result<(), VaultError> {
    let users = holders
        .entry((
            new.key.broker.as_str().to_owned(),
            new.broker_user_id.to_ascii_lowercase(),
        ))
        .or_default();
    if !users.is_empty() && !users.contains(new.key.user.as_str()) {
        return Err(VaultError::BrokerAccountTaken {
            broker: new.key.broker.as_str().to_owned(),
            broker_user_id: new.broker_user_id.clone(),
        });
    }
    users.insert(new.key.user.as_str().to_owned());
    Ok(())
}

/// Whether two broker-side user ids name the same broker account: brokers read them in any case
/// (Angel One upper-cases them), so a case-only edit fixes nothing a login was refused for, and
/// the account's token stays its own.
fn same_broker_user(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn put_account_in(
    tx: &mut dyn WriteTx,
    keys: &RecordKeys,
    new: &NewAccount,
    now: i64,
) -> Result<Account, VaultError> {
    let k = new.key.encode();
    let old = load_account(tx, &new.key)?;
    let (attention, backoff) = match &old {
        Some(old) => {
            let mut changed = changed_credentials(tx, keys, &k, &new.credentials)?;
            if !same_broker_user(&old.broker_user_id, &new.broker_user_id) {
                changed.push("broker_user_id".to_owned());
            }
            (
                old.attention.clone().filter(|a| !a.cleared_by(&changed)),
                old.backoff.filter(|_| changed.is_empty()),
            )
        }
        None => (None, None),
    };
    let account = Account {
        user: new.key.user.clone(),
        broker: new.key.broker.clone(),
        broker_user_id: new.broker_user_id.clone(),
        auto_refresh: new.auto_refresh,
        managed_externally: new.managed_externally,
        attention,
        backoff,
        last_totp_step: old.as_ref().and_then(|a| a.last_totp_step),
        // A request already sent stays pending: new credentials do not recall it.
        pending_approval: old.as_ref().and_then(|a| a.pending_approval),
        created_at_ms: old.as_ref().map_or(now, |a| a.created_at_ms),
        updated_at_ms: now,
    };
    if old
        .as_ref()
        .is_some_and(|a| !same_broker_user(&a.broker_user_id, &new.broker_user_id))
    {
        revoke_token(tx, keys, &account, now)?;
    }
    store_account(tx, &account)?;
    tx.put(
        Table::Credentials,
        &k,
        &seal_credentials(keys, &k, &new.credentials),
    )?;
    Ok(account)
}

impl Vault {
    /// Create or replace an account with its credentials. A replaced account keeps its creation
    /// time and its token (dropped if the broker-side user id changed); its attention is cleared
    /// only if the new credentials can fix it ([`Attention::cleared_by`]).
    pub fn put_account(&self, new: &NewAccount) -> Result<Account, VaultError> {
        self.put_account_seen(new, None)
    }

    /// As [`put_account`](Self::put_account), only while the stored credentials are still
    /// `seen` ([`VaultError::Changed`] otherwise): a form that kept some stored values (its
    /// blank fields) must not write back ones replaced meanwhile, which could be a password the
    /// broker refused.
    pub fn put_account_if_unchanged(
        &self,
        new: &NewAccount,
        seen: &Credentials,
    ) -> Result<Account, VaultError> {
        self.put_account_seen(new, Some(seen))
    }

    fn put_account_seen(
        &self,
        new: &NewAccount,
        seen: Option<&Credentials>,
    ) -> Result<Account, VaultError> {
        let now = self.now();
        let shared = self.options.allow_shared_broker_accounts;
        self.write(|tx, keys| {
            if let Some(seen) = seen {
                let k = new.key.encode();
                let sealed = (tx.get(Table::Credentials, &k)?)
                    .ok_or_else(|| VaultError::NoSuchAccount(new.key.clone()))?;
                let current = open_credentials(keys, &k, &sealed)?;
                if !current.changed_fields(seen).is_empty()
                    || !seen.changed_fields(&current).is_empty()
                {
                    return Err(VaultError::Changed(new.key.clone()));
                }
            }
            if !shared {
                claim_broker_account(&mut broker_account_holders(tx)?, new)?;
            }
            put_account_in(tx, keys, new, now)
        })
    }

    /// [`put_account`](Self::put_account) for many accounts in one transaction (imports).
    pub fn put_accounts(&self, accounts: &[NewAccount]) -> Result<usize, VaultError> {
        let now = self.now();
        let shared = self.options.allow_shared_broker_accounts;
        self.write(|tx, keys| {
            let mut holders = if shared {
                None
            } else {
                Some(broker_account_holders(tx)?)
            };
            for new in accounts {
                if let Some(holders) = &mut holders {
                    claim_broker_account(holders, new)?;
                }
                put_account_in(tx, keys, new, now)?;
            }
            Ok(accounts.len())
        })
    }

    /// Replace an account's credentials; clears its attention if the change can fix it
    /// ([`Attention::cleared_by`]).
    pub fn update_credentials(
        &self,
        key: &AccountKey,
        credentials: &Credentials,
    ) -> Result<Account, VaultError> {
        let now = self.now();
        self.write(|tx, keys| {
            let mut account = require_account(tx, key)?;
            let k = key.encode();
            let changed = changed_credentials(tx, keys, &k, credentials)?;
            account.attention = account.attention.filter(|a| !a.cleared_by(&changed));
            if !changed.is_empty() {
                account.backoff = None;
            }
            account.updated_at_ms = now;
            store_account(tx, &account)?;
            tx.put(
                Table::Credentials,
                &k,
                &seal_credentials(keys, &k, credentials),
            )?;
            Ok(account)
        })
    }

    /// The account, without secrets.
    pub fn get_account(&self, key: &AccountKey) -> Result<Option<Account>, VaultError> {
        self.read(|tx, _| load_account(tx, key))
    }

    /// The account's credentials, decrypted.
    pub fn credentials(&self, key: &AccountKey) -> Result<Option<Credentials>, VaultError> {
        self.read(|tx, keys| {
            let k = key.encode();
            match tx.get(Table::Credentials, &k)? {
                Some(sealed) => Ok(Some(open_credentials(keys, &k, &sealed)?)),
                None => Ok(None),
            }
        })
    }

    /// Every account, ordered by user then broker.
    pub fn list_accounts(&self) -> Result<Vec<Account>, VaultError> {
        self.scan_accounts(&[])
    }

    /// The accounts of one user.
    pub fn user_accounts(&self, user: &UserId) -> Result<Vec<Account>, VaultError> {
        self.scan_accounts(&user.key_prefix())
    }

    fn scan_accounts(&self, prefix: &[u8]) -> Result<Vec<Account>, VaultError> {
        let mut accounts: Vec<Account> = self.read(|tx, _| {
            tx.scan(Table::Accounts, prefix, false, usize::MAX)?
                .into_iter()
                .map(|(k, v)| from_plain_json(Table::Accounts, &k, &v))
                .collect::<Result<_, _>>()
        })?;
        // Keys sort by id length first; people expect ids in text order.
        accounts.sort_by(|a, b| (&a.user, &a.broker).cmp(&(&b.user, &b.broker)));
        Ok(accounts)
    }

    /// Remove an account with its credentials, token and attempts. A removed token is announced to
    /// the mirror as revoked. Whether the account existed.
    pub fn delete_account(&self, key: &AccountKey) -> Result<bool, VaultError> {
        let now = self.now();
        self.write(|tx, keys| {
            let Some(account) = load_account(tx, key)? else {
                return Ok(false);
            };
            let k = key.encode();
            revoke_token(tx, keys, &account, now)?;
            tx.delete(Table::Accounts, &k)?;
            tx.delete(Table::Credentials, &k)?;
            for (attempt, _) in tx.scan(Table::Attempts, &k, false, usize::MAX)? {
                tx.delete(Table::Attempts, &attempt)?;
            }
            Ok(true)
        })
    }

    /// Change `auto_refresh` and/or `managed_externally`, and/or clear needs-attention.
    pub fn set_flags(&self, key: &AccountKey, flags: Flags) -> Result<Account, VaultError> {
        self.update_account(key, |a| {
            if let Some(v) = flags.auto_refresh {
                a.auto_refresh = v;
            }
            if let Some(v) = flags.managed_externally {
                a.managed_externally = v;
            }
            if flags.clear_attention {
                a.attention = None;
            }
        })
    }

    /// Mark the account as needing attention (a login failed in a way retrying cannot fix). A
    /// wrong password or a lock is the broker account's, not the platform user's: other users'
    /// accounts at the same broker with the same `broker_user_id` (possible only with `[vault]
    /// allow_shared_broker_accounts`) are marked too, so none of them sends the password again.
    pub fn set_attention(
        &self,
        key: &AccountKey,
        attention: Attention,
    ) -> Result<Account, VaultError> {
        let now = self.now();
        self.write(|tx, _| {
            let mut account = require_account(tx, key)?;
            if matches!(
                attention.class.as_str(),
                "invalid_credentials" | "account_locked"
            ) {
                for (k, v) in tx.scan(Table::Accounts, &[], false, usize::MAX)? {
                    let mut other: Account = from_plain_json(Table::Accounts, &k, &v)?;
                    if other.broker == account.broker
                        && other.user != account.user
                        && other
                            .broker_user_id
                            .eq_ignore_ascii_case(&account.broker_user_id)
                    {
                        other.attention = Some(attention.clone());
                        other.updated_at_ms = now;
                        store_account(tx, &other)?;
                    }
                }
            }
            account.attention = Some(attention);
            account.updated_at_ms = now;
            store_account(tx, &account)?;
            Ok(account)
        })
    }

    /// Set or clear the account's backoff after retryable failures.
    pub fn set_backoff(
        &self,
        key: &AccountKey,
        backoff: Option<Backoff>,
    ) -> Result<Account, VaultError> {
        self.update_account(key, |a| a.backoff = backoff)
    }

    /// Record, durably, that `step` is handed out for this account. `Err` means it must not be.
    /// Refused when this step, or a later one, was recorded already: by this daemon or, for a
    /// shared vault, by another one (writes are serialised, so two daemons cannot both pass).
    pub fn record_totp_step(&self, key: &AccountKey, step: u64) -> Result<Account, VaultError> {
        let now = self.now();
        self.write(|tx, _| {
            let mut account = require_account(tx, key)?;
            if account.last_totp_step.is_some_and(|last| last >= step) {
                return Err(VaultError::StepUsed(step));
            }
            account.last_totp_step = Some(step);
            account.updated_at_ms = now;
            store_account(tx, &account)?;
            Ok(account)
        })
    }

    /// Set (or clear) the token request awaiting a person's approval.
    pub fn set_pending_approval(
        &self,
        key: &AccountKey,
        pending: Option<PendingApproval>,
    ) -> Result<Account, VaultError> {
        self.update_account(key, |a| a.pending_approval = pending)
    }

    /// Clear the account's attention.
    pub fn clear_attention(&self, key: &AccountKey) -> Result<Account, VaultError> {
        self.update_account(key, |a| a.attention = None)
    }

    fn update_account(
        &self,
        key: &AccountKey,
        change: impl FnOnce(&mut Account),
    ) -> Result<Account, VaultError> {
        let now = self.now();
        self.write(|tx, _| {
            let mut account = require_account(tx, key)?;
            change(&mut account);
            account.updated_at_ms = now;
            store_account(tx, &account)?;
            Ok(account)
        })
    }
}
