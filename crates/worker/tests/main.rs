//! Integration tests of grin-worker. Every store-backed test is written
//! once and runs as `sqlite::<name>` (a temporary SQLite file) and
//! `postgres::<name>` (a fresh database created from
//! `GRIN_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards). The
//! Postgres tests fail, never skip, when the server is unreachable.
//!
//! The tiny tofu-mini model is built once per test binary (a few seconds).

#[macro_use]
extern crate grin_store; // backend_tests!

mod common;

mod worker;
