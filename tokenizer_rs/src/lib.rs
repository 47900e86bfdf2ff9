//! hataori's tokenizer core: byte-level BPE training and encoding with exact Hugging Face
//! `tokenizers` parity. Pure Rust; the Python bindings live in `python.rs` alone.

pub mod bytelevel;
pub mod encode;
pub mod error;
pub mod hf_json;
pub mod normalize;
pub mod pretokenize;
pub mod pretokenize_ja;
pub mod progress;
pub mod tokenizer;
pub mod train;
pub mod unicode_class;
pub mod vocab;
pub mod word_counts;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use normalize::Normalizer;
pub use pretokenize::PreTokenizer;
pub use tokenizer::{AllowedSpecial, Tokenizer};
pub use train::TrainConfig;
pub use word_counts::WordCounts;
