//! Hugging Face checkpoint directories: `config.json`, `model.safetensors`
//! (or shards with `model.safetensors.index.json`) and the tokenizer files.
//!
//! Loading checks every tensor name and shape against the configuration and
//! names what is missing, unexpected or mis-shaped. Saving writes the same
//! layout (safetensors with `{"format": "pt"}` metadata, so `transformers`
//! accepts it) into a hidden temporary directory beside the target, fsyncs,
//! and renames it into place: a crash never leaves a half-written checkpoint
//! under the target name. The returned manifest lists each file's sha256.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;

/// Files besides the weights that belong to a model directory and are copied
/// into derived checkpoints unchanged.
pub const AUX_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// One file of a written checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the checkpoint directory.
    pub path: String,
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
}

/// Parses a `torch_dtype` string.
pub fn dtype_from_torch(name: &str) -> Option<DType> {
    match name {
        "float32" => Some(DType::F32),
        "bfloat16" => Some(DType::BF16),
        "float16" => Some(DType::F16),
        _ => None,
    }
}

/// The `torch_dtype` string of a dtype.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// Weight files of a model directory: the single file, or the shards named by
/// the index (each once, in order).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            message: "no model.safetensors or model.safetensors.index.json".into(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let bad = |message: String| Error::Checkpoint {
        path: index.clone(),
        message,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing object `weight_map`".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name}] is not a file name")))?;
        if file.contains('/') || file.contains("..") {
            return Err(bad(format!("weight_map[{name}] = {file:?} leaves the directory")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Reads all tensors of a model directory (on the CPU, in their stored dtype).
pub fn read_tensors(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for file in weight_files(dir)? {
        if !file.is_file() {
            return Err(Error::Checkpoint {
                path: file,
                message: "shard named in the index is missing".into(),
            });
        }
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu).map_err(|e| Error::Checkpoint {
            path: file.clone(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
        for (name, t) in tensors {
            if out.insert(name.clone(), t).is_some() {
                return Err(Error::Checkpoint {
                    path: file.clone(),
                    message: format!("tensor {name} appears in more than one shard"),
                });
            }
        }
    }
    Ok(out)
}

/// Checks names and shapes against the configuration and drops tensors that
/// carry no parameters (`rotary_emb.inv_freq` buffers, a tied `lm_head`).
pub fn check_tensors(
    cfg: &ModelConfig,
    mut tensors: BTreeMap<String, Tensor>,
    dir: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    tensors.retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if cfg.tie_word_embeddings {
        tensors.remove("lm_head.weight");
    }
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, shape) in cfg.tensor_shapes() {
        match tensors.remove(&name) {
            None => missing.push(name),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, config.json implies {:?}",
                    t.dims(),
                    shape
                )))
            }
            Some(t) => {
                out.insert(name, t);
            }
        }
    }
    if !missing.is_empty() {
        return Err(bad(format!(
            "{} tensor(s) missing, e.g. {}",
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        )));
    }
    if !tensors.is_empty() {
        let names: Vec<_> = tensors.keys().take(3).cloned().collect();
        return Err(bad(format!(
            "{} tensor(s) this architecture does not have, e.g. {} (unsupported variant of {}?)",
            tensors.len(),
            names.join(", "),
            cfg.architecture.hf_class()
        )));
    }
    Ok(out)
}

/// The dtype to compute in when none is asked for: f32 on the CPU, bf16 on
/// accelerators.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Loads a model directory onto `device`, computing in `dtype` (default:
/// [`default_dtype`]). The stored dtype is remembered for saving.
pub fn load_model(dir: &Path, device: &Device, dtype: Option<DType>) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            message: "no config.json (expected a Hugging Face model directory)".into(),
        });
    }
    let cfg = ModelConfig::load(&cfg_path)?;
    let tensors = check_tensors(&cfg, read_tensors(dir)?, dir)?;
    let dtype = dtype.unwrap_or_else(|| default_dtype(device));
    Ok(Model::from_tensors(&cfg, tensors, dtype, device)?)
}

/// How to write a checkpoint.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Dtype of the stored tensors; default: the config's `torch_dtype`, else
    /// the model's.
    pub dtype: Option<DType>,
    /// Split the weights into shards of at most this many bytes (a tensor
    /// larger than this gets a shard of its own). Default 4 GiB.
    pub max_shard_bytes: u64,
    /// Copy the tokenizer and other [`AUX_FILES`] from this directory.
    pub aux_from: Option<PathBuf>,
    /// Write this text as `tokenizer.json` (wins over `aux_from`).
    pub tokenizer_json: Option<String>,
    /// More files to write into the directory (name, bytes), e.g. a run
    /// report, so they appear atomically with the weights.
    pub extra_files: Vec<(String, Vec<u8>)>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            dtype: None,
            max_shard_bytes: 4 << 30,
            aux_from: None,
            tokenizer_json: None,
            extra_files: Vec::new(),
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// sha256 and size of every file in `dir` (not recursive), sorted by name.
pub fn manifest(dir: &Path) -> Result<Vec<ManifestEntry>> {
    let mut entries = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut hasher = Sha256::new();
        let bytes = std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(&path, e))?;
        entries.push(ManifestEntry {
            path: entry.file_name().to_string_lossy().into_owned(),
            sha256: hex::encode(hasher.finalize()),
            bytes,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// Writes `model` as a Hugging Face directory at `dir`, atomically: `dir`
/// must not exist (or be empty); the files are written and fsynced in a
/// temporary sibling directory that is then renamed. Returns the manifest.
pub fn save_model(model: &Model, dir: &Path, opts: &SaveOptions) -> Result<Vec<ManifestEntry>> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_none();
        if !empty {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                message: "output directory exists and is not empty; refusing to overwrite".into(),
            });
        }
        std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Checkpoint {
            path: dir.to_path_buf(),
            message: "output path has no directory name".into(),
        })?
        .to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = write_into(model, &tmp, opts).and_then(|()| {
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        sync_dir(&parent)
    });
    if let Err(e) = result {
        // Best effort: the temporary directory is hidden and unique, and a
        // failed write must not leave it behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    manifest(dir)
}

fn write_into(model: &Model, dir: &Path, opts: &SaveOptions) -> Result<()> {
    let cfg = model.config();
    let dtype = opts
        .dtype
        .or_else(|| cfg.torch_dtype.as_deref().and_then(dtype_from_torch))
        .unwrap_or(model.dtype());
    let config =
        serde_json::to_string_pretty(&cfg.to_json(torch_dtype_name(dtype))).map_err(|e| Error::InvalidArgument {
            field: "config",
            message: e.to_string(),
        })?;
    write_synced(&dir.join("config.json"), config.as_bytes())?;

    // Shards in name order, greedily filled up to the size limit.
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![vec![]];
    let mut size = 0u64;
    for (name, t) in model.tensors() {
        let t = t.to_device(&Device::Cpu)?.to_dtype(dtype)?;
        let bytes = (t.elem_count() * dtype.size_in_bytes()) as u64;
        if size > 0 && size + bytes > opts.max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("at least one shard").push((name, t));
    }
    let metadata: Option<HashMap<String, String>> = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = dir.join(&file);
        let views: Vec<(&str, &Tensor)> = shard.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let bytes = safetensors::serialize(views, metadata.clone()).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_synced(&path, &bytes)?;
        for (name, t) in shard {
            total += (t.elem_count() * dtype.size_in_bytes()) as u64;
            weight_map.insert(name.clone(), file.clone());
        }
    }
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_synced(
            &dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index).unwrap_or_default().as_bytes(),
        )?;
    }

    if let Some(src) = &opts.aux_from {
        for f in AUX_FILES {
            let from = src.join(f);
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                write_synced(&dir.join(f), &bytes)?;
            }
        }
    }
    if let Some(json) = &opts.tokenizer_json {
        write_synced(&dir.join("tokenizer.json"), json.as_bytes())?;
    }
    for (name, bytes) in &opts.extra_files {
        if name.contains('/') || name.contains("..") || name.is_empty() {
            return Err(Error::InvalidArgument {
                field: "extra_files",
                message: format!("{name:?} is not a plain file name"),
            });
        }
        write_synced(&dir.join(name), bytes)?;
    }
    Ok(())
}

/// Loads `tokenizer.json` from a model directory.
pub fn load_tokenizer(dir: &Path) -> Result<tokenizers::Tokenizer> {
    Ok(crate::tokenizer::load_tokenizer(&dir.join("tokenizer.json"))?)
}
