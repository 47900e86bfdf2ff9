//! The Python face of the tokenizer (`tokenizer_rs._native`). The only file that knows PyO3:
//! it converts arguments, releases the GIL around heavy work and maps errors to Python exceptions.

use crate::error::Error;
use crate::hf_json;
use crate::normalize::Normalizer;
use crate::pretokenize::PreTokenizer;
use crate::tokenizer::{AllowedSpecial, Tokenizer};
use crate::train::{file_progress, TrainConfig, WordCounts};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::path::PathBuf;

fn to_py_err(e: Error) -> PyErr {
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(e.to_string()),
        Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// `allowed_special`: "all" (the default), "none" or None, or a collection of special tokens.
struct Allowed(AllowedSpecial);

impl<'py> FromPyObject<'py> for Allowed {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(Allowed(AllowedSpecial::None));
        }
        if let Ok(s) = obj.downcast::<PyString>() {
            return match s.to_str()? {
                "all" => Ok(Allowed(AllowedSpecial::All)),
                "none" => Ok(Allowed(AllowedSpecial::None)),
                other => Err(PyValueError::new_err(format!(
                    "allowed_special must be \"all\", \"none\" or a set of special tokens, not {other:?}"
                ))),
            };
        }
        let mut set = rustc_hash::FxHashSet::default();
        for item in obj.try_iter()? {
            set.insert(item?.extract::<String>()?);
        }
        Ok(Allowed(AllowedSpecial::Only(set)))
    }
}

/// A str argument as UTF-8; a str that cannot be (a lone surrogate) is named with Python's reason.
fn extract_text(item: &Bound<'_, PyAny>, what: impl FnOnce() -> String) -> PyResult<PyBackedStr> {
    item.extract::<PyBackedStr>().map_err(|e| {
        if item.is_instance_of::<PyString>() {
            PyValueError::new_err(format!("{} cannot be encoded as UTF-8: {e}", what()))
        } else {
            let type_name = item.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!("{} is not a str (got {type_name})", what()))
        }
    })
}

fn positive(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be a positive integer, not {value}")))
}

/// Token ids from any sequence of ints, with out-of-range ids named by value and position.
fn extract_ids(ids: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<Vec<u32>> {
    let raw: Vec<i64> = ids
        .extract()
        .map_err(|_| PyTypeError::new_err("ids must be a sequence of integers"))?;
    raw.iter()
        .enumerate()
        .map(|(position, &id)| {
            if id >= 0 && (id as u64) < vocab_size as u64 {
                Ok(id as u32)
            } else {
                Err(to_py_err(Error::IdOutOfRange {
                    id: id as u64,
                    position,
                    vocab_size,
                }))
                .map_err(|e| if id < 0 { PyValueError::new_err(format!("token id {id} is negative at position {position}")) } else { e })
            }
        })
        .collect()
}

fn as_path(obj: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        return Ok(Some(obj.extract::<PathBuf>()?));
    }
    Ok(None)
}

/// Strings are pulled from a Python iterator in batches of about this many bytes, then counted
/// with the GIL released.
const BATCH_BYTES: usize = 4 << 20;

/// The unknown token of the char and word models (the seeds' SimpleTokenizerV2 uses it too).
const UNK_TOKEN: &str = "<|unk|>";

#[pyclass(module = "tokenizer_rs", name = "Tokenizer", frozen)]
pub struct PyTokenizer {
    inner: Tokenizer,
}

#[pymethods]
impl PyTokenizer {
    /// Train a byte-level BPE tokenizer; see the type stubs for the arguments.
    #[staticmethod]
    #[pyo3(signature = (files_or_iterator, vocab_size, *, min_frequency=0, special_tokens=None,
                        pretokenizer=None, normalizer=None, max_token_length=None, show_progress=true, model="bpe"))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        files_or_iterator: &Bound<'_, PyAny>,
        vocab_size: i64,
        min_frequency: i64,
        special_tokens: Option<Vec<String>>,
        pretokenizer: Option<&str>,
        normalizer: Option<&str>,
        max_token_length: Option<i64>,
        show_progress: bool,
        model: &str,
    ) -> PyResult<Self> {
        // Zero reaches the core's check, which names the minimum (alphabet + special tokens).
        let vocab_size = usize::try_from(vocab_size)
            .map_err(|_| PyValueError::new_err(format!("vocab_size must be >= 0, not {vocab_size}")))?;
        let min_frequency = u64::try_from(min_frequency)
            .map_err(|_| PyValueError::new_err(format!("min_frequency must be >= 0, not {min_frequency}")))?;
        let max_token_length = max_token_length.map(|m| positive("max_token_length", m)).transpose()?;
        let pretok = match (model, pretokenizer) {
            ("bpe", p) => PreTokenizer::from_name(p.unwrap_or("gpt2")).map_err(to_py_err)?,
            ("char", None) => PreTokenizer::Chars,
            ("word", None) => PreTokenizer::Words,
            ("char" | "word", Some(_)) => {
                return Err(PyValueError::new_err(format!("model={model:?} has its own split; leave pretokenizer unset")))
            }
            (other, _) => return Err(PyValueError::new_err(format!("unknown model {other:?} (choose \"bpe\", \"char\" or \"word\")"))),
        };
        if model != "bpe" && max_token_length.is_some() {
            return Err(PyValueError::new_err("max_token_length applies to model=\"bpe\" only"));
        }
        let normalizer = match normalizer {
            None => None,
            Some(name) => Some(Normalizer::from_name(name).ok_or_else(|| {
                PyValueError::new_err(format!("unknown normalizer {name:?} (choose \"nfc\" or \"nfkc\")"))
            })?),
        };
        let cfg = TrainConfig {
            vocab_size,
            min_frequency,
            special_tokens: special_tokens.unwrap_or_else(|| vec!["<|endoftext|>".to_string()]),
            max_token_length,
            show_progress,
        };
        let mut counts = WordCounts::new(pretok.clone(), normalizer);

        // A path, or a list/tuple of paths: files. Anything else iterable: texts.
        let files: Option<Vec<PathBuf>> = if let Some(p) = as_path(files_or_iterator)? {
            Some(vec![p])
        } else if files_or_iterator.is_instance_of::<PyList>() || files_or_iterator.is_instance_of::<PyTuple>() {
            let mut paths = Vec::new();
            for item in files_or_iterator.try_iter()? {
                let item = item?;
                match as_path(&item)? {
                    Some(p) => paths.push(p),
                    None => return Err(PyTypeError::new_err("a list or tuple must hold file paths; pass texts as an iterator, e.g. iter(texts)")),
                }
            }
            Some(paths)
        } else {
            None
        };

        match files {
            Some(paths) => {
                let mut total = 0u64;
                let from_list = !files_or_iterator.is_instance_of::<PyString>() && !files_or_iterator.hasattr("__fspath__")?;
                for p in &paths {
                    let meta = std::fs::metadata(p).map_err(|e| {
                        let err = to_py_err(Error::io(p, e));
                        if from_list {
                            // A list of texts is the usual mistake here.
                            PyFileNotFoundError::new_err(format!("{err} (a list or tuple is read as file paths; to train on texts, pass an iterator: iter(texts))"))
                        } else {
                            err
                        }
                    })?;
                    if meta.is_dir() {
                        return Err(PyValueError::new_err(format!("{}: is a directory, not a text file", p.display())));
                    }
                    total += meta.len();
                }
                py.allow_threads(|| {
                    let bar = file_progress(show_progress, total);
                    for p in &paths {
                        counts.add_file(p, bar.as_ref())?;
                    }
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    Ok::<_, Error>(())
                })
                .map_err(to_py_err)?;
            }
            None => {
                let iter = files_or_iterator.try_iter().map_err(|_| {
                    PyTypeError::new_err("files_or_iterator must be a path, a list of paths, or an iterator of strings")
                })?;
                let mut batch: Vec<PyBackedStr> = Vec::new();
                let mut batch_bytes = 0;
                let mut index = 0usize;
                for item in iter {
                    let item = item?;
                    let s = extract_text(&item, || format!("item {index} of the iterator"))?;
                    index += 1;
                    batch_bytes += s.len();
                    batch.push(s);
                    if batch_bytes >= BATCH_BYTES {
                        py.allow_threads(|| counts.add_sequences(&batch));
                        batch.clear();
                        batch_bytes = 0;
                    }
                }
                py.allow_threads(|| counts.add_sequences(&batch));
            }
        }
        let inner = py
            .allow_threads(|| match model {
                "bpe" => Tokenizer::train(&counts, &cfg, normalizer, pretok),
                _ => Tokenizer::train_word_level(&counts, &cfg, UNK_TOKEN, normalizer, pretok),
            })
            .map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    /// Load a Hugging Face tokenizer.json (ours or HF's; both merge formats).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.allow_threads(|| hf_json::from_file(&path)).map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    /// Load a tokenizer from the text of a tokenizer.json.
    #[staticmethod]
    fn from_str(py: Python<'_>, json: &str) -> PyResult<Self> {
        let inner = py.allow_threads(|| hf_json::from_json_str(json, "<string>")).map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    /// Load OpenAI's GPT-2 files (`encoder.json` and `vocab.bpe`).
    #[staticmethod]
    fn from_gpt2(py: Python<'_>, encoder_json: PathBuf, vocab_bpe: PathBuf) -> PyResult<Self> {
        let inner = py
            .allow_threads(|| hf_json::from_gpt2_files(&encoder_json, &vocab_bpe))
            .map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    /// Write a Hugging Face tokenizer.json (atomically).
    #[pyo3(signature = (path, pretty=false))]
    fn save(&self, py: Python<'_>, path: PathBuf, pretty: bool) -> PyResult<()> {
        py.allow_threads(|| hf_json::save(&self.inner, &path, pretty)).map_err(to_py_err)
    }

    /// The tokenizer.json text.
    #[pyo3(signature = (pretty=false))]
    fn to_str(&self, pretty: bool) -> String {
        let v = hf_json::to_json(&self.inner);
        if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        }
        .expect("a JSON value serializes")
    }

    #[pyo3(signature = (text, allowed_special=Allowed(AllowedSpecial::All)))]
    fn encode(&self, py: Python<'_>, text: PyBackedStr, allowed_special: Allowed) -> PyResult<Vec<u32>> {
        let allowed = allowed_special.0;
        Ok(if text.len() > 1 << 14 {
            py.allow_threads(|| self.inner.encode(&text, &allowed))
        } else {
            self.inner.encode(&text, &allowed)
        })
    }

    /// Encode without recognising any special token.
    fn encode_ordinary(&self, py: Python<'_>, text: PyBackedStr) -> Vec<u32> {
        py.allow_threads(|| self.inner.encode_ordinary(&text))
    }

    #[pyo3(signature = (texts, allowed_special=Allowed(AllowedSpecial::All)))]
    fn encode_batch(&self, py: Python<'_>, texts: &Bound<'_, PyAny>, allowed_special: Allowed) -> PyResult<Vec<Vec<u32>>> {
        let allowed = allowed_special.0;
        let mut owned: Vec<PyBackedStr> = Vec::new();
        for (i, item) in texts.try_iter()?.enumerate() {
            let item = item?;
            owned.push(extract_text(&item, || format!("texts[{i}]"))?);
        }
        Ok(py.allow_threads(|| self.inner.encode_batch(&owned, &allowed)))
    }

    /// Encode documents in parallel into one flat little-endian buffer (`dtype` "uint16" or "uint32"),
    /// each followed by `separator` (a token id) when given; returns (bytes, tokens per document).
    #[pyo3(signature = (texts, *, separator=None, dtype="uint16", allowed_special=Allowed(AllowedSpecial::All)))]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        separator: Option<u32>,
        dtype: &str,
        allowed_special: Allowed,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<u64>)> {
        let allowed = allowed_special.0;
        let width = match dtype {
            "uint16" => 2,
            "uint32" => 4,
            other => return Err(PyValueError::new_err(format!("dtype must be \"uint16\" or \"uint32\", not {other:?}"))),
        };
        if width == 2 && self.inner.vocab_size() > 1 << 16 {
            return Err(PyValueError::new_err(format!(
                "vocabulary of {} tokens does not fit uint16; use dtype=\"uint32\"",
                self.inner.vocab_size()
            )));
        }
        if let Some(sep) = separator {
            if sep as usize >= self.inner.vocab_size() {
                return Err(PyValueError::new_err(format!("separator id {sep} is out of range (vocabulary size {})", self.inner.vocab_size())));
            }
        }
        let mut owned: Vec<PyBackedStr> = Vec::new();
        for (i, item) in texts.try_iter()?.enumerate() {
            let item = item?;
            owned.push(extract_text(&item, || format!("texts[{i}]"))?);
        }
        let (buf, lengths) = py.allow_threads(|| self.inner.encode_batch_flat(&owned, &allowed, separator, width));
        Ok((PyBytes::new(py, &buf), lengths))
    }

    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let ids = extract_ids(ids, self.inner.vocab_size())?;
        py.allow_threads(|| self.inner.decode(&ids)).map_err(to_py_err)
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let ids = extract_ids(ids, self.inner.vocab_size())?;
        let bytes = py.allow_threads(|| self.inner.decode_bytes(&ids)).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id)).map(str::to_string)
    }

    /// The bytes one token stands for.
    fn token_bytes<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyBytes>> {
        let id32 = u32::try_from(id).ok();
        match id32.and_then(|i| self.inner.vocab.token_bytes(i)) {
            Some(b) => Ok(PyBytes::new(py, b)),
            None => Err(PyValueError::new_err(format!(
                "token id {id} is out of range (vocabulary size {})",
                self.inner.vocab_size()
            ))),
        }
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __len__(&self) -> usize {
        self.inner.vocab_size()
    }

    fn get_vocab<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (id, tok) in self.inner.vocab.tokens().iter().enumerate() {
            d.set_item(tok, id)?;
        }
        Ok(d)
    }

    #[getter]
    fn merges(&self) -> Vec<(String, String)> {
        let v = &self.inner.vocab;
        v.merges()
            .iter()
            .map(|&(a, b)| (v.token(a).unwrap().to_string(), v.token(b).unwrap().to_string()))
            .collect()
    }

    #[getter]
    fn special_tokens(&self) -> Vec<String> {
        self.inner.special_tokens().map(|t| t.content.clone()).collect()
    }

    /// The pre-tokenizer: a preset name (`gpt2`, `cl100k`, `o200k`) or the custom pattern.
    #[getter]
    fn pretokenizer(&self) -> String {
        self.inner.pretokenizer.name()
    }

    /// "bpe", "char" or "word".
    #[getter]
    fn model(&self) -> &'static str {
        self.inner.model_name()
    }

    #[getter]
    fn normalizer(&self) -> Option<&'static str> {
        self.inner.normalizer.map(|n| n.name())
    }

    /// The pre-tokens of `text` (after normalization), for inspection.
    fn pre_tokenize(&self, text: &str) -> Vec<String> {
        let normalized = crate::normalize::normalize_opt(self.inner.normalizer, text);
        self.inner.pretokenizer.pieces(&normalized).into_iter().map(String::from).collect()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let cls = slf.get_type().getattr("from_str")?;
        Ok((cls, (slf.get().to_str(false),)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(model={:?}, vocab_size={}, pretokenizer={:?}, normalizer={:?}, special_tokens={:?})",
            self.inner.model_name(),
            self.inner.vocab_size(),
            self.inner.pretokenizer.name(),
            self.inner.normalizer.map(|n| n.name()),
            self.special_tokens()
        )
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add("PRESETS", crate::pretokenize::PRESETS.to_vec())?;
    m.add("GPT2_PATTERN", crate::pretokenize::GPT2_PATTERN)?;
    Ok(())
}
