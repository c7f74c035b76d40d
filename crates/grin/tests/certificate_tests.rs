//! Signed certificates: sign/verify round trips, tamper detection at every
//! byte, key handling, checkpoint file checks, gates, the canonical JSON rule
//! (checked byte for byte against Python's `json.dumps`), and an Ed25519
//! known-answer test against an independent implementation (Python
//! `cryptography`).

use std::path::Path;

use anyhow::Result;
use grin::certificate::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------- helpers

/// HMAC-SHA256 (RFC 2104), only to make realistic digests in tests (the
/// service computes them in `grin-store`).
fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(data).finalize();
    hex::encode(Sha256::new().chain_update(&opad).chain_update(inner).finalize())
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn gate(name: &str, value: f64, passed: bool) -> GateResult {
    GateResult {
        name: name.into(),
        metric: name.into(),
        op: GateOp::Le,
        threshold: 0.1,
        relative_to_before: false,
        effective_threshold: Some(0.1),
        value: Some(value),
        passed,
        reason: if passed {
            None
        } else {
            Some(format!("{name} = {value} is not <= 0.1"))
        },
    }
}

/// A small certificate whose numbers have no exponent (so no single-byte
/// change can produce an equivalent spelling such as `1e5` → `1E5`).
fn sample_certificate(forget_text: &str) -> Certificate {
    Certificate {
        format: FORMAT.into(),
        id: "job-42".into(),
        request_ids: vec!["req-7".into()],
        model: "tofu-tiny".into(),
        base_version: Some("v3".into()),
        new_version: Some("v4".into()),
        files: vec![FileDigest {
            path: "model.safetensors".into(),
            sha256: hex::encode(Sha256::digest(b"weights")),
            bytes: 7,
        }],
        config: json!({"method": "grin", "rho": 0.05, "steps": 120, "retain": {"loss": "nll", "alpha": 1.0}}),
        seed: 1234,
        software: Software::grin(),
        metrics_before: json!({"forget_answer_probability": 0.93, "model_utility": 0.61}),
        metrics_after: json!({"forget_answer_probability": 0.04, "model_utility": 0.59}),
        gates: vec![gate("forget_answer_probability", 0.04, true)],
        passed: true,
        forget_digests: vec![
            ForgetDigest::from_hex(&hmac_sha256_hex(b"server-secret", forget_text.as_bytes()))
                .expect("an HMAC is a digest"),
        ],
        started_at: "2025-03-01T10:00:00Z".into(),
        finished_at: "2025-03-01T10:42:17Z".into(),
    }
}

// ------------------------------------------------------- sign and verify

#[test]
fn sign_verify_round_trip() -> Result<()> {
    let sk = key(1);
    let cert = sample_certificate("Jane Doe lives at 12 Elm St");
    let signed = sign(&cert, &sk)?;
    assert_eq!(signed.signature.algorithm, "ed25519");
    assert_eq!(signed.signature.public_key, public_key_hex(&sk.verifying_key()));
    verify(&signed, &sk.verifying_key())?;
    // Through the stored document, compact and indented.
    for text in [signed.to_json()?, signed.to_json_pretty()?] {
        let back = verify_document(&text, &sk.verifying_key())?;
        assert_eq!(back, cert);
    }
    Ok(())
}

#[test]
fn flipping_any_byte_of_the_document_never_verifies() -> Result<()> {
    let sk = key(2);
    let vk = sk.verifying_key();
    let text = sign(&sample_certificate("x"), &sk)?.to_json()?;
    verify_document(&text, &vk)?;
    let bytes = text.as_bytes();
    let (mut tried, mut rejected_by_parse) = (0usize, 0usize);
    // Every position, every single-bit flip and the full complement.
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut m = bytes.to_vec();
            m[pos] ^= mask;
            tried += 1;
            let Ok(s) = std::str::from_utf8(&m) else {
                rejected_by_parse += 1;
                continue;
            };
            match verify_document(s, &vk) {
                Ok(_) => panic!("byte {pos} ^ {mask:#04x} still verifies: {s}"),
                Err(CertificateError::Malformed(_)) => rejected_by_parse += 1,
                Err(_) => {}
            }
        }
    }
    println!("{tried} mutated documents, all rejected ({rejected_by_parse} as malformed or not UTF-8)");
    Ok(())
}

#[test]
fn tampered_content_is_a_bad_signature() -> Result<()> {
    let sk = key(3);
    let signed = sign(&sample_certificate("x"), &sk)?;
    let mut t = signed.clone();
    t.certificate.metrics_after["model_utility"] = json!(0.6);
    assert!(matches!(
        verify(&t, &sk.verifying_key()),
        Err(CertificateError::BadSignature)
    ));
    let mut t = signed.clone();
    t.certificate.gates[0].passed = false;
    t.certificate.passed = false; // consistent, but not what was signed
    assert!(matches!(
        verify(&t, &sk.verifying_key()),
        Err(CertificateError::BadSignature)
    ));
    let mut t = signed.clone();
    t.certificate.files[0].bytes += 1;
    assert!(matches!(
        verify(&t, &sk.verifying_key()),
        Err(CertificateError::BadSignature)
    ));
    // Upper-case hex is not accepted as another spelling of the signature.
    let mut t = signed;
    t.signature.value = t.signature.value.to_uppercase();
    assert!(matches!(
        verify(&t, &sk.verifying_key()),
        Err(CertificateError::Malformed(_))
    ));
    Ok(())
}

#[test]
fn wrong_key_is_reported_as_such() -> Result<()> {
    let (trusted, attacker) = (key(4), key(5));
    let cert = sample_certificate("x");
    // Signed by someone else, who names their own key in the document.
    let forged = sign(&cert, &attacker)?;
    match verify(&forged, &trusted.verifying_key()) {
        Err(CertificateError::WrongKey { expected, found }) => {
            assert_eq!(expected, public_key_hex(&trusted.verifying_key()));
            assert_eq!(found, public_key_hex(&attacker.verifying_key()));
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    // Someone else's signature presented under the trusted key's name.
    let mut forged = sign(&cert, &attacker)?;
    forged.signature.public_key = public_key_hex(&trusted.verifying_key());
    assert!(matches!(
        verify(&forged, &trusted.verifying_key()),
        Err(CertificateError::BadSignature)
    ));
    // Other algorithms are refused outright.
    let mut other = sign(&cert, &trusted)?;
    other.signature.algorithm = "rsa".into();
    assert!(matches!(
        verify(&other, &trusted.verifying_key()),
        Err(CertificateError::UnsupportedAlgorithm(_))
    ));
    Ok(())
}

#[test]
fn malformed_documents_are_malformed() -> Result<()> {
    let sk = key(6);
    let vk = sk.verifying_key();
    let mut doc: Value = serde_json::from_str(&sign(&sample_certificate("x"), &sk)?.to_json()?)?;
    for bad in ["", "{}", "not json", "[1,2]"] {
        assert!(
            matches!(verify_document(bad, &vk), Err(CertificateError::Malformed(_))),
            "{bad:?}"
        );
    }
    // An extra field would not be covered by what the verifier checks: refused.
    doc["certificate"]["note"] = json!("added later");
    assert!(matches!(
        verify_document(&doc.to_string(), &vk),
        Err(CertificateError::Malformed(_))
    ));
    Ok(())
}

#[test]
fn inconsistent_certificates_are_not_signed() {
    let sk = key(7);
    let mut c = sample_certificate("x");
    c.passed = false; // the only gate passed
    assert!(matches!(sign(&c, &sk), Err(CertificateError::Malformed(_))));
    let mut c = sample_certificate("x");
    c.gates.clear(); // no gates: `passed` must be false
    assert!(matches!(sign(&c, &sk), Err(CertificateError::Malformed(_))));
    c.passed = false;
    assert!(sign(&c, &sk).is_ok());
    for path in ["../model.safetensors", "/etc/passwd", "a/../../b", "", "a\\b", "./x"] {
        let mut c = sample_certificate("x");
        c.files[0].path = path.into();
        assert!(matches!(sign(&c, &sk), Err(CertificateError::Malformed(_))), "{path:?}");
    }
    let mut c = sample_certificate("x");
    c.files[0].sha256 = c.files[0].sha256.to_uppercase();
    assert!(sign(&c, &sk).is_err());
    let mut c = sample_certificate("x");
    c.finished_at = "yesterday".into();
    assert!(sign(&c, &sk).is_err());
    let mut c = sample_certificate("x");
    c.finished_at = "2025-03-01T09:00:00Z".into(); // before started_at
    assert!(sign(&c, &sk).is_err());
    c.started_at = "2025-03-01T09:00:00Z".into();
    c.finished_at = "2025-03-01T09:00:00.5Z".into(); // half a second later
    assert!(sign(&c, &sk).is_ok());
    c.started_at = "2025-03-01T09:00:00.75Z".into();
    assert!(sign(&c, &sk).is_err());
    let mut c = sample_certificate("x");
    c.format = "grin-certificate/2".into();
    assert!(sign(&c, &sk).is_err());
}

#[test]
fn metric_floats_survive_the_document_round_trip() -> Result<()> {
    // Every f64 must read back bit for bit, or re-canonicalisation would
    // change the signed bytes (serde_json's default float parser is off by
    // an ulp for ~9% of 17-digit values; `float_roundtrip` fixes that).
    let sk = key(8);
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut metrics = serde_json::Map::new();
    for i in 0..2000 {
        let x = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = match i % 4 {
            0 => x,
            1 => x * 1e-7,
            2 => -x * 1e12,
            _ => f64::from_bits(next() >> 2), // arbitrary positive finite doubles
        };
        if v.is_finite() {
            metrics.insert(format!("m{i}"), json!(v));
        }
    }
    let mut cert = sample_certificate("x");
    cert.metrics_after = Value::Object(metrics);
    let text = sign(&cert, &sk)?.to_json()?;
    assert_eq!(verify_document(&text, &sk.verifying_key())?, cert);
    Ok(())
}

// ------------------------------------------------------ canonical bytes

#[test]
fn canonical_json_ignores_key_order() -> Result<()> {
    let sk = key(9);
    let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [2, {"q": 1, "p": 0}], "x": 3}, "c": "é"}"#)?;
    let b: Value = serde_json::from_str(r#"{"c": "é", "a": {"x": 3, "y": [2, {"p": 0, "q": 1}]}, "b": 1}"#)?;
    assert_eq!(
        canonical_json(&a),
        r#"{"a":{"x":3,"y":[2,{"p":0,"q":1}]},"b":1,"c":"é"}"#
    );
    assert_eq!(canonical_json(&a), canonical_json(&b));
    let mut map = serde_json::Map::new();
    map.insert("zeta".into(), json!(1));
    map.insert("alpha".into(), json!(2));
    let mut map2 = serde_json::Map::new();
    map2.insert("alpha".into(), json!(2));
    map2.insert("zeta".into(), json!(1));
    let (mut c1, mut c2) = (sample_certificate("x"), sample_certificate("x"));
    c1.config = json!({"outer": a, "inserted": Value::Object(map)});
    c2.config = json!({"inserted": Value::Object(map2), "outer": b});
    let (s1, s2) = (sign(&c1, &sk)?, sign(&c2, &sk)?);
    assert_eq!(canonical_bytes(&c1)?, canonical_bytes(&c2)?);
    assert_eq!(s1.signature.value, s2.signature.value);
    Ok(())
}

#[test]
fn floats_are_written_as_python_repr() {
    // (value, Python 3 repr(value)) — generated with CPython.
    let cases: &[(f64, &str)] = &[
        (0.1_f64, "0.1"),
        (0.5_f64, "0.5"),
        (1.0_f64, "1.0"),
        (-1.0_f64, "-1.0"),
        (100.0_f64, "100.0"),
        (0.0001_f64, "0.0001"),
        (1e-05_f64, "1e-05"),
        (0.00012345_f64, "0.00012345"),
        (1000000000000000.0_f64, "1000000000000000.0"),
        (1e+16_f64, "1e+16"),
        (1.5e+16_f64, "1.5e+16"),
        (1.2345678901234568e+17_f64, "1.2345678901234568e+17"),
        (2.5e-300_f64, "2.5e-300"),
        (5e-324_f64, "5e-324"),
        (1.7976931348623157e+308_f64, "1.7976931348623157e+308"),
        (-2.5_f64, "-2.5"),
        (0.3333333333333333_f64, "0.3333333333333333"),
        (0.6666666666666666_f64, "0.6666666666666666"),
        (0.30000000000000004_f64, "0.30000000000000004"),
        (9007199254740992.0_f64, "9007199254740992.0"),
        (4.35_f64, "4.35"),
        (1e+22_f64, "1e+22"),
        (1e+21_f64, "1e+21"),
        (12345.678_f64, "12345.678"),
        (-0.0001_f64, "-0.0001"),
        (-1e-05_f64, "-1e-05"),
        (6.02214076e+23_f64, "6.02214076e+23"),
        (0.0421_f64, "0.0421"),
        (3e-07_f64, "3e-07"),
        (10928588.983213553_f64, "10928588.983213553"),
        (1.4186613525849614e+134_f64, "1.4186613525849614e+134"),
        (-7.571968556055867e-74_f64, "-7.571968556055867e-74"),
        (-1.4074705188261364e+113_f64, "-1.4074705188261364e+113"),
        (-3.3339745473042614e-121_f64, "-3.3339745473042614e-121"),
        (-1.2342180766211395e-271_f64, "-1.2342180766211395e-271"),
        (-5.126864004244935e+111_f64, "-5.126864004244935e+111"),
        (-2.1520217579844227e+32_f64, "-2.1520217579844227e+32"),
        (0.1399601630397701_f64, "0.1399601630397701"),
        (1.01853664031722e-244_f64, "1.01853664031722e-244"),
        (2.9704598186234577e-115_f64, "2.9704598186234577e-115"),
        (3.0534183338726823e+150_f64, "3.0534183338726823e+150"),
    ];
    for &(x, want) in cases {
        assert_eq!(python_float_repr(x), want, "{x:e}");
    }
    assert_eq!(python_float_repr(-0.0), "-0.0");
    assert_eq!(python_float_repr(0.0), "0.0");
    assert_eq!(
        canonical_json(&json!([1, -2, 1.0, 18446744073709551615u64])),
        "[1,-2,1.0,18446744073709551615]"
    );
    assert_eq!(
        canonical_json(&json!("\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é\u{2028}")),
        "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é\u{2028}\""
    );
}

/// The certificate as Python wrote it (`json.dumps(cert, indent=1, ensure_ascii=False)`).
const PYTHON_CERT: &str = r#"{
 "format": "grin-certificate/1",
 "id": "job-0001",
 "request_ids": [
  "req-1",
  "req-2"
 ],
 "model": "tofu-llama",
 "base_version": "v1",
 "new_version": "v2",
 "files": [
  {
   "path": "config.json",
   "sha256": "abababababababababababababababababababababababababababababababab",
   "bytes": 612
  },
  {
   "path": "model.safetensors",
   "sha256": "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
   "bytes": 1048576
  }
 ],
 "config": {
  "zeta": {
   "b": [
    1,
    2.5,
    -0.0,
    1e-05,
    123456789.125,
    1e+16,
    3e-07
   ],
   "a": null
  },
  "lr": 1e-05,
  "method": "grin",
  "sigma_rel": 0.01,
  "steps": 200,
  "note": "quote\" backslash\\ tab\t newline\n bell\u0007 café 東京 \u2028 😀",
  "Éclair": true,
  "é": false,
  "Z": 0.1
 },
 "seed": 18446744073709551615,
 "software": {
  "name": "grin",
  "version": "0.1.0",
  "git_commit": null
 },
 "metrics_before": {
  "forget_answer_probability": 0.9312,
  "model_utility": 0.6021234567890122
 },
 "metrics_after": {
  "forget_answer_probability": 0.0421,
  "model_utility": 0.5873,
  "privleak": -3.25
 },
 "gates": [
  {
   "name": "forget_answer_probability",
   "metric": "forget_answer_probability",
   "op": "<=",
   "threshold": 0.1,
   "relative_to_before": false,
   "effective_threshold": 0.1,
   "value": 0.0421,
   "passed": true,
   "reason": null
  },
  {
   "name": "model_utility_retained",
   "metric": "model_utility",
   "op": ">=",
   "threshold": 0.9,
   "relative_to_before": true,
   "effective_threshold": 0.541911111110111,
   "value": 0.5873,
   "passed": true,
   "reason": null
  }
 ],
 "passed": true,
 "forget_digests": [
  "d177a70d21a4d4e086ff999fecf4445170a846ffbbe1de33ba5889627ec1c81d"
 ],
 "started_at": "2025-03-01T10:00:00Z",
 "finished_at": "2025-03-01T11:42:17.5+01:00"
}"#;

/// `json.dumps(cert, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
const PYTHON_CANONICAL: &str = "{\"base_version\":\"v1\",\"config\":{\"Z\":0.1,\"é\":false,\"lr\":1e-05,\"method\":\"grin\",\"note\":\"quote\\\" backslash\\\\ tab\\t newline\\n bell\\u0007 café 東京 \u{2028} 😀\",\"sigma_rel\":0.01,\"steps\":200,\"zeta\":{\"a\":null,\"b\":[1,2.5,-0.0,1e-05,123456789.125,1e+16,3e-07]},\"Éclair\":true},\"files\":[{\"bytes\":612,\"path\":\"config.json\",\"sha256\":\"abababababababababababababababababababababababababababababababab\"},{\"bytes\":1048576,\"path\":\"model.safetensors\",\"sha256\":\"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\"}],\"finished_at\":\"2025-03-01T11:42:17.5+01:00\",\"forget_digests\":[\"d177a70d21a4d4e086ff999fecf4445170a846ffbbe1de33ba5889627ec1c81d\"],\"format\":\"grin-certificate/1\",\"gates\":[{\"effective_threshold\":0.1,\"metric\":\"forget_answer_probability\",\"name\":\"forget_answer_probability\",\"op\":\"<=\",\"passed\":true,\"reason\":null,\"relative_to_before\":false,\"threshold\":0.1,\"value\":0.0421},{\"effective_threshold\":0.541911111110111,\"metric\":\"model_utility\",\"name\":\"model_utility_retained\",\"op\":\">=\",\"passed\":true,\"reason\":null,\"relative_to_before\":true,\"threshold\":0.9,\"value\":0.5873}],\"id\":\"job-0001\",\"metrics_after\":{\"forget_answer_probability\":0.0421,\"model_utility\":0.5873,\"privleak\":-3.25},\"metrics_before\":{\"forget_answer_probability\":0.9312,\"model_utility\":0.6021234567890122},\"model\":\"tofu-llama\",\"new_version\":\"v2\",\"passed\":true,\"request_ids\":[\"req-1\",\"req-2\"],\"seed\":18446744073709551615,\"software\":{\"git_commit\":null,\"name\":\"grin\",\"version\":\"0.1.0\"},\"started_at\":\"2025-03-01T10:00:00Z\"}";

/// Python `cryptography`: Ed25519PrivateKey.from_private_bytes(bytes(range(32))).
const PYTHON_PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
/// ... .sign(PYTHON_CANONICAL.encode("utf-8")).hex()
const PYTHON_SIGNATURE: &str = "d31f0c9a4458e2a833d1412060f8aace5d81d40ec766c68c0edbe79f61a47f57c1c29b0f38127e6276768d771be23bf9f085e993b3cba6b20abb89c4ff09bb0f";

#[test]
fn canonical_bytes_and_signature_match_python() -> Result<()> {
    let cert: Certificate = serde_json::from_str(PYTHON_CERT)?;
    assert_eq!(String::from_utf8(canonical_bytes(&cert)?)?, PYTHON_CANONICAL);
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let sk = SigningKey::from_bytes(&seed);
    assert_eq!(public_key_hex(&sk.verifying_key()), PYTHON_PUBLIC_KEY);
    let signed = sign(&cert, &sk)?;
    assert_eq!(signed.signature.value, PYTHON_SIGNATURE);
    // And a document assembled by Python verifies here.
    let doc = format!(
        r#"{{"certificate": {PYTHON_CERT}, "signature": {{"algorithm": "ed25519", "public_key": "{PYTHON_PUBLIC_KEY}", "value": "{PYTHON_SIGNATURE}"}}}}"#
    );
    verify_document(&doc, &verifying_key_from_str(PYTHON_PUBLIC_KEY)?)?;
    Ok(())
}

// ---------------------------------------------------------- forget text

#[test]
fn raw_forget_text_never_enters_a_certificate() -> Result<()> {
    let secret_text = "Jane Doe lives at 12 Elm St";
    // The API takes digests only; the error names the length, not the text.
    let err = ForgetDigest::from_hex(secret_text).expect_err("text is not a digest");
    assert!(matches!(err, CertificateError::InvalidDigest { len: 27 }));
    assert!(!err.to_string().contains("Jane"));
    // A certificate made from the job carries the HMAC digest only.
    let sk = key(10);
    let cert = sample_certificate(secret_text);
    let text = sign(&cert, &sk)?.to_json_pretty()?;
    let digest = hmac_sha256_hex(b"server-secret", secret_text.as_bytes());
    assert!(text.contains(&digest));
    for fragment in [secret_text, "Jane", "Doe", "Elm", "12 Elm"] {
        assert!(!text.contains(fragment), "{fragment:?} leaked");
        assert!(
            !text.to_lowercase().contains(&fragment.to_lowercase()),
            "{fragment:?} leaked"
        );
    }
    // A document smuggling the text in is refused, without echoing it.
    let mut doc: Value = serde_json::from_str(&text)?;
    doc["certificate"]["forget_digests"] = json!([secret_text]);
    let err = verify_document(&doc.to_string(), &sk.verifying_key()).expect_err("not a digest");
    assert!(matches!(err, CertificateError::Malformed(_)));
    assert!(!err.to_string().contains("Jane"), "{err}");
    Ok(())
}

#[test]
fn hmac_helper_matches_rfc4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ------------------------------------------------------------- files

fn checkpoint_dir() -> Result<(tempfile::TempDir, Certificate)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("config.json"), br#"{"model_type":"llama"}"#)?;
    std::fs::write(dir.path().join("model.safetensors"), vec![7u8; 4096])?;
    let manifest = grin::checkpoint::manifest(dir.path())?;
    let mut cert = sample_certificate("x");
    cert.files = manifest.iter().map(FileDigest::from).collect();
    Ok((dir, cert))
}

#[test]
fn verify_files_accepts_the_checkpoint_it_lists() -> Result<()> {
    let (dir, cert) = checkpoint_dir()?;
    verify_files(&cert, dir.path())?;
    // Subdirectories are not scanned.
    std::fs::create_dir(dir.path().join("logs"))?;
    std::fs::write(dir.path().join("logs/run.txt"), b"...")?;
    verify_files(&cert, dir.path())?;
    Ok(())
}

#[test]
fn verify_files_detects_a_changed_byte() -> Result<()> {
    let (dir, cert) = checkpoint_dir()?;
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path)?;
    bytes[2048] ^= 1;
    std::fs::write(&path, bytes)?;
    match verify_files(&cert, dir.path()) {
        Err(CertificateError::FileMismatch {
            path,
            expected_bytes,
            actual_bytes,
            ..
        }) => {
            assert_eq!(path, "model.safetensors");
            assert_eq!((expected_bytes, actual_bytes), (4096, 4096));
        }
        other => panic!("expected FileMismatch, got {other:?}"),
    }
    Ok(())
}

#[test]
fn verify_files_detects_missing_and_unlisted_files() -> Result<()> {
    let (dir, cert) = checkpoint_dir()?;
    std::fs::remove_file(dir.path().join("config.json"))?;
    assert!(matches!(
        verify_files(&cert, dir.path()),
        Err(CertificateError::MissingFile { path }) if path == "config.json"
    ));
    let (dir, cert) = checkpoint_dir()?;
    // A loader could pick up an extra weight file: it must be listed.
    std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), b"x")?;
    assert!(matches!(
        verify_files(&cert, dir.path()),
        Err(CertificateError::UnlistedFile { path }) if path == "model-00001-of-00002.safetensors"
    ));
    // A certificate cannot point outside the directory.
    let (dir, mut cert) = checkpoint_dir()?;
    cert.files[0].path = "../config.json".into();
    assert!(matches!(
        verify_files(&cert, dir.path()),
        Err(CertificateError::Malformed(_))
    ));
    Ok(())
}

// ------------------------------------------------------------- gates

#[test]
fn gates_absolute_relative_and_missing() -> Result<()> {
    let specs: Vec<GateSpec> = serde_json::from_value(json!([
        {"name": "forget", "metric": "forget_answer_probability", "op": "<=", "threshold": 0.1},
        {"name": "utility", "metric": "model_utility", "op": ">=", "threshold": 0.9, "relative_to_before": true},
        {"name": "kw", "metric": "forget_keyword_accuracy", "op": "<=", "threshold": 0.0},
    ]))?;
    validate_gates(&specs)?;
    let before = json!({"forget_answer_probability": 0.9, "model_utility": 0.8});
    let after = json!({"forget_answer_probability": 0.05, "model_utility": 0.75});
    let r = evaluate_gates(&specs, &before, &after);
    assert_eq!(r.len(), 3);
    assert!(r[0].passed && r[0].value == Some(0.05) && r[0].effective_threshold == Some(0.1));
    // 0.75 >= 0.9 × 0.8 = 0.72.
    assert!(r[1].passed);
    assert!((r[1].effective_threshold.unwrap_or(0.0) - 0.72).abs() < 1e-15);
    // Missing metric: fails with a reason, no value.
    assert!(!r[2].passed && r[2].value.is_none());
    assert!(r[2].reason.as_deref().unwrap_or("").contains("forget_keyword_accuracy"));
    assert!(!gates_passed(&r));

    // Utility 0.7 < 0.72: fails; no before value: a relative gate fails with a reason.
    let after = json!({"forget_answer_probability": 0.05, "model_utility": 0.7, "forget_keyword_accuracy": 0.0});
    let r = evaluate_gates(&specs, &before, &after);
    assert!(r[0].passed && !r[1].passed && r[2].passed);
    assert!(r[1].reason.as_deref().unwrap_or("").contains("0.7"));
    let r = evaluate_gates(&specs, &Value::Null, &after);
    assert!(!r[1].passed && r[1].effective_threshold.is_none());
    assert!(r[1].reason.as_deref().unwrap_or("").contains("before"));
    // A non-number metric fails.
    let r = evaluate_gates(&specs[..1], &Value::Null, &json!({"forget_answer_probability": "low"}));
    assert!(!r[0].passed && r[0].reason.as_deref().unwrap_or("").contains("not a number"));

    // All pass: a certificate built from them is signable.
    let after = json!({"forget_answer_probability": 0.05, "model_utility": 0.79, "forget_keyword_accuracy": 0.0});
    let gates = evaluate_gates(&specs, &before, &after);
    assert!(gates_passed(&gates));
    let mut cert = sample_certificate("x");
    cert.metrics_before = before;
    cert.metrics_after = after;
    cert.gates = gates;
    cert.passed = true;
    sign(&cert, &key(11))?;
    Ok(())
}

#[test]
fn gate_specs_are_strict() {
    let unknown = json!({"name": "g", "metric": "m", "op": "<=", "threshold": 0.1, "treshold_rel": 1});
    assert!(serde_json::from_value::<GateSpec>(unknown).is_err());
    let bad_op = json!({"name": "g", "metric": "m", "op": "<", "threshold": 0.1});
    assert!(serde_json::from_value::<GateSpec>(bad_op).is_err());
    let spec = |name: &str, threshold: f64| GateSpec {
        name: name.into(),
        metric: "m".into(),
        op: GateOp::Ge,
        threshold,
        relative_to_before: false,
    };
    assert!(validate_gates(&[spec("a", 0.1), spec("a", 0.2)]).is_err());
    assert!(validate_gates(&[spec("", 0.1)]).is_err());
    assert!(validate_gates(&[spec("a", f64::NAN)]).is_err());
    validate_gates(&default_gates()).expect("defaults are valid");
    let d = default_gates();
    assert!(d
        .iter()
        .any(|g| g.metric == "model_utility" && g.relative_to_before && g.op == GateOp::Ge));
    // Gate specs round-trip through JSON with the operator spelled as text.
    let text = serde_json::to_string(&d[0]).expect("serialise");
    assert!(text.contains(r#""op":"<=""#), "{text}");
}

// --------------------------------------------------------------- keys

/// Generated with `openssl genpkey -algorithm ed25519` (a throwaway test key).
const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIL5dbQLtgMAfQQ5SgxcJkHVBbwE5FywRsuRMlZvyYiR0
-----END PRIVATE KEY-----
";
/// `openssl pkey -in key.pem -pubout`.
const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA1mUfB23zodA5jAcF4q+ulHw2NmunnBC8G1KoVozh+wg=
-----END PUBLIC KEY-----
";
const OPENSSL_PUBLIC_HEX: &str = "d6651f076df3a1d0398c0705e2afae947c36366ba79c10bc1b52a8568ce1fb08";

#[test]
fn keys_interoperate_with_openssl() -> Result<()> {
    let sk = signing_key_from_pem(OPENSSL_PRIVATE_PEM)?;
    assert_eq!(public_key_hex(&sk.verifying_key()), OPENSSL_PUBLIC_HEX);
    assert_eq!(verifying_key_from_str(OPENSSL_PUBLIC_PEM)?, sk.verifying_key());
    assert_eq!(
        verifying_key_from_str(&format!("  {OPENSSL_PUBLIC_HEX}\n"))?,
        sk.verifying_key()
    );
    assert_eq!(verifying_key_to_pem(&sk.verifying_key())?, OPENSSL_PUBLIC_PEM);
    assert!(verifying_key_from_str(&OPENSSL_PUBLIC_HEX.to_uppercase()).is_err());
    assert!(signing_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    Ok(())
}

#[test]
fn key_files_round_trip_and_are_private() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sk = generate_signing_key()?;
    assert_ne!(sk.to_bytes(), generate_signing_key()?.to_bytes());
    let private = dir.path().join("signing.pem");
    let public = dir.path().join("signing.pub.pem");
    save_signing_key(&sk, &private)?;
    save_verifying_key(&sk.verifying_key(), &public)?;
    assert_eq!(load_signing_key(&private)?.to_bytes(), sk.to_bytes());
    assert_eq!(load_verifying_key(&public)?, sk.verifying_key());
    assert!(std::fs::read_to_string(&private)?.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&private)?.permissions().mode() & 0o777, 0o600);
    }
    // Never overwrites a key.
    assert!(matches!(
        save_signing_key(&key(12), &private),
        Err(CertificateError::Io { .. })
    ));
    assert_eq!(load_signing_key(&private)?.to_bytes(), sk.to_bytes());
    assert!(matches!(
        load_signing_key(Path::new("/nonexistent/key.pem")),
        Err(CertificateError::Io { .. })
    ));
    // Sign with the loaded key, verify with the loaded public key.
    let signed = sign(&sample_certificate("x"), &load_signing_key(&private)?)?;
    verify(&signed, &load_verifying_key(&public)?)?;
    Ok(())
}

// ---------------------------------------------------------- timestamps

#[test]
fn timestamps() {
    assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_from_unix(1_740_823_337), "2025-03-01T10:02:17Z");
    assert!(is_rfc3339(&now_rfc3339()));
    for ok in [
        "2025-03-01T10:00:00Z",
        "2025-03-01T10:00:00.123456Z",
        "2025-03-01T11:42:17.5+01:00",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2025-03-01",
        "2025-03-01 10:00:00Z",
        "2025-13-01T10:00:00Z",
        "2025-03-01T10:00:00",
        "2025-03-01T10:00:00.Z",
        "2025-03-01T10:00:00+0100",
        "2025-03-01T10:00:00Zjunk",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}
