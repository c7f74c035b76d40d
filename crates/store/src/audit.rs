//! The audit chain format, independent of any database.
//!
//! Each record is hashed as
//!
//! ```text
//! hash = lowercase_hex(sha256(prev_hash || canonical_json({
//!     "action", "actor", "at", "details", "entity_id", "entity_kind", "id", "seq"
//! })))
//! ```
//!
//! where `prev_hash` is the previous record's `hash` as 64 ASCII hex
//! characters ([`GENESIS_HASH`] for seq 1), `seq` is a JSON integer, `id` the
//! hyphenated lowercase UUID, `at` the stored text (RFC 3339 UTC with six
//! fractional digits and `Z`), `entity_id` a string or `null`, and `details`
//! the stored canonical JSON text *as a JSON string* (so it is hashed byte for
//! byte as stored). See [`crate::digest`] for canonical JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::digest::{canonical_json, sha256_hex};
use crate::AuditRecord;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The text an audit timestamp is stored and hashed as.
pub fn format_at(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The hash a record must carry, computed from its other fields.
pub fn record_hash(record: &AuditRecord) -> String {
    let body = json!({
        "seq": record.seq,
        "id": record.id.to_string(),
        "at": record.at,
        "actor": record.actor,
        "action": record.action,
        "entity_kind": record.entity_kind,
        "entity_id": record.entity_id,
        "details": record.details,
    });
    let mut input = record.prev_hash.clone().into_bytes();
    input.extend_from_slice(canonical_json(&body).as_bytes());
    sha256_hex(&input)
}

/// Checks one record against its predecessor's hash; the reason on failure.
pub fn check_record(record: &AuditRecord, expected_seq: i64, prev_hash: &str) -> Result<(), String> {
    if record.seq != expected_seq {
        return Err(format!(
            "expected seq {expected_seq} next, found {} (rows missing or reordered)",
            record.seq
        ));
    }
    if record.prev_hash != prev_hash {
        return Err(format!(
            "prev_hash {} does not match the previous row's hash {prev_hash}",
            record.prev_hash
        ));
    }
    let computed = record_hash(record);
    if record.hash != computed {
        return Err(format!(
            "stored hash {} does not match the row's contents (computed {computed})",
            record.hash
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected hash was computed independently, with the Python recipe
    /// of docs/store.md:
    /// `sha256(prev + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))`.
    #[test]
    fn record_hash_matches_the_documented_recipe() {
        let record = AuditRecord {
            seq: 1,
            id: "01890a5d-ac96-774b-bcce-b302099a8057".parse().expect("uuid"),
            at: "2024-05-01T12:00:00.123456Z".into(),
            actor: "client:ç\"1".into(),
            action: "request.created".into(),
            entity_kind: "deletion_request".into(),
            entity_id: None,
            details: r#"{"a":1,"b":"x\ny"}"#.into(),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        assert_eq!(
            record_hash(&record),
            "3004a4ab93ea7f49aa75eedd85473b033cba20c5e0b968eb1703984d1390131b"
        );
        let mut sealed = record.clone();
        sealed.hash = record_hash(&record);
        assert_eq!(check_record(&sealed, 1, GENESIS_HASH), Ok(()));
        assert!(check_record(&sealed, 2, GENESIS_HASH).is_err());
    }

    #[test]
    fn timestamps_are_stored_with_fixed_precision() {
        let at = DateTime::from_timestamp_micros(1_714_564_800_000_000).expect("time");
        assert_eq!(format_at(at), "2024-05-01T12:00:00.000000Z");
    }
}
