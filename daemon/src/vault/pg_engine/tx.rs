//! A vault transaction on one PostgreSQL connection.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use tokio_postgres::Client;

use super::{PgStore, pg_err};
use crate::vault::error::VaultError;
use crate::vault::store::{Entries, ReadTx, Table, WriteTx, prefix_end};

/// A read or write transaction on one connection. Dropped without `commit`, it rolls back; a
/// connection that failed or timed out mid-transaction is closed instead of reused.
pub(super) struct PgTx<'a> {
    pub(super) store: &'a PgStore,
    /// `None` once committed or given up.
    pub(super) client: Option<Arc<Client>>,
    /// A call on the connection failed in a way that leaves its state unknown.
    pub(super) broken: Cell<bool>,
    pub(super) table: String,
    /// Whether it changed an account, credentials or a token: what other daemons' caches hold.
    pub(super) touched: bool,
    /// The token changes to announce to other daemons at commit (JSON).
    pub(super) changes: Option<String>,
}

/// A table's number in the `tbl` column.
fn tbl(table: Table) -> i16 {
    i16::from(table.tag())
}

/// Notification payloads stay well under PostgreSQL's 8000 bytes; larger change lists are
/// announced without their changes (receivers then drop their caches only).
const PAYLOAD_MAX: usize = 7000;

impl PgTx<'_> {
    /// Run one statement-making closure on the transaction's connection.
    pub(super) fn exec<T, F, Fut>(&self, f: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let client = self
            .client
            .clone()
            .ok_or_else(|| VaultError::Storage("the transaction has ended".into()))?;
        self.step(self.store.run(f(client)))
    }

    /// A call's answer; one that leaves the connection's state unknown breaks the transaction.
    pub(super) fn step<T>(
        &self,
        answer: Result<Result<T, tokio_postgres::Error>, VaultError>,
    ) -> Result<T, VaultError> {
        let result = answer.and_then(|r| r.map_err(pg_err));
        if let Err(VaultError::Unavailable(_)) = &result {
            self.broken.set(true);
        }
        result
    }

    fn note_change(&mut self, table: Table) {
        if matches!(table, Table::Accounts | Table::Credentials | Table::Tokens) {
            self.touched = true;
        }
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !self.broken.get()
        {
            let c = client.clone();
            let rolled_back = self
                .store
                .run(async move { c.batch_execute("ROLLBACK").await })
                .is_ok_and(|r| r.is_ok());
            if rolled_back {
                self.store.give_back(client);
            }
        }
        self.store.slot_freed();
    }
}

impl ReadTx for PgTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let sql = format!("SELECT v FROM {} WHERE tbl = $1 AND k = $2", self.table);
        let key = key.to_vec();
        self.exec(move |c| async move {
            let row = c.query_opt(&sql, &[&tbl(table), &key]).await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE tbl = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) \
             ORDER BY k {} LIMIT $4",
            self.table,
            if rev { "DESC" } else { "ASC" }
        );
        let (start, end) = (prefix.to_vec(), prefix_end(prefix));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.exec(move |c| async move {
            let rows = c.query(&sql, &[&tbl(table), &start, &end, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        let sql = format!("SELECT count(*) FROM {} WHERE tbl = $1", self.table);
        self.exec(move |c| async move {
            let row = c.query_one(&sql, &[&tbl(table)]).await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }
}

impl WriteTx for PgTx<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.note_change(table);
        let sql = format!(
            "INSERT INTO {} (tbl, k, v) VALUES ($1, $2, $3) \
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v",
            self.table
        );
        let (key, value) = (key.to_vec(), value.to_vec());
        self.exec(move |c| async move {
            c.execute(&sql, &[&tbl(table), &key, &value])
                .await
                .map(|_| ())
        })
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, VaultError> {
        self.note_change(table);
        let sql = format!("DELETE FROM {} WHERE tbl = $1 AND k = $2", self.table);
        let key = key.to_vec();
        self.exec(move |c| async move { Ok(c.execute(&sql, &[&tbl(table), &key]).await? > 0) })
    }

    fn announce(&mut self, changes: String) {
        self.changes = Some(changes);
    }

    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        if self.touched || self.changes.is_some() {
            // Delivered to the other daemons' listeners only if, and when, this commits.
            let mut payload = self.store.node.clone();
            if let Some(changes) = self.changes.take().filter(|c| c.len() < PAYLOAD_MAX) {
                payload.push(' ');
                payload.push_str(&changes);
            }
            let sql = format!(
                "SELECT nextval('{}'), pg_notify($1, $2)",
                self.store.target.epoch_sequence()
            );
            let channel = self.store.target.channel();
            self.exec(
                move |c| async move { c.execute(&sql, &[&channel, &payload]).await.map(drop) },
            )?;
        }
        let client = self
            .client
            .take()
            .ok_or_else(|| VaultError::Storage("the transaction has ended".into()))?;
        let c = client.clone();
        self.step(
            self.store
                .run(async move { c.batch_execute("COMMIT").await }),
        )?;
        self.store.give_back(client);
        Ok(())
    }
}
