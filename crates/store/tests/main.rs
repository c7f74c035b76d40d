//! Integration tests of grin-store. Every test is written once, generic over
//! the backend, and runs twice: `sqlite::<name>` against a temporary SQLite
//! file and `postgres::<name>` against a fresh Postgres database (created
//! from `GRIN_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, and dropped afterwards).
//! The Postgres tests fail, never skip, when the server is unreachable.

#[macro_use]
extern crate grin_store; // backend_tests!

mod common;

mod store;
