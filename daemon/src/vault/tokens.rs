//! Tokens: stored with their mirror outbox record, read per user through a cache that the vault's
//! write counter keeps current.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::codec::{open_token, seal_token};
use super::crypto::RecordKeys;
use super::entries::OutboxStatus;
use super::error::VaultError;
use super::ids::{AccountKey, UserId};
use super::model::{Account, NewToken, Token};
use super::outbox::enqueue;
use super::records::{require_account, store_account};
use super::store::{Table, WriteTx};
use super::{USER_CACHE_MAX, UserTokens, Vault, next_seq};

/// Meta counter of token generations (shared by every account, so a generation never repeats).
pub(crate) const SEQ_GENERATION: &[u8] = b"seq/generation";

/// Remove the token of `account`, if any, and tell the mirror.
pub(super) fn revoke_token(
    tx: &mut dyn WriteTx,
    keys: &RecordKeys,
    account: &Account,
    now: i64,
) -> Result<bool, VaultError> {
    let k = account.key().encode();
    if !tx.delete(Table::Tokens, &k)? {
        return Ok(false);
    }
    let generation = next_seq(tx, SEQ_GENERATION)?;
    enqueue(
        tx,
        keys,
        account,
        generation,
        None,
        OutboxStatus::Revoked,
        now,
    )?;
    Ok(true)
}

impl Vault {
    /// The user's accounts with their tokens (if any), decrypted. Served from memory while no
    /// write has committed since it was read: the hot path of `GET /api/tokens/:userId`.
    pub fn user_tokens(&self, user: &UserId) -> Result<Arc<UserTokens>, VaultError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(cached) = self.cached_user_tokens(user, epoch) {
            return Ok(cached);
        }
        let read = || -> Result<UserTokens, VaultError> {
            let mut pairs = Vec::new();
            for account in self.user_accounts(user)? {
                let token = self.get_token(&account.key())?;
                pairs.push((account, token));
            }
            Ok(pairs)
        };
        let pairs = match read() {
            Ok(pairs) => Arc::new(pairs),
            // The database cannot be reached: what was read last, whose tokens the API still
            // checks for expiry, is better than nothing for a trading backend at 09:15.
            Err(VaultError::Unavailable(why)) if self.is_degraded() => {
                match self.user_cache.lock().get(user) {
                    Some((_, cached)) => return Ok(cached.clone()),
                    None => return Err(VaultError::Unavailable(why)),
                }
            }
            Err(e) => return Err(e),
        };
        let mut cache = self.user_cache.lock();
        if cache.len() >= USER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(user.clone(), (epoch, pairs.clone()));
        Ok(pairs)
    }

    /// [`Vault::user_tokens`] when it is cached and current: no I/O, so async code may call it
    /// inline and send only a miss to the blocking pool.
    pub fn cached_user_tokens_now(&self, user: &UserId) -> Option<Arc<UserTokens>> {
        self.cached_user_tokens(user, self.epoch.load(Ordering::Acquire))
    }

    fn cached_user_tokens(&self, user: &UserId, epoch: u64) -> Option<Arc<UserTokens>> {
        match self.user_cache.lock().get(user) {
            Some((at, cached)) if *at == epoch => Some(cached.clone()),
            _ => None,
        }
    }

    /// Store the account's new token and, in the same transaction, its outbox record for the
    /// mirror. Returns the token's generation.
    pub fn put_token(&self, key: &AccountKey, token: &NewToken) -> Result<u64, VaultError> {
        let now = self.now();
        self.write(|tx, keys| {
            let mut account = require_account(tx, key)?;
            // The first token to arrive wins: a pending approval it answers, or one a browser
            // login overtook, is over (a later delivery finds none and is ignored).
            let pending = account.pending_approval.take().is_some();
            if account.backoff.take().is_some() || pending {
                store_account(tx, &account)?;
            }
            let generation = next_seq(tx, SEQ_GENERATION)?;
            let k = key.encode();
            tx.put(Table::Tokens, &k, &seal_token(keys, &k, token, generation))?;
            enqueue(
                tx,
                keys,
                &account,
                generation,
                Some(token),
                OutboxStatus::Active,
                now,
            )?;
            Ok(generation)
        })
    }

    /// The account's token, decrypted (expired or not).
    pub fn get_token(&self, key: &AccountKey) -> Result<Option<Token>, VaultError> {
        self.read(|tx, keys| {
            let k = key.encode();
            match tx.get(Table::Tokens, &k)? {
                Some(sealed) => Ok(Some(open_token(keys, &k, &sealed)?)),
                None => Ok(None),
            }
        })
    }

    /// Drop the account's token (announced to the mirror as revoked). Whether there was one.
    pub fn delete_token(&self, key: &AccountKey) -> Result<bool, VaultError> {
        let now = self.now();
        self.write(|tx, keys| {
            let account = require_account(tx, key)?;
            revoke_token(tx, keys, &account, now)
        })
    }
}
