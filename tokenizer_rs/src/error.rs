//! One error type for the crate. Every variant carries enough context (file, field, byte offset or
//! token id) for a user to find the fault without a backtrace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid UTF-8 at byte offset {offset}")]
    NotUtf8 { path: PathBuf, offset: u64 },
    /// A tokenizer.json (or GPT-2 file) that we cannot read; `field` is a JSON path such as `model.merges[12]`.
    #[error("{source_name}: {field}: {message}")]
    Format {
        source_name: String,
        field: String,
        message: String,
    },
    /// `id` is text so that any integer a caller holds (Python's are unbounded) can be named.
    #[error("token id {id} is out of range (vocabulary size {vocab_size}) at position {position}")]
    IdOutOfRange {
        id: String,
        position: usize,
        vocab_size: usize,
    },
    #[error("invalid regular expression {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("{}", unknown_preset_message(name, *suggestion))]
    UnknownPreset {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn unknown_preset_message(name: &str, suggestion: Option<&str>) -> String {
    let guess = suggestion.map(|s| format!("did you mean '{s}'? ")).unwrap_or_default();
    format!(
        "unknown pre-tokenizer preset '{name}' ({guess}presets: {}); for a custom pattern write {}<pattern>",
        crate::pretokenize::PRESETS.join(", "),
        crate::pretokenize::REGEX_PREFIX
    )
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn id_out_of_range(id: impl std::fmt::Display, position: usize, vocab_size: usize) -> Self {
        Error::IdOutOfRange {
            id: id.to_string(),
            position,
            vocab_size,
        }
    }

    pub fn format(source_name: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format {
            source_name: source_name.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}
