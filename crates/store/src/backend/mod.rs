//! The two backends and what they share.
//!
//! Every operation is written once, in `ops/`, against a concrete database
//! type named `Db`; `postgres.rs` and `sqlite.rs` each compile that same code
//! with their own `Db`, their own transaction opener and their own row-lock
//! clauses (`#[path]` includes the directory twice). This gives one body of
//! SQL and logic without a wall of generic sqlx bounds, and each backend's
//! code is fully type-checked. What differs between the dialects is kept to:
//! `FOR UPDATE [SKIP LOCKED]` (Postgres) versus `BEGIN IMMEDIATE` (SQLite),
//! `pg_notify`/`pg_advisory_xact_lock`, and connection set-up.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::StoreOptions;

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// State shared by every clone of a store.
pub(crate) struct Ctx {
    pub(crate) opts: StoreOptions,
    /// Bumped after every commit that may have made a job claimable, so
    /// waiters in this process wake at once (on SQLite the only wake-up
    /// besides polling).
    pub(crate) wake: watch::Sender<u64>,
    /// Serialises this process's SQLite writers before they ask SQLite for
    /// the write lock (cheaper than SQLite's busy-wait). Unused on Postgres.
    pub(crate) write_lock: Arc<Mutex<()>>,
}

impl Ctx {
    pub(crate) fn new(opts: StoreOptions) -> Arc<Self> {
        Arc::new(Ctx {
            opts,
            wake: watch::Sender::new(0),
            write_lock: Arc::new(Mutex::new(())),
        })
    }
}

/// Postgres channel that `NOTIFY`s idle workers.
pub(crate) const WORK_CHANNEL: &str = "grin_work";

/// Key of the advisory lock that serialises audit writers on Postgres
/// ("grinaudt" in ASCII).
pub(crate) const AUDIT_LOCK_KEY: i64 = 0x6772_696e_6175_6474;
