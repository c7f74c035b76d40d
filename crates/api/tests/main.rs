//! Integration tests of grin-api, through `app(..).oneshot` (no socket).
//! Every backend test runs twice: `sqlite::<name>` on a temporary SQLite
//! file and `postgres::<name>` on a fresh Postgres database created from
//! `GRIN_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and dropped afterwards. The Postgres tests fail, never skip, when the
//! server is unreachable.

#[macro_use]
extern crate grin_store; // backend_tests!

mod common;

mod api;
