//! The Python face of the tokenizer (`tokenizer_rs._native`). The only file that knows PyO3:
//! it converts arguments, releases the GIL around heavy work and maps errors to Python exceptions.

use crate::error::Error;
use crate::hf_json;
use crate::normalize::Normalizer;
use crate::pretokenize::PreTokenizer;
use crate::tokenizer::{AllowedSpecial, Tokenizer};
use crate::progress::file_progress;
use crate::train::{TrainConfig, MAX_VOCAB_SIZE};
use crate::word_counts::WordCounts;
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

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
}

/// A Python integer of any size, as far as a u64 can tell it.
enum PyIntValue {
    Fits(u64),
    /// Negative, with its decimal text.
    Negative(String),
    /// Beyond u64, with its decimal text.
    Huge(String),
}

/// Reads an int argument without PyO3's fixed-width conversion (which raises OverflowError, a
/// type no caller expects); anything `operator.index` refuses is a TypeError naming `what`.
fn int_value(obj: &Bound<'_, PyAny>, what: impl FnOnce() -> String) -> PyResult<PyIntValue> {
    if let Ok(v) = obj.extract::<u64>() {
        return Ok(PyIntValue::Fits(v));
    }
    let index = obj.py().import("operator")?.getattr("index")?;
    let int = index
        .call1((obj,))
        .map_err(|_| PyTypeError::new_err(format!("{} must be an integer, not {}", what(), type_name(obj))))?;
    let text = int.str()?.to_string();
    Ok(if int.lt(0)? { PyIntValue::Negative(text) } else { PyIntValue::Huge(text) })
}

/// A size argument: an integer from `min` to `max`, else a ValueError naming it and the bounds.
fn size_arg(name: &str, obj: &Bound<'_, PyAny>, min: u64, max: u64) -> PyResult<u64> {
    let text = match int_value(obj, || name.to_string())? {
        PyIntValue::Fits(v) if (min..=max).contains(&v) => return Ok(v),
        PyIntValue::Fits(v) => v.to_string(),
        PyIntValue::Negative(t) | PyIntValue::Huge(t) => t,
    };
    Err(PyValueError::new_err(format!("{name} must be an integer from {min} to {max}, not {text}")))
}

/// One token id, refused (ValueError) unless it is in the vocabulary.
fn token_id(obj: &Bound<'_, PyAny>, position: usize, vocab_size: usize) -> PyResult<u32> {
    match int_value(obj, || format!("ids[{position}]"))? {
        PyIntValue::Fits(id) if id < vocab_size as u64 => Ok(id as u32),
        PyIntValue::Fits(id) => Err(to_py_err(Error::id_out_of_range(id, position, vocab_size))),
        PyIntValue::Huge(id) => Err(to_py_err(Error::id_out_of_range(id, position, vocab_size))),
        PyIntValue::Negative(id) => Err(PyValueError::new_err(format!("token id {id} is negative at position {position}"))),
    }
}

/// Token ids from any iterable of ints (of any size), with an out-of-range id named by value and
/// position.
fn extract_ids(ids: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<Vec<u32>> {
    let not_ids = || PyTypeError::new_err(format!("ids must be a sequence of integers, not {}", type_name(ids)));
    if ids.is_instance_of::<PyString>() {
        return Err(not_ids());
    }
    let items = ids.try_iter().map_err(|_| not_ids())?;
    let mut out = Vec::with_capacity(ids.len().unwrap_or(0));
    for (position, item) in items.enumerate() {
        let item = item?;
        if item.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!("ids must be a sequence of integers: ids[{position}] is a str")));
        }
        out.push(token_id(&item, position, vocab_size)?);
    }
    Ok(out)
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

/// The training settings checked and resolved: what the core's trainer takes.
struct TrainSettings {
    cfg: TrainConfig,
    pretokenizer: PreTokenizer,
    normalizer: Option<Normalizer>,
    word_level: bool,
}

impl TrainSettings {
    /// Checks `Tokenizer.train`'s arguments (Python ints of any size) and resolves the model's
    /// pre-tokenizer and normalizer.
    #[allow(clippy::too_many_arguments)]
    fn from_args(
        vocab_size: &Bound<'_, PyAny>,
        min_frequency: Option<&Bound<'_, PyAny>>,
        special_tokens: Option<Vec<String>>,
        pretokenizer: Option<&str>,
        normalizer: Option<&str>,
        max_token_length: Option<&Bound<'_, PyAny>>,
        show_progress: bool,
        model: &str,
    ) -> PyResult<Self> {
        // Zero reaches the core's check, which names the minimum (alphabet + special tokens).
        let cfg = TrainConfig {
            vocab_size: size_arg("vocab_size", vocab_size, 0, MAX_VOCAB_SIZE as u64)? as usize,
            min_frequency: min_frequency.map(|m| size_arg("min_frequency", m, 0, u64::MAX)).transpose()?.unwrap_or(0),
            special_tokens: special_tokens.unwrap_or_else(|| vec!["<|endoftext|>".to_string()]),
            max_token_length: max_token_length
                .map(|m| size_arg("max_token_length", m, 1, u32::MAX as u64).map(|m| m as usize))
                .transpose()?,
            show_progress,
        };
        let pretokenizer = resolve_pretokenizer(model, pretokenizer)?;
        if model != "bpe" && cfg.max_token_length.is_some() {
            return Err(PyValueError::new_err("max_token_length applies to model=\"bpe\" only"));
        }
        let normalizer = resolve_normalizer(normalizer)?;
        cfg.check().map_err(to_py_err)?;
        Ok(TrainSettings {
            cfg,
            pretokenizer,
            normalizer,
            word_level: model != "bpe",
        })
    }

    /// Trains on the counted words (no Python objects: run it with the GIL released).
    fn train(self, counts: &WordCounts) -> crate::Result<Tokenizer> {
        if self.word_level {
            Tokenizer::train_word_level(counts, &self.cfg, UNK_TOKEN, self.normalizer, self.pretokenizer)
        } else {
            Tokenizer::train(counts, &self.cfg, self.normalizer, self.pretokenizer)
        }
    }
}

/// The pre-tokenizer a model trains with: BPE takes a preset or `regex:<pattern>` (gpt2 by
/// default); the char and word baselines bring their own split.
fn resolve_pretokenizer(model: &str, pretokenizer: Option<&str>) -> PyResult<PreTokenizer> {
    match (model, pretokenizer) {
        ("bpe", p) => PreTokenizer::from_name(p.unwrap_or("gpt2")).map_err(to_py_err),
        ("char", None) => Ok(PreTokenizer::Chars),
        ("word", None) => Ok(PreTokenizer::Words),
        ("char" | "word", Some(_)) => Err(PyValueError::new_err(format!("model={model:?} has its own split; leave pretokenizer unset"))),
        (other, _) => Err(PyValueError::new_err(format!("unknown model {other:?} (choose \"bpe\", \"char\" or \"word\")"))),
    }
}

fn resolve_normalizer(name: Option<&str>) -> PyResult<Option<Normalizer>> {
    name.map(|name| {
        Normalizer::from_name(name)
            .ok_or_else(|| PyValueError::new_err(format!("unknown normalizer {name:?} (choose \"nfc\" or \"nfkc\")")))
    })
    .transpose()
}

/// The corpus as files: a path, or a list/tuple of paths; `None` for anything else (texts).
fn corpus_paths(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<PathBuf>>> {
    if let Some(p) = as_path(obj)? {
        return Ok(Some(vec![p]));
    }
    if !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()) {
        return Ok(None);
    }
    let mut paths = Vec::new();
    for item in obj.try_iter()? {
        match as_path(&item?)? {
            Some(p) => paths.push(p),
            None => return Err(PyTypeError::new_err("a list or tuple must hold file paths; pass texts as an iterator, e.g. iter(texts)")),
        }
    }
    Ok(Some(paths))
}

/// The total size of the corpus files, refusing missing files and directories up front. A
/// missing "file" given in a list gets a hint: a list of texts is the usual mistake.
fn corpus_bytes(paths: &[PathBuf], from_list: bool) -> PyResult<u64> {
    let mut total = 0u64;
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| {
            let err = to_py_err(Error::io(p, e));
            if from_list {
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
    Ok(total)
}

/// Counts the words of the files (line by line) with the GIL released.
fn count_files(py: Python<'_>, counts: &mut WordCounts, paths: &[PathBuf], total_bytes: u64, show_progress: bool) -> PyResult<()> {
    py.allow_threads(|| {
        let bar = file_progress(show_progress, total_bytes);
        for p in paths {
            counts.add_file(p, bar.as_ref())?;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok::<_, Error>(())
    })
    .map_err(to_py_err)
}

/// Counts the corpus: files (a path, or a list or tuple of paths) or an iterator of strings.
fn count_corpus(py: Python<'_>, counts: &mut WordCounts, corpus: &Bound<'_, PyAny>, show_progress: bool) -> PyResult<()> {
    match corpus_paths(corpus)? {
        Some(paths) => {
            let from_list = as_path(corpus)?.is_none();
            let total = corpus_bytes(&paths, from_list)?;
            count_files(py, counts, &paths, total, show_progress)
        }
        None => count_iterator(py, counts, corpus),
    }
}

/// Counts the words of an iterator's strings (one sequence each), pulling a batch with the GIL
/// held and counting it with the GIL released.
fn count_iterator(py: Python<'_>, counts: &mut WordCounts, corpus: &Bound<'_, PyAny>) -> PyResult<()> {
    let iter = corpus
        .try_iter()
        .map_err(|_| PyTypeError::new_err("files_or_iterator must be a path, a list of paths, or an iterator of strings"))?;
    let mut batch: Vec<PyBackedStr> = Vec::new();
    let mut batch_bytes = 0;
    for (index, item) in iter.enumerate() {
        let s = extract_text(&item?, || format!("item {index} of the iterator"))?;
        batch_bytes += s.len();
        batch.push(s);
        if batch_bytes >= BATCH_BYTES {
            py.allow_threads(|| counts.add_sequences(&batch));
            batch.clear();
            batch_bytes = 0;
        }
    }
    py.allow_threads(|| counts.add_sequences(&batch));
    Ok(())
}

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
    #[pyo3(signature = (files_or_iterator, vocab_size, *, min_frequency=None, special_tokens=None,
                        pretokenizer=None, normalizer=None, max_token_length=None, show_progress=true, model="bpe"))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        files_or_iterator: &Bound<'_, PyAny>,
        vocab_size: &Bound<'_, PyAny>,
        min_frequency: Option<&Bound<'_, PyAny>>,
        special_tokens: Option<Vec<String>>,
        pretokenizer: Option<&str>,
        normalizer: Option<&str>,
        max_token_length: Option<&Bound<'_, PyAny>>,
        show_progress: bool,
        model: &str,
    ) -> PyResult<Self> {
        let settings = TrainSettings::from_args(vocab_size, min_frequency, special_tokens, pretokenizer, normalizer, max_token_length, show_progress, model)?;
        let mut counts = WordCounts::new(settings.pretokenizer.clone(), settings.normalizer);
        count_corpus(py, &mut counts, files_or_iterator, show_progress)?;
        let inner = py.allow_threads(|| settings.train(&counts)).map_err(to_py_err)?;
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
        separator: Option<&Bound<'py, PyAny>>,
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
        let separator = separator.map(|sep| self.single_id("separator", sep)).transpose()?;
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

    /// The token of `id`, or None for any integer outside the vocabulary (as HF's `id_to_token`).
    fn id_to_token(&self, id: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        Ok(match int_value(id, || "id".to_string())? {
            PyIntValue::Fits(id) => u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id)).map(str::to_string),
            PyIntValue::Negative(_) | PyIntValue::Huge(_) => None,
        })
    }

    /// The bytes one token stands for.
    fn token_bytes<'py>(&self, py: Python<'py>, id: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let id = self.single_id("token", id)?;
        Ok(PyBytes::new(py, self.inner.vocab.token_bytes(id).expect("the id was checked")))
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

    /// The pre-tokenizer: a preset name (`gpt2`, `cl100k`, `ja`, ...) or `regex:<pattern>`.
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

impl PyTokenizer {
    /// One id argument (`what` names it), refused unless it is in the vocabulary.
    fn single_id(&self, what: &str, obj: &Bound<'_, PyAny>) -> PyResult<u32> {
        let vocab_size = self.inner.vocab_size();
        let text = match int_value(obj, || format!("{what} id"))? {
            PyIntValue::Fits(id) if id < vocab_size as u64 => return Ok(id as u32),
            PyIntValue::Fits(id) => id.to_string(),
            PyIntValue::Negative(t) | PyIntValue::Huge(t) => t,
        };
        Err(PyValueError::new_err(format!("{what} id {text} is out of range (vocabulary size {vocab_size})")))
    }
}

/// Checks a BPE pre-tokenizer setting without training: returns its canonical name (a preset,
/// or `regex:<pattern>`), or raises ValueError (unknown preset, with the likely one; bad regex).
#[pyfunction]
fn validate_pretokenizer(name: &str) -> PyResult<String> {
    PreTokenizer::from_name(name).map(|p| p.name()).map_err(to_py_err)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add_function(wrap_pyfunction!(validate_pretokenizer, m)?)?;
    m.add("REGEX_PREFIX", crate::pretokenize::REGEX_PREFIX)?;
    m.add("PRESETS", crate::pretokenize::PRESETS.to_vec())?;
    m.add("GPT2_PATTERN", crate::pretokenize::GPT2_PATTERN)?;
    Ok(())
}
