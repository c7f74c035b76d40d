//! The settings file: `--settings FILE` (or `GRIN_SETTINGS`) names a TOML
//! file of `key = value` settings. Each key is the lower-case name of one of
//! the documented `GRIN_*` environment variables; the file fills in only
//! what the environment does not set, so the order of precedence is
//! command-line flag > environment > file > built-in default. Unknown keys
//! are refused with the file and key named (a typo must not silently fall
//! back to a default). Values are never printed: the file may hold secrets.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Every setting: file key, environment variable, what it is, default.
/// README.md's configuration table lists the same rows.
pub const SETTINGS: &[(&str, &str, &str, &str)] = &[
    (
        "database_url",
        "GRIN_DATABASE_URL",
        "`postgres://…` or `sqlite://FILE?mode=rwc`",
        "`sqlite://grin-data/grin.db?mode=rwc`",
    ),
    (
        "hmac_secret",
        "GRIN_HMAC_SECRET",
        "server secret for HMAC digests of identities and texts (required, ≥ 16 characters)",
        "—",
    ),
    (
        "signing_key",
        "GRIN_SIGNING_KEY",
        "Ed25519 PKCS#8 PEM key that signs certificates (worker)",
        "—",
    ),
    (
        "checkpoint_root",
        "GRIN_CHECKPOINT_ROOT",
        "where published versions go",
        "`grin-data/checkpoints`",
    ),
    ("bind", "GRIN_BIND", "API address", "`127.0.0.1:8080`"),
    (
        "callback_secret",
        "GRIN_CALLBACK_SECRET",
        "HMAC key for signed status callbacks (off when unset)",
        "—",
    ),
    (
        "public_url",
        "GRIN_PUBLIC_URL",
        "public base URL; OpenDSR discovery names the processor certificate under it",
        "from the request's `Host`",
    ),
    (
        "opendsr_domain",
        "GRIN_OPENDSR_DOMAIN",
        "OpenDSR processor domain",
        "the host of `public_url`",
    ),
    (
        "opendsr_key",
        "GRIN_OPENDSR_KEY",
        "RSA key (PEM) signing OpenDSR responses and callbacks",
        "a generated self-signed development key",
    ),
    (
        "opendsr_cert",
        "GRIN_OPENDSR_CERT",
        "X.509 certificate (PEM) of `opendsr_key`",
        "—",
    ),
    (
        "opendsr_models",
        "GRIN_OPENDSR_MODELS",
        "models an OpenDSR erasure applies to (comma-separated)",
        "all",
    ),
    (
        "device",
        "GRIN_DEVICE",
        "`cpu`, `cuda[:N]` (`cuda` build), `metal`",
        "`cpu`",
    ),
    (
        "model_cache_mb",
        "GRIN_MODEL_CACHE_MB",
        "MiB of model weights a worker keeps loaded between jobs (0: off)",
        "`4096`",
    ),
    ("threads", "GRIN_THREADS", "tensor threads", "all cores"),
    ("log", "GRIN_LOG", "log filter (`tracing` syntax)", "`warn,grin=info`"),
];

/// The settings file named by `--settings FILE` / `--settings=FILE` in
/// `args`, or by `GRIN_SETTINGS`. (`--config` is taken: it names a run's
/// configuration in `fixture`, `unlearn` and `bench`.)
pub fn settings_path(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--settings" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--settings=") {
            return Some(v.to_owned());
        }
    }
    std::env::var("GRIN_SETTINGS").ok()
}

/// Reads `path` and returns the environment variables it sets that the
/// environment does not (the caller sets them before parsing flags).
pub fn from_file(path: &Path) -> Result<Vec<(&'static str, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--settings {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("--settings {}: not valid TOML", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(&(_, env, _, _)) = SETTINGS.iter().find(|(k, ..)| *k == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, ..)| *k).collect();
            bail!(
                "--settings {}: unknown setting `{key}` (known: {})",
                path.display(),
                known.join(", ")
            );
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "--settings {}: `{key}` must be a string, integer or boolean, not a {}",
                path.display(),
                other.type_str()
            ),
        };
        if std::env::var_os(env).is_none() {
            out.push((env, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_settings_flag() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            settings_path(&args(&["grin", "serve", "--settings", "a.toml"])).as_deref(),
            Some("a.toml")
        );
        assert_eq!(
            settings_path(&args(&["grin", "--settings=b.toml", "worker"])).as_deref(),
            Some("b.toml")
        );
    }

    #[test]
    fn maps_keys_to_variables_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "bind = \"0.0.0.0:9000\"\nmodel_cache_mb = 512\n").unwrap();
        let vars = from_file(&good).unwrap();
        // (An environment that already sets one of them would keep its value.)
        for (env, value) in [("GRIN_BIND", "0.0.0.0:9000"), ("GRIN_MODEL_CACHE_MB", "512")] {
            if std::env::var_os(env).is_none() {
                assert!(vars.contains(&(env, value.to_string())), "{vars:?}");
            }
        }
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "databse_url = \"x\"\n").unwrap();
        let e = from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("databse_url"), "{e}");
        let wrong = dir.path().join("wrong.toml");
        std::fs::write(&wrong, "bind = [1]\n").unwrap();
        let e = from_file(&wrong).unwrap_err().to_string();
        assert!(e.contains("`bind`") && e.contains("array"), "{e}");
    }
}
