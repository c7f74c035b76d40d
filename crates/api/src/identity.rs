//! Data subject identities (OpenDSR §5) and the subject tags they become.
//!
//! The store never sees an identity: corpus rows and deletion requests carry
//! *subject tags*, HMAC-SHA256 digests under the server secret
//! ([`grin_store::Store::hmac`]). One identity gives several tags, so that
//! the formats a controller may send still meet the rows they concern:
//!
//! | identity                         | tags                                                   |
//! |----------------------------------|--------------------------------------------------------|
//! | `raw` value *v* of type *t*      | `H(t, sha256, sha256(n(v)))`, `H(t, md5, md5(n(v)))`, `H(t, sha1, sha1(n(v)))`, and the plain tag `hmac(v)` |
//! | `sha256` / `md5` / `sha1` digest *d* | `H(t, alg, lowercase(d))`                          |
//! | a plain string *s* (corpus uploads only) | the plain tag `hmac(s)`                        |
//!
//! where `H(t, alg, d) = hmac("grin-identity/v1/" t "/" alg "/" d)` and
//! `n(v)` is the normalised value (see [`normalise`]: e-mail addresses and
//! device ids lowercased, everything trimmed). So:
//!
//! - a raw identity matches rows tagged with the raw value, or with its
//!   sha256, md5 or sha1 digest (of the normalised value);
//! - a hashed identity matches rows tagged with the same kind of digest or
//!   with the raw value. Rows tagged only with an md5 (sha1) digest cannot
//!   be matched by a sha256 identity or the other way round: a digest cannot
//!   be converted into another. Upload corpus identities raw (they are
//!   stored only as HMACs) to be matched by every format.
//! - the plain tag `hmac(v)` is what `subject` of `POST /v1/deletion-requests`
//!   uses (the exact string, no normalisation), so that endpoint matches rows
//!   tagged with the same raw value or the same plain string.
//!
//! Controllers that hash must hash the normalised value (lowercase e-mail
//! address without surrounding spaces), the common convention.

use grin_store::Store;
use md5::Md5;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The identity types of the OpenDSR specification (§5.1).
pub const IDENTITY_TYPES: &[&str] = &[
    "controller_customer_id",
    "android_advertising_id",
    "android_id",
    "email",
    "fire_advertising_id",
    "ios_advertising_id",
    "ios_vendor_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "roku_publisher_id",
    "roku_advertising_id",
];

/// The identity formats of the OpenDSR specification (§5.2).
pub const IDENTITY_FORMATS: &[&str] = &["raw", "sha256", "md5", "sha1"];

/// Device ids that are UUIDs (normalised to lowercase hyphenated form).
const UUID_TYPES: &[&str] = &[
    "android_advertising_id",
    "fire_advertising_id",
    "ios_advertising_id",
    "ios_vendor_id",
    "microsoft_advertising_id",
    "roku_advertising_id",
];

/// Longest identity value accepted, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 512;

/// A digest algorithm of a hashed identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Md5,
    Sha1,
}

impl HashAlg {
    fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Md5 => "md5",
            HashAlg::Sha1 => "sha1",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 64,
            HashAlg::Md5 => 32,
            HashAlg::Sha1 => 40,
        }
    }

    fn digest_hex(self, data: &[u8]) -> String {
        match self {
            HashAlg::Sha256 => hex::encode(Sha256::digest(data)),
            HashAlg::Md5 => hex::encode(Md5::digest(data)),
            HashAlg::Sha1 => hex::encode(Sha1::digest(data)),
        }
    }

    const ALL: [HashAlg; 3] = [HashAlg::Sha256, HashAlg::Md5, HashAlg::Sha1];
}

/// A validated identity. Holds the value only as long as the request that
/// carried it; never logged (its `Debug` output hides the value).
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    /// A typed identity in clear (`raw`): the value as given and normalised.
    Raw {
        identity_type: &'static str,
        given: String,
        normalised: String,
    },
    /// A typed identity given as a digest (lowercase hex).
    Hashed {
        identity_type: &'static str,
        alg: HashAlg,
        hex: String,
    },
    /// An untyped subject string (corpus uploads): matched exactly.
    Plain(String),
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Raw { identity_type, .. } => write!(f, "Identity({identity_type}, raw, <redacted>)"),
            Identity::Hashed { identity_type, alg, .. } => {
                write!(f, "Identity({identity_type}, {}, <redacted>)", alg.name())
            }
            Identity::Plain(_) => f.write_str("Identity(plain, <redacted>)"),
        }
    }
}

/// Why an identity was refused. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    /// Which part: `identity_type`, `identity_value`, `identity_format` or
    /// the identity itself.
    pub part: &'static str,
    /// A short machine-readable reason (`required`, `unsupported_identity_type`,
    /// `unsupported_identity_format`, `invalid_identity_value`, `invalid_type`).
    pub reason: &'static str,
    pub message: String,
}

impl IdentityError {
    fn new(part: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        IdentityError {
            part,
            reason,
            message: message.into(),
        }
    }
}

/// The normalised form of a raw value of `identity_type`, or why it is not
/// a valid value of that type.
pub fn normalise(identity_type: &str, value: &str) -> Result<String, &'static str> {
    let v = value.trim();
    if v.is_empty() {
        return Err("must not be empty");
    }
    if v.len() > MAX_IDENTITY_BYTES {
        return Err("too long");
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    match identity_type {
        "email" => {
            let Some((local, domain)) = v.rsplit_once('@') else {
                return Err("not an e-mail address");
            };
            if local.is_empty() || domain.is_empty() || v.chars().any(char::is_whitespace) {
                return Err("not an e-mail address");
            }
            Ok(v.to_lowercase())
        }
        t if UUID_TYPES.contains(&t) => uuid::Uuid::parse_str(v)
            .map(|u| u.hyphenated().to_string())
            .map_err(|_| "not a UUID"),
        "android_id" => {
            if v.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(v.to_ascii_lowercase())
            } else {
                Err("not a hexadecimal Android id")
            }
        }
        _ => Ok(v.to_owned()),
    }
}

impl Identity {
    /// Parses an OpenDSR identity object `{"identity_type", "identity_value",
    /// "identity_format"}`. A missing `identity_format` means `raw`. With
    /// `allow_plain`, a bare JSON string is an untyped subject.
    pub fn parse(value: &Value, allow_plain: bool) -> Result<Identity, IdentityError> {
        if allow_plain {
            if let Value::String(s) = value {
                if s.trim().is_empty() {
                    return Err(IdentityError::new(
                        "identity",
                        "invalid_identity_value",
                        "must not be empty",
                    ));
                }
                if s.len() > MAX_IDENTITY_BYTES {
                    return Err(IdentityError::new("identity", "invalid_identity_value", "too long"));
                }
                return Ok(Identity::Plain(s.clone()));
            }
        }
        let Some(obj) = value.as_object() else {
            return Err(IdentityError::new(
                "identity",
                "invalid_type",
                if allow_plain {
                    "must be an identity object or a string"
                } else {
                    "must be an identity object"
                },
            ));
        };
        if let Some(extra) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "identity_type" | "identity_value" | "identity_format"))
        {
            return Err(IdentityError::new(
                "identity",
                "unknown_field",
                format!("unknown field {extra:?}"),
            ));
        }
        let field = |name: &'static str| -> Result<Option<&str>, IdentityError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(IdentityError::new(name, "invalid_type", "must be a string")),
            }
        };
        let ty = field("identity_type")?
            .ok_or_else(|| IdentityError::new("identity_type", "required", "identity_type is required"))?;
        let identity_type = IDENTITY_TYPES.iter().copied().find(|t| *t == ty).ok_or_else(|| {
            IdentityError::new(
                "identity_type",
                "unsupported_identity_type",
                "unsupported identity_type (see supported_identities in /discovery)",
            )
        })?;
        let format = field("identity_format")?.unwrap_or("raw");
        let value = field("identity_value")?
            .ok_or_else(|| IdentityError::new("identity_value", "required", "identity_value is required"))?;
        match format {
            "raw" => {
                let normalised = normalise(identity_type, value).map_err(|why| {
                    IdentityError::new(
                        "identity_value",
                        "invalid_identity_value",
                        format!("not a valid {identity_type} value: {why}"),
                    )
                })?;
                Ok(Identity::Raw {
                    identity_type,
                    given: value.to_owned(),
                    normalised,
                })
            }
            other => {
                let alg = match other {
                    "sha256" => HashAlg::Sha256,
                    "md5" => HashAlg::Md5,
                    "sha1" => HashAlg::Sha1,
                    _ => {
                        return Err(IdentityError::new(
                            "identity_format",
                            "unsupported_identity_format",
                            "unsupported identity_format: use raw, sha256, md5 or sha1",
                        ))
                    }
                };
                let hex = value.trim().to_ascii_lowercase();
                if hex.len() != alg.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(IdentityError::new(
                        "identity_value",
                        "invalid_identity_value",
                        format!(
                            "a {} identity_value must be {} hexadecimal characters",
                            alg.name(),
                            alg.hex_len()
                        ),
                    ));
                }
                Ok(Identity::Hashed {
                    identity_type,
                    alg,
                    hex,
                })
            }
        }
    }

    /// The identity's type (`None` for a plain string).
    pub fn identity_type(&self) -> Option<&'static str> {
        match self {
            Identity::Raw { identity_type, .. } | Identity::Hashed { identity_type, .. } => Some(identity_type),
            Identity::Plain(_) => None,
        }
    }

    /// The identity's format (`plain` for an untyped string).
    pub fn format(&self) -> &'static str {
        match self {
            Identity::Raw { .. } => "raw",
            Identity::Hashed { alg, .. } => alg.name(),
            Identity::Plain(_) => "plain",
        }
    }

    /// A canonical JSON form for digests (never stored or shown in clear).
    pub fn canonical(&self) -> Value {
        match self {
            Identity::Raw {
                identity_type,
                normalised,
                ..
            } => serde_json::json!([identity_type, "raw", normalised]),
            Identity::Hashed {
                identity_type,
                alg,
                hex,
            } => serde_json::json!([identity_type, alg.name(), hex]),
            Identity::Plain(s) => serde_json::json!(["plain", s]),
        }
    }

    /// The subject tags of this identity, in order of preference (the
    /// sha256 tag first; see the module docs).
    pub fn tags(&self, store: &Store) -> Vec<String> {
        let typed = |t: &str, alg: HashAlg, hex: &str| {
            store.hmac(format!("grin-identity/v1/{t}/{}/{hex}", alg.name()).as_bytes())
        };
        match self {
            Identity::Raw {
                identity_type,
                given,
                normalised,
            } => {
                let mut tags: Vec<String> = HashAlg::ALL
                    .iter()
                    .map(|alg| typed(identity_type, *alg, &alg.digest_hex(normalised.as_bytes())))
                    .collect();
                tags.push(store.hmac(given.as_bytes()));
                tags
            }
            Identity::Hashed {
                identity_type,
                alg,
                hex,
            } => vec![typed(identity_type, *alg, hex)],
            Identity::Plain(s) => vec![store.hmac(s.as_bytes())],
        }
    }
}

/// The tags of several identities, without repeats, in order.
pub fn tags_of(identities: &[Identity], store: &Store) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in identities.iter().flat_map(|i| i.tags(store)) {
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn store() -> Store {
        Store::open("sqlite::memory:", grin_store::StoreOptions::new(b"k".to_vec()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn raw_and_hashed_forms_share_tags() {
        let store = store().await;
        let raw = Identity::parse(
            &json!({"identity_type": "email", "identity_value": " Jane.Doe@Example.com ", "identity_format": "raw"}),
            false,
        )
        .unwrap();
        let digest = hex::encode(Sha256::digest(b"jane.doe@example.com"));
        let hashed = Identity::parse(
            &json!({"identity_type": "email", "identity_value": digest.to_uppercase(), "identity_format": "sha256"}),
            false,
        )
        .unwrap();
        let md5 = hex::encode(Md5::digest(b"jane.doe@example.com"));
        let md5 = Identity::parse(
            &json!({"identity_type": "email", "identity_value": md5, "identity_format": "md5"}),
            false,
        )
        .unwrap();
        let raw_tags = raw.tags(&store);
        assert_eq!(raw_tags.len(), 4);
        assert_eq!(hashed.tags(&store), vec![raw_tags[0].clone()]);
        assert_eq!(md5.tags(&store), vec![raw_tags[1].clone()]);
        // The plain tag is the exact given string's HMAC.
        assert_eq!(raw_tags[3], store.hmac(b" Jane.Doe@Example.com "));
        // Types separate tags.
        let other = Identity::parse(
            &json!({"identity_type": "controller_customer_id", "identity_value": "jane.doe@example.com"}),
            false,
        )
        .unwrap();
        assert_ne!(other.tags(&store)[0], raw_tags[0]);
        assert!(!format!("{raw:?}").contains("jane"), "Debug hides the value");
    }

    #[test]
    fn refusals_never_echo_the_value() {
        let cases = [
            (
                json!({"identity_type": "email", "identity_value": "secret-no-at"}),
                "invalid_identity_value",
            ),
            (
                json!({"identity_type": "phone", "identity_value": "secret"}),
                "unsupported_identity_type",
            ),
            (
                json!({"identity_type": "email", "identity_value": "secret@x", "identity_format": "base64"}),
                "unsupported_identity_format",
            ),
            (
                json!({"identity_type": "email", "identity_value": "secretzz", "identity_format": "sha256"}),
                "invalid_identity_value",
            ),
            (
                json!({"identity_type": "ios_advertising_id", "identity_value": "secret"}),
                "invalid_identity_value",
            ),
            (json!({"identity_value": "secret@x"}), "required"),
            (json!("secret@x"), "invalid_type"),
        ];
        for (value, reason) in cases {
            let err = Identity::parse(&value, false).unwrap_err();
            assert_eq!(err.reason, reason, "{value}");
            assert!(!err.message.contains("secret"), "{}", err.message);
        }
        assert!(matches!(Identity::parse(&json!("Jane"), true), Ok(Identity::Plain(_))));
        assert_eq!(
            normalise("ios_advertising_id", "6D92078A-8246-4BA4-AE5B-76104861E7DC").unwrap(),
            "6d92078a-8246-4ba4-ae5b-76104861e7dc"
        );
    }
}
