//! Issue #9: the corpus registry (uploads tagged with data subjects,
//! look-ups), subject-based erasure, and the OpenDSR (OpenGDPR) processor
//! API driven by a client written from the specification, which verifies
//! every signature with the certificate named by `/discovery`. The
//! end-to-end test runs the worker on the tiny fixture model.
//!
//! Like `main.rs`, every backend test runs as `sqlite::<name>` and
//! `postgres::<name>` (a fresh database from `GRIN_TEST_DATABASE_URL`).

#[macro_use]
extern crate grin_store; // backend_tests!

// Shared with main.rs, which uses all of it.
#[allow(dead_code)]
mod common;

mod privacy;
