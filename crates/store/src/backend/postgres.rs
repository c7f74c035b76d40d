//! The Postgres backend (production): a pool, `FOR UPDATE [SKIP LOCKED]`
//! row locks inside ordinary READ COMMITTED transactions, LISTEN/NOTIFY.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::Transaction;

use super::{Ctx, WORK_CHANNEL};
use crate::Result;

pub(crate) type Db = sqlx::Postgres;
pub(crate) const PG: bool = true;
/// Appended to a SELECT that precedes an UPDATE of the rows it returns.
pub(crate) const FOR_UPDATE: &str = " FOR UPDATE";
/// Appended to the claim's candidate SELECT.
pub(crate) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

#[allow(clippy::duplicate_mod)] // compiled once per backend on purpose (see backend/mod.rs)
#[path = "ops/mod.rs"]
pub(crate) mod ops;
pub(crate) use ops::Ops;

/// A write transaction.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Db>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Ops {
    pub(crate) async fn connect(url: &str, ctx: Arc<Ctx>) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(ctx.opts.max_connections)
            .connect_with(options)
            .await?;
        Ok(Ops { pool, ctx })
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../../migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    /// Writers use plain READ COMMITTED transactions; conflicting rows are
    /// locked explicitly with `FOR UPDATE`, in the order model, job, request,
    /// audit (the audit lock is always taken last, just before commit).
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        Ok(WriteTx {
            tx: self.pool.begin().await?,
        })
    }

    pub(crate) async fn listen(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(WORK_CHANNEL).await?;
        Ok(listener)
    }

    /// Nothing to do: Postgres has no WAL file of ours to truncate (dead
    /// tuples are removed by (auto)vacuum).
    pub(crate) async fn after_purge(&self) {}
}
