//! The worker's configuration ([`WorkerConfig`], [`DeviceChoice`]) and the
//! per-job GRIN configuration: the model's `default_config` with the job's
//! `method_overrides` merged over it, and the model's quality gates.
//!
//! Job configuration format (both `default_config` and `method_overrides`):
//! a JSON object with an optional `"method"` (`grin`, `graddiff`, `npo`,
//! `idk`, `simnpo`, `ga`; default `grin`) selecting the preset, and any
//! subset of [`grin::unlearn::UnlearnConfig`]'s fields, merged recursively
//! over the preset (overrides last). Unknown fields are refused.
//!
//! Gates format (`Model::gates`): a JSON array of
//! [`grin::certificate::GateSpec`], or an object `{"gates": [...]}`; `null` or
//! `{}` means [`grin::certificate::default_gates`].

use std::path::PathBuf;
use std::time::Duration;

use grin::certificate::{GateSpec, SigningKey};
use grin::eval::EvalConfig;
use grin::unlearn::{Method, UnlearnConfig};
use serde_json::Value;

use crate::error::{Error, Result};

/// Where the tensors of a job live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU, computing in f32.
    #[default]
    Cpu,
    /// CUDA GPU `N` (needs the `cuda` feature), computing in bf16.
    Cuda(usize),
    /// The Apple GPU (needs the `metal` feature), computing in bf16.
    Metal,
}

impl DeviceChoice {
    /// The candle device; fails when the feature is not compiled in or the
    /// device is absent.
    pub fn device(self) -> Result<candle_core::Device> {
        let dev = match self {
            DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
            DeviceChoice::Cuda(n) => candle_core::Device::new_cuda(n),
            DeviceChoice::Metal => candle_core::Device::new_metal(0),
        };
        dev.map_err(|e| Error::Config(format!("device {self}: {e}")))
    }

    /// The compute dtype used by default: f32 on the CPU, bf16 on a GPU.
    pub fn default_dtype(self) -> candle_core::DType {
        match self {
            DeviceChoice::Cpu => candle_core::DType::F32,
            _ => candle_core::DType::BF16,
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal => f.write_str("metal"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `metal`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "metal" => Ok(DeviceChoice::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(Error::Config(format!(
                    "unknown device {other:?}: expected cpu, cuda, cuda:N or metal"
                ))),
            },
        }
    }
}

/// Everything a worker needs besides the store.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Unique per worker process (the store's lease owner).
    pub worker_id: String,
    /// Root of the checkpoint store; versions go to
    /// `<root>/<model>/<job_id>/model`.
    pub checkpoint_root: PathBuf,
    /// Signs the certificates.
    pub signing_key: SigningKey,
    /// Lease taken at claim and renewed by each heartbeat.
    pub lease: Duration,
    /// Heartbeat period (well within `lease`, e.g. `lease / 3`). Also bounds
    /// how fast a cancellation is noticed.
    pub heartbeat_every: Duration,
    /// Idle polling period (the fallback when no notification arrives).
    pub poll_interval: Duration,
    /// Progress is written to the job at most this often.
    pub progress_min_interval: Duration,
    /// How often [`crate::run`] returns expired leases to the queue.
    pub reap_every: Duration,
    /// After a wake-up, wait this long before claiming so that requests
    /// arriving together join one queued job (the store batches them, up to
    /// its `max_batch`). Zero: claim at once.
    pub coalesce_window: Duration,
    /// On shutdown, how long to wait for the running step to finish before
    /// releasing the job anyway.
    pub shutdown_grace: Duration,
    /// Forget payloads of requests that ended failed or cancelled outside a
    /// job (e.g. cancelled while queued) are erased this long after they
    /// ended, at each reap.
    pub payload_retention: Duration,
    /// Move `production` to a new version when its gates pass; when false
    /// (or a gate fails) the version awaits approval.
    pub promote_on_pass: bool,
    /// Prompt template for models that do not set one.
    pub template: String,
    /// Evaluation settings for the before/after metrics.
    pub eval: EvalConfig,
    /// Where to compute.
    pub device: DeviceChoice,
    /// Bytes of model weights [`crate::run`] keeps loaded between jobs (on
    /// the compute device), least recently used evicted first; 0 disables
    /// the cache. See [`crate::cache::ModelCache`].
    pub model_cache_bytes: u64,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("worker_id", &self.worker_id)
            .field("checkpoint_root", &self.checkpoint_root)
            .field("signing_key", &"<redacted>")
            .field("lease", &self.lease)
            .field("heartbeat_every", &self.heartbeat_every)
            .field("poll_interval", &self.poll_interval)
            .field("progress_min_interval", &self.progress_min_interval)
            .field("reap_every", &self.reap_every)
            .field("coalesce_window", &self.coalesce_window)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("payload_retention", &self.payload_retention)
            .field("promote_on_pass", &self.promote_on_pass)
            .field("template", &self.template)
            .field("eval", &self.eval)
            .field("device", &self.device)
            .field("model_cache_bytes", &self.model_cache_bytes)
            .finish()
    }
}

impl WorkerConfig {
    /// Production defaults: 2-minute lease renewed every 20 s, polling every
    /// 10 s, progress at most once a second, a 2-second coalescing window,
    /// 30 s of shutdown grace, payloads of failed/cancelled requests kept 7
    /// days, promotion on pass, CPU, a 4 GiB model cache.
    pub fn new(worker_id: impl Into<String>, checkpoint_root: impl Into<PathBuf>, signing_key: SigningKey) -> Self {
        WorkerConfig {
            worker_id: worker_id.into(),
            checkpoint_root: checkpoint_root.into(),
            signing_key,
            lease: Duration::from_secs(120),
            heartbeat_every: Duration::from_secs(20),
            poll_interval: Duration::from_secs(10),
            progress_min_interval: Duration::from_secs(1),
            reap_every: Duration::from_secs(30),
            coalesce_window: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            payload_retention: Duration::from_secs(7 * 24 * 3600),
            promote_on_pass: true,
            template: grin::data::PromptTemplate::DEFAULT.to_string(),
            eval: EvalConfig::default(),
            device: DeviceChoice::Cpu,
            model_cache_bytes: 4 << 30,
        }
    }

    /// A worker id unique to this process: `<host>-<pid>-<random>`.
    pub fn unique_worker_id(prefix: &str) -> String {
        format!("{prefix}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
    }

    /// Checks the timing relations.
    pub fn validate(&self) -> Result<()> {
        if self.worker_id.is_empty() {
            return Err(Error::Config("worker_id must not be empty".into()));
        }
        if self.heartbeat_every.is_zero() || self.heartbeat_every >= self.lease {
            return Err(Error::Config(format!(
                "heartbeat_every ({:?}) must be positive and shorter than the lease ({:?})",
                self.heartbeat_every, self.lease
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("poll_interval must be positive".into()));
        }
        Ok(())
    }
}

/// Recursive JSON merge: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The GRIN configuration of a job: the preset named by `"method"` (the
/// overrides' if given, else the model's, else `grin`), then the model's
/// defaults, then the job's overrides.
pub fn unlearn_config(model_default: &Value, overrides: &Value) -> Result<UnlearnConfig> {
    let bad = |m: String| Error::Permanent(format!("invalid GRIN configuration: {m}"));
    let split = |v: &Value, what: &str| -> Result<(Option<String>, Value)> {
        match v {
            Value::Null => Ok((None, Value::Object(Default::default()))),
            Value::Object(map) => {
                let mut map = map.clone();
                let method = match map.remove("method") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(bad(format!("{what}.method must be a string"))),
                };
                Ok((method, Value::Object(map)))
            }
            _ => Err(bad(format!("{what} must be a JSON object"))),
        }
    };
    let (m1, d) = split(model_default, "default_config")?;
    let (m2, o) = split(overrides, "method_overrides")?;
    let name = m2.or(m1).unwrap_or_else(|| "grin".into());
    let method = Method::parse(&name).ok_or_else(|| {
        bad(format!(
            "unknown method {name:?}; expected one of {}",
            Method::NAMES.join(", ")
        ))
    })?;
    let mut value = serde_json::to_value(method.preset()).map_err(|e| bad(e.to_string()))?;
    merge(&mut value, &d);
    merge(&mut value, &o);
    let cfg: UnlearnConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    grin::unlearn::validate(&cfg).map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// The model's gates (see the module docs for the format).
pub fn gates(model_gates: &Value) -> Result<Vec<GateSpec>> {
    let bad = |m: String| Error::Permanent(format!("invalid quality gates of the model: {m}"));
    let list = match model_gates {
        Value::Null => return Ok(grin::certificate::default_gates()),
        Value::Object(map) if map.is_empty() => return Ok(grin::certificate::default_gates()),
        Value::Object(map) => map
            .get("gates")
            .cloned()
            .ok_or_else(|| bad("expected an array of gates or {\"gates\": [...]}".into()))?,
        v => v.clone(),
    };
    let specs: Vec<GateSpec> = serde_json::from_value(list).map_err(|e| bad(e.to_string()))?;
    grin::certificate::validate_gates(&specs).map_err(|e| bad(e.to_string()))?;
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_parse() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        assert_eq!("metal".parse::<DeviceChoice>().unwrap(), DeviceChoice::Metal);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        assert_eq!(DeviceChoice::Cpu.default_dtype(), candle_core::DType::F32);
    }

    #[test]
    fn config_merges_preset_defaults_and_overrides() {
        let cfg = unlearn_config(
            &json!({"method": "graddiff", "finetune": {"max_steps": 7, "batch_size": 2}}),
            &json!({"finetune": {"max_steps": 3}, "seed": 9}),
        )
        .unwrap();
        assert_eq!(cfg.finetune.max_steps, 3);
        assert_eq!(cfg.finetune.batch_size, 2);
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.finetune.loss.forget, grin::unlearn::ForgetLoss::GradDiff);
        assert!(unlearn_config(&json!({"lr": 1}), &json!({})).is_err());
        assert!(unlearn_config(&json!({"method": "nope"}), &json!({})).is_err());
        assert_eq!(
            unlearn_config(&Value::Null, &Value::Null).unwrap(),
            UnlearnConfig::default()
        );
    }

    #[test]
    fn gates_formats() {
        assert_eq!(gates(&json!({})).unwrap(), grin::certificate::default_gates());
        let g = json!([{"name": "p", "metric": "forget_answer_probability", "op": "<=", "threshold": 1.0}]);
        assert_eq!(gates(&g).unwrap().len(), 1);
        assert_eq!(gates(&json!({"gates": g})).unwrap().len(), 1);
        assert!(gates(&json!({"min_retain_score": 0.9})).is_err());
    }
}
