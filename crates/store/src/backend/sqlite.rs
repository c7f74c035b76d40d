//! The SQLite backend (embedded default): WAL mode, foreign keys on,
//! `secure_delete` on (erased payloads are overwritten, not just unlinked),
//! a busy timeout, and every write in a `BEGIN IMMEDIATE` transaction so a
//! read-then-write never deadlocks on lock upgrade. Writers of one process
//! queue on an in-process mutex first.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Transaction;
use tokio::sync::OwnedMutexGuard;

use super::Ctx;
use crate::Result;

pub(crate) type Db = sqlx::Sqlite;
pub(crate) const PG: bool = false;
/// SQLite has no row locks: the write transaction already excludes writers.
pub(crate) const FOR_UPDATE: &str = "";
pub(crate) const SKIP_LOCKED: &str = "";

#[allow(clippy::duplicate_mod)] // compiled once per backend on purpose (see backend/mod.rs)
#[path = "ops/mod.rs"]
pub(crate) mod ops;
pub(crate) use ops::Ops;

/// A write transaction (`BEGIN IMMEDIATE`), holding this process's writer
/// mutex until it ends. Field order matters: the transaction ends first.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Db>,
    _writer: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Ops {
    pub(crate) async fn connect(url: &str, ctx: Arc<Ctx>) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(ctx.opts.sqlite_busy_timeout)
            .pragma("secure_delete", "ON");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            // Every connection to `:memory:` is a database of its own: keep
            // exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(ctx.opts.max_connections)
        }
        .connect_with(options)
        .await?;
        Ok(Ops { pool, ctx })
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../../migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let writer = Arc::clone(&self.ctx.write_lock).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _writer: writer })
    }

    /// Copies the WAL into the database and truncates it, so erased payloads
    /// do not linger in old WAL frames. Best effort: a busy checkpoint is
    /// retried by SQLite's automatic checkpoints later.
    pub(crate) async fn after_purge(&self) {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await {
            tracing::warn!(error = %e, "WAL checkpoint after purge failed");
        }
    }
}
