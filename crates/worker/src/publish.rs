//! The checkpoint store's layout and the publish protocol.
//!
//! ```text
//! <root>/<model>/<job_id>/model/           the checkpoint (Hugging Face layout): the version's location
//! <root>/<model>/<job_id>/publish.json     what to register: manifest, metrics, signed certificate
//! <root>/<model>/.<job_id>.tmp-<pid>-<ns>/ staging of an attempt in progress (hidden)
//! ```
//!
//! An attempt stages everything under a hidden temporary directory: the
//! pipeline writes `model/` (itself atomically, fsynced), the worker adds
//! `publish.json` (fsynced), fsyncs the staging directory, renames it to
//! `<job_id>` and fsyncs the parent. Only then is the version registered
//! (`complete_job`, idempotent per job). So a crash leaves either a hidden
//! staging directory (removed by the job's next attempt) or a complete
//! `<job_id>/` directory that the next attempt verifies against its
//! manifest and registers without recomputing. A `<job_id>/` directory that
//! fails verification is moved aside and deleted, and the job runs again.

use std::path::{Path, PathBuf};

use grin::certificate::SignedCertificate;
use grin_store::{FileEntry, VersionStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Format tag of `publish.json`.
pub const RECORD_FORMAT: &str = "grin-worker-publish/1";

/// `publish.json`: everything needed to register the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRecord {
    pub format: String,
    pub job_id: Uuid,
    pub model: String,
    pub parent_id: Option<Uuid>,
    /// The version number the certificate names.
    pub number: i64,
    pub fulfilled_request_ids: Vec<Uuid>,
    pub files: Vec<FileEntry>,
    pub config: Value,
    pub seed: i64,
    pub metrics: Value,
    pub passed: bool,
    pub status: VersionStatus,
    pub certificate: SignedCertificate,
}

/// Paths of one job in the checkpoint store.
#[derive(Debug, Clone)]
pub struct JobPaths {
    /// `<root>/<model>`
    pub model_root: PathBuf,
    /// `<root>/<model>/<job_id>`
    pub job_dir: PathBuf,
    job_id: Uuid,
}

impl JobPaths {
    /// Refuses model names that are not a single plain path component.
    pub fn new(root: &Path, model: &str, job_id: Uuid) -> Result<Self> {
        let plain = !model.is_empty()
            && !model.starts_with('.')
            && !model.contains(['/', '\\', '\0'])
            && Path::new(model).components().count() == 1;
        if !plain {
            return Err(Error::Permanent(format!(
                "model name {model:?} cannot be used as a directory name in the checkpoint store"
            )));
        }
        let model_root = root.join(model);
        Ok(JobPaths {
            job_dir: model_root.join(job_id.to_string()),
            model_root,
            job_id,
        })
    }

    /// The published checkpoint (the version's location).
    pub fn model_dir(&self) -> PathBuf {
        self.job_dir.join("model")
    }

    /// The record beside it.
    pub fn record(&self) -> PathBuf {
        self.job_dir.join("publish.json")
    }

    fn tmp_prefix(&self) -> String {
        format!(".{}.tmp-", self.job_id)
    }

    /// A fresh, hidden staging directory (created).
    pub fn new_staging(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.model_root).map_err(|e| Error::io(&self.model_root, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = self
            .model_root
            .join(format!("{}{}-{nanos}", self.tmp_prefix(), std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Removes the staging directories earlier attempts of this job left.
    pub fn clean_stale(&self) -> Result<usize> {
        let listing = match std::fs::read_dir(&self.model_root) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&self.model_root, e)),
        };
        let prefix = self.tmp_prefix();
        let mut removed = 0;
        for entry in listing {
            let entry = entry.map_err(|e| Error::io(&self.model_root, e))?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_all(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes the record into `staging`, fsyncs, and renames `staging` to
    /// the job directory.
    pub fn finalize(&self, staging: &Path, record: &PublishRecord) -> Result<()> {
        let path = staging.join("publish.json");
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::Retryable(e.to_string()))?;
        write_synced(&path, &bytes)?;
        sync_dir(staging)?;
        std::fs::rename(staging, &self.job_dir).map_err(|e| Error::io(&self.job_dir, e))?;
        sync_dir(&self.model_root)
    }

    /// A published job directory left by an earlier attempt, verified
    /// against its own manifest and certificate; `None` (after moving it
    /// aside and deleting it) when it is absent, unreadable, or does not
    /// match.
    pub fn reusable(&self, requests: &[Uuid]) -> Result<Option<PublishRecord>> {
        if !self.job_dir.exists() {
            return Ok(None);
        }
        let verdict = (|| -> std::result::Result<PublishRecord, String> {
            let text = std::fs::read_to_string(self.record()).map_err(|e| e.to_string())?;
            let record: PublishRecord = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if record.format != RECORD_FORMAT || record.job_id != self.job_id {
                return Err("record is for another job or format".into());
            }
            if record.fulfilled_request_ids.iter().any(|r| !requests.contains(r)) {
                return Err("the job's requests changed since it was written".into());
            }
            grin::certificate::verify_files(&record.certificate.certificate, &self.model_dir())
                .map_err(|e| e.to_string())?;
            let listed: Vec<(&str, &str, u64)> = record
                .certificate
                .certificate
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.sha256.as_str(), f.bytes))
                .collect();
            let stored: Vec<(&str, &str, u64)> = record
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.sha256.as_str(), f.bytes as u64))
                .collect();
            if listed != stored {
                return Err("manifest and certificate disagree".into());
            }
            Ok(record)
        })();
        match verdict {
            Ok(record) => Ok(Some(record)),
            Err(reason) => {
                tracing::warn!(job_id = %self.job_id, %reason, "discarding an unusable job directory");
                self.discard()?;
                Ok(None)
            }
        }
    }

    /// Removes the job directory (never a registered version's: callers
    /// only discard before registering). Renamed to a hidden name first so
    /// that a crash mid-delete leaves nothing that looks published.
    pub fn discard(&self) -> Result<()> {
        if !self.job_dir.exists() {
            return Ok(());
        }
        let hidden = self
            .model_root
            .join(format!("{}discard-{}", self.tmp_prefix(), std::process::id()));
        std::fs::rename(&self.job_dir, &hidden).map_err(|e| Error::io(&self.job_dir, e))?;
        sync_dir(&self.model_root)?;
        remove_all(&hidden)
    }
}

pub(crate) fn remove_all(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_must_be_plain() {
        let root = Path::new("/r");
        let id = Uuid::nil();
        assert!(JobPaths::new(root, "tofu-mini", id).is_ok());
        for bad in ["", "..", ".x", "a/b", "/abs"] {
            assert!(JobPaths::new(root, bad, id).is_err(), "{bad}");
        }
    }

    #[test]
    fn stale_staging_is_cleaned_and_bad_dirs_discarded() {
        let root = tempfile::tempdir().unwrap();
        let id = Uuid::now_v7();
        let paths = JobPaths::new(root.path(), "m", id).unwrap();
        let s1 = paths.new_staging().unwrap();
        std::fs::write(s1.join("x"), b"partial").unwrap();
        let other = JobPaths::new(root.path(), "m", Uuid::now_v7()).unwrap();
        let s2 = other.new_staging().unwrap();
        assert_eq!(paths.clean_stale().unwrap(), 1);
        assert!(!s1.exists() && s2.exists());
        std::fs::create_dir_all(paths.model_dir()).unwrap();
        assert!(paths.reusable(&[]).unwrap().is_none());
        assert!(!paths.job_dir.exists());
        assert_eq!(std::fs::read_dir(&paths.model_root).unwrap().count(), 1);
    }
}
