//! Tokenizers: training the small byte-level BPE used by the fixtures, and
//! loading / saving Hugging Face `tokenizer.json` files.
//!
//! The trained tokenizer is a GPT-2-style byte-level BPE: every UTF-8 string
//! encodes without an unknown token and decodes back to itself. Its special
//! tokens are fixed (`<s>` = 0, `</s>` = 1, `<pad>` = 2) so fixtures, configs
//! and tests can rely on the ids. Models loaded from the Hub bring their own
//! `tokenizer.json`; [`special_ids`] only works for those when they use the
//! same token strings, so callers with other vocabularies take the ids from
//! the model's `config.json` instead. Prompt rendering and answer masking live
//! in [`crate::data`], not here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Beginning-of-sequence token; id 0 in tokenizers made by [`train_byte_level_bpe`].
pub const BOS_TOKEN: &str = "<s>";
/// End-of-sequence token; id 1 in tokenizers made by [`train_byte_level_bpe`].
pub const EOS_TOKEN: &str = "</s>";
/// Padding token; id 2 in tokenizers made by [`train_byte_level_bpe`].
pub const PAD_TOKEN: &str = "<pad>";

/// Three special tokens plus the 256 byte symbols: below this there is no
/// room for a single merge, and the alphabet itself would not fit.
const MIN_VOCAB_SIZE: usize = 3 + 256;

/// Errors from training, loading or saving a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The requested vocabulary cannot hold the specials and the byte alphabet.
    #[error("vocab_size {requested} is too small: a byte-level BPE needs at least {minimum}")]
    VocabTooSmall { requested: usize, minimum: usize },
    /// There was nothing to train on.
    #[error("cannot train a tokenizer on an empty corpus")]
    EmptyCorpus,
    /// The `tokenizers` library failed while building or training.
    #[error("tokenizer training failed: {0}")]
    Train(String),
    /// A `tokenizer.json` could not be read or parsed.
    #[error("{}: cannot load tokenizer: {message}", path.display())]
    Load { path: PathBuf, message: String },
    /// A `tokenizer.json` could not be written.
    #[error("{}: cannot save tokenizer: {message}", path.display())]
    Save { path: PathBuf, message: String },
    /// A special token this crate relies on is not in the vocabulary.
    #[error("tokenizer has no {role} token {token:?} in its vocabulary")]
    MissingSpecial { role: &'static str, token: &'static str },
}

/// Ids of the special tokens the data pipeline and generation need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

/// Trains a deterministic byte-level BPE tokenizer on `texts`.
///
/// The result has `<s>` (0), `</s>` (1) and `<pad>` (2), then the 256 byte
/// symbols, then merges; a post-processor prepends `<s>` when
/// `add_special_tokens` is true (it never appends `</s>`: the data pipeline
/// adds EOS itself so the answer boundary stays exact). The pre-tokenizer does
/// not add a prefix space, so `decode(encode(x)) == x` for any UTF-8 `x`.
///
/// `vocab_size` is an upper bound: training stops earlier when no pair occurs
/// at least twice. Identical `texts` (same order) give a byte-identical
/// `tokenizer.json`.
pub fn train_byte_level_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer, TokenizerError> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(TokenizerError::VocabTooSmall {
            requested: vocab_size,
            minimum: MIN_VOCAB_SIZE,
        });
    }
    if texts.iter().all(|t| t.is_empty()) {
        return Err(TokenizerError::EmptyCorpus);
    }

    let specials = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect::<Vec<_>>();
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        // Pairs seen once are noise on a small corpus; merging them only
        // spends vocabulary on strings the model will never see again.
        .min_frequency(2)
        .special_tokens(specials)
        .initial_alphabet(alphabet)
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);

    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        // trim_offsets only affects offsets; use_regex gives GPT-2 word splits.
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| TokenizerError::Train(e.to_string()))?;

    // The trainer registers the specials first, so these ids hold; checking
    // here turns a change in that library behaviour into an error, not a
    // silently shifted vocabulary.
    let ids = special_ids(&tokenizer)?;
    if (ids.bos, ids.eos, ids.pad) != (0, 1, 2) {
        return Err(TokenizerError::Train(format!(
            "special tokens got ids {ids:?}, expected bos 0, eos 1, pad 2"
        )));
    }
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS_TOKEN} $A"))
        .and_then(|b| b.try_pair(format!("{BOS_TOKEN} $A $B:1")))
        .map_err(|e| TokenizerError::Train(e.to_string()))?
        .special_tokens(vec![(BOS_TOKEN, ids.bos)])
        .build()
        .map_err(|e| TokenizerError::Train(e.to_string()))?;
    tokenizer.with_post_processor(Some(post));
    Ok(tokenizer)
}

/// Looks up `<s>`, `</s>` and `<pad>` in `tokenizer`'s vocabulary.
///
/// Fails with [`TokenizerError::MissingSpecial`] naming the first absent
/// token; tokenizers that spell their specials differently (Llama 3's
/// `<|begin_of_text|>`, say) are not handled here.
pub fn special_ids(tokenizer: &Tokenizer) -> Result<SpecialIds, TokenizerError> {
    let id = |role: &'static str, token: &'static str| {
        tokenizer
            .token_to_id(token)
            .ok_or(TokenizerError::MissingSpecial { role, token })
    };
    Ok(SpecialIds {
        bos: id("bos", BOS_TOKEN)?,
        eos: id("eos", EOS_TOKEN)?,
        pad: id("pad", PAD_TOKEN)?,
    })
}

/// Loads a Hugging Face `tokenizer.json`; errors name the path.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `tokenizer` as pretty-printed JSON (the layout `transformers`
/// writes), so the same tokenizer always gives the same bytes.
pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<(), TokenizerError> {
    tokenizer.save(path, true).map_err(|e| TokenizerError::Save {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
