//! GRIN: unlearning for Llama-family language models, in candle.
