//! The worker's model cache: the weights of recently used versions, kept on
//! the compute device so that the next job on the same base version (or on
//! the version the last job just produced) skips reading, hashing and
//! converting the checkpoint.
//!
//! Entries hold *snapshots* (tensors that are not variables), never the
//! variables a job trains: every job gets its own copy through
//! [`Model::from_tensors`], so a failed or cancelled run cannot leak its
//! half-changed weights into the next one. Entries are evicted least
//! recently used first when the byte budget would be exceeded; a budget of 0
//! disables the cache.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use grin::config::ModelConfig;
use grin::model::Model;
use uuid::Uuid;

/// Cached weights of one version.
struct Entry {
    config: ModelConfig,
    dtype: DType,
    tensors: BTreeMap<String, Tensor>,
    bytes: u64,
    last_used: u64,
}

/// Versions' weights, by version id, within a byte budget.
pub struct ModelCache {
    budget: u64,
    entries: BTreeMap<Uuid, Entry>,
    clock: u64,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache")
            .field("budget", &self.budget)
            .field("versions", &self.entries.keys().collect::<Vec<_>>())
            .field("bytes", &self.bytes())
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl ModelCache {
    /// An empty cache holding at most `budget` bytes of weights.
    pub fn new(budget: u64) -> Self {
        ModelCache {
            budget,
            entries: BTreeMap::new(),
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.bytes).sum()
    }

    /// Versions held, least recently used first.
    pub fn versions(&self) -> Vec<Uuid> {
        let mut v: Vec<_> = self.entries.iter().map(|(id, e)| (e.last_used, *id)).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// A fresh, trainable copy of `version` on `device`, if cached there.
    pub fn checkout(&mut self, version: Uuid, device: &Device) -> candle_core::Result<Option<Model>> {
        self.clock += 1;
        let clock = self.clock;
        let Some(entry) = self.entries.get_mut(&version) else {
            self.misses += 1;
            return Ok(None);
        };
        if !entry
            .tensors
            .values()
            .next()
            .is_some_and(|t| t.device().same_device(device))
        {
            self.misses += 1;
            return Ok(None);
        }
        entry.last_used = clock;
        self.hits += 1;
        // from_tensors turns each (non-variable) tensor into a new variable
        // with its own storage: the cached snapshot stays untouched.
        Model::from_tensors(&entry.config, entry.tensors.clone(), entry.dtype, device).map(Some)
    }

    /// Keeps a snapshot of `model`'s current weights as `version`, evicting
    /// older entries to stay within the budget. A model larger than the
    /// whole budget is not kept. Returns whether it was kept.
    pub fn insert(&mut self, version: Uuid, model: &Model) -> candle_core::Result<bool> {
        let bytes: u64 = model
            .vars()
            .iter()
            .map(|(_, v)| (v.elem_count() * v.dtype().size_in_bytes()) as u64)
            .sum();
        self.entries.remove(&version);
        if bytes > self.budget {
            return Ok(false);
        }
        while self.bytes() + bytes > self.budget {
            let Some(oldest) = self.versions().first().copied() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let tensors = model
            .tensors()
            .into_iter()
            .map(|(name, t)| Ok((name, t.copy()?)))
            .collect::<candle_core::Result<BTreeMap<_, _>>>()?;
        self.clock += 1;
        self.entries.insert(
            version,
            Entry {
                config: model.config().clone(),
                dtype: model.dtype(),
                tensors,
                bytes,
                last_used: self.clock,
            },
        );
        Ok(true)
    }

    /// Forgets `version` (e.g. a rejected one).
    pub fn remove(&mut self, version: Uuid) {
        self.entries.remove(&version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(seed: u64) -> Model {
        let cfg = ModelConfig::parse(
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 16,
                "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 16,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true}"#,
            std::path::Path::new("config.json"),
        )
        .unwrap();
        Model::new_random(&cfg, DType::F32, &Device::Cpu, seed, 0.02).unwrap()
    }

    fn weights(m: &Model) -> Vec<f32> {
        m.tensors()
            .values()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn checkout_gives_an_independent_copy() {
        let mut cache = ModelCache::new(u64::MAX);
        let id = Uuid::new_v4();
        let model = tiny(1);
        let original = weights(&model);
        assert!(cache.insert(id, &model).unwrap());
        // Changing the model after insertion does not change the cache.
        for (_, v) in model.vars() {
            v.set(&v.as_tensor().ones_like().unwrap()).unwrap();
        }
        let copy = cache.checkout(id, &Device::Cpu).unwrap().expect("cached");
        assert_eq!(weights(&copy), original);
        // Training the checked-out copy does not change the cache either.
        for (_, v) in copy.vars() {
            v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
        }
        let again = cache.checkout(id, &Device::Cpu).unwrap().expect("cached");
        assert_eq!(weights(&again), original);
        assert_eq!(cache.stats(), (2, 0));
        assert!(cache.checkout(Uuid::new_v4(), &Device::Cpu).unwrap().is_none());
        assert_eq!(cache.stats(), (2, 1));
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let model = tiny(2);
        let one = tiny(3);
        let size = {
            let mut c = ModelCache::new(u64::MAX);
            c.insert(Uuid::new_v4(), &model).unwrap();
            c.bytes()
        };
        let mut cache = ModelCache::new(2 * size);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.insert(a, &model).unwrap();
        cache.insert(b, &one).unwrap();
        // Touch a, so b is the least recently used.
        cache.checkout(a, &Device::Cpu).unwrap().unwrap();
        cache.insert(c, &model).unwrap();
        assert_eq!(cache.versions(), vec![a, c]);
        assert!(cache.bytes() <= 2 * size);
        // Too big for the budget: not kept, nothing evicted.
        let mut small = ModelCache::new(size - 1);
        assert!(!small.insert(a, &model).unwrap());
        assert!(small.versions().is_empty());
        // Budget 0 disables the cache.
        let mut off = ModelCache::new(0);
        assert!(!off.insert(a, &model).unwrap());
    }
}
