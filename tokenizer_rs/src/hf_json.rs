//! Hugging Face `tokenizer.json` in both directions, and OpenAI's GPT-2 `encoder.json` + `vocab.bpe`.
//!
//! What we write loads in `tokenizers` and `transformers` and gives the same ids; what we read is
//! any byte-level BPE tokenizer.json (both merge formats). Anything we cannot reproduce exactly is
//! refused with the JSON path of the offending field rather than silently encoded differently.

use crate::error::{Error, Result};
use crate::normalize::Normalizer;
use crate::pretokenize::{PreTokenizer, CHARS_PATTERN, WORDS_PUNCT, WORDS_SPACE};
use crate::tokenizer::{Decoder, Tokenizer};
use crate::vocab::{AddedToken, Vocab};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::path::Path;

/// The largest tokenizer.json (or GPT-2 file) we read. Published ones are a few MB (GPT-2: 1.4 MB)
/// to a few tens of MB for 250k-token vocabularies; the parsed tree takes several times the file,
/// so a larger file is refused before it is read rather than risk exhausting memory.
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 256 << 20;

/// Ids are u32 with u32::MAX reserved (`vocab::NO_ID`), so this is the largest id a file may give.
const MAX_ID: u64 = u32::MAX as u64 - 1;

fn too_large(source: &str, bytes: u64) -> Error {
    Error::format(
        source,
        "(root)",
        format!("{bytes} bytes is over the {} MiB limit for a tokenizer file", MAX_TOKENIZER_FILE_BYTES >> 20),
    )
}

fn byte_level_json(add_prefix_space: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": use_regex})
}

fn split_json(pattern: &str, behavior: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": false})
}

pub fn pretokenizer_to_json(p: &PreTokenizer) -> Value {
    match p {
        PreTokenizer::Chars => split_json(CHARS_PATTERN, "Isolated"),
        PreTokenizer::Words => json!({
            "type": "Sequence",
            "pretokenizers": [split_json(WORDS_SPACE, "Removed"), split_json(WORDS_PUNCT, "Isolated")]
        }),
        PreTokenizer::Gpt2 { add_prefix_space } => byte_level_json(*add_prefix_space, true),
        PreTokenizer::Whole { add_prefix_space } => byte_level_json(*add_prefix_space, false),
        PreTokenizer::Ja { max_digits } => regex_split_json(&crate::pretokenize::ja_pattern(*max_digits)),
        PreTokenizer::Regex { pattern, .. } => regex_split_json(pattern),
    }
}

fn regex_split_json(pattern: &str) -> Value {
    json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                byte_level_json(false, false),
            ]
    })
}

fn added_tokens_json(tok: &Tokenizer) -> Vec<Value> {
    tok.added_tokens()
        .iter()
        .map(|t| {
            json!({"id": t.id, "content": t.content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": t.normalized, "special": t.special})
        })
        .collect()
}

/// `model` and `decoder`: a byte-level BPE, or a WordLevel model (the char and word baselines).
fn model_and_decoder_json(tok: &Tokenizer) -> (Value, Value) {
    let v = &tok.vocab;
    let mut vocab = Map::with_capacity(v.len());
    for (id, t) in v.tokens().iter().enumerate() {
        if v.in_model(id as u32) {
            vocab.insert(t.clone(), json!(id));
        }
    }
    let unk = v.unk_id.map(|id| v.token(id).unwrap().to_string());
    if v.word_level {
        let decoder = match tok.decoder {
            Decoder::Fuse => json!({"type": "Fuse"}),
            // HF joins WordLevel tokens with spaces by default; it has no decoder for the seeds'
            // "no space before punctuation" rule, so decoded text may differ there (ids do not).
            _ => Value::Null,
        };
        return (json!({"type": "WordLevel", "vocab": vocab, "unk_token": unk}), decoder);
    }
    let merges: Vec<Value> = v
        .merges()
        .iter()
        .map(|&(a, b)| json!([v.token(a).unwrap(), v.token(b).unwrap()]))
        .collect();
    let model = json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": false,
        "byte_fallback": false,
        "ignore_merges": v.ignore_merges,
        "vocab": vocab,
        "merges": merges,
    });
    (model, byte_level_json(true, true))
}

pub fn to_json(tok: &Tokenizer) -> Value {
    let normalizer = match tok.normalizer {
        None => Value::Null,
        Some(n) => json!({"type": n.hf_type()}),
    };
    let (model, decoder) = model_and_decoder_json(tok);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens_json(tok),
        "normalizer": normalizer,
        "pre_tokenizer": pretokenizer_to_json(&tok.pretokenizer),
        "post_processor": null,
        "decoder": decoder,
        "model": model,
    })
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

pub fn save(tok: &Tokenizer, path: &Path, pretty: bool) -> Result<()> {
    let value = to_json(tok);
    let bytes = if pretty {
        serde_json::to_vec_pretty(&value)
    } else {
        serde_json::to_vec(&value)
    }
    .expect("a JSON value serializes");
    write_atomic(path, &bytes)
}

/// Reading helpers that name the field at fault.
struct Reader<'a> {
    source: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, field: &str, message: impl Into<String>) -> Error {
        Error::format(self.source, field, message)
    }

    fn bool_field(&self, obj: &Value, field: &str, key: &str, default: bool) -> Result<bool> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(&format!("{field}.{key}"), format!("expected true/false, found {other}"))),
        }
    }

    /// A token id: an integer from 0 to [`MAX_ID`].
    fn id(&self, v: &Value, field: &str) -> Result<u32> {
        match v.as_u64() {
            Some(id) if id <= MAX_ID => Ok(id as u32),
            _ => Err(self.err(field, format!("expected an integer id from 0 to {MAX_ID}, found {v}"))),
        }
    }

    fn type_of<'v>(&self, obj: &'v Value, field: &str) -> Result<&'v str> {
        obj.get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(&format!("{field}.type"), "missing"))
    }

    fn normalizer(&self, v: &Value, field: &str) -> Result<Option<Normalizer>> {
        if v.is_null() {
            return Ok(None);
        }
        match self.type_of(v, field)? {
            "NFC" => Ok(Some(Normalizer::Nfc)),
            "NFKC" => Ok(Some(Normalizer::Nfkc)),
            "Sequence" => {
                let items = v.get("normalizers").and_then(Value::as_array).ok_or_else(|| {
                    self.err(&format!("{field}.normalizers"), "expected a list")
                })?;
                match items.as_slice() {
                    [] => Ok(None),
                    [one] => self.normalizer(one, &format!("{field}.normalizers[0]")),
                    _ => Err(self.err(&format!("{field}.normalizers"), "only a single NFC or NFKC normalizer is supported")),
                }
            }
            other => Err(self.err(&format!("{field}.type"), format!("normalizer {other:?} is not supported (supported: NFC, NFKC)"))),
        }
    }

    fn pretokenizer(&self, v: &Value, field: &str) -> Result<PreTokenizer> {
        if v.is_null() {
            return Err(self.err(field, "a byte-level BPE needs a ByteLevel pre-tokenizer; found none"));
        }
        match self.type_of(v, field)? {
            "ByteLevel" => {
                let add_prefix_space = self.bool_field(v, field, "add_prefix_space", true)?;
                Ok(if self.bool_field(v, field, "use_regex", true)? {
                    PreTokenizer::Gpt2 { add_prefix_space }
                } else {
                    PreTokenizer::Whole { add_prefix_space }
                })
            }
            "Sequence" => {
                let list_field = format!("{field}.pretokenizers");
                let items = v
                    .get("pretokenizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.err(&list_field, "expected a list"))?;
                match items.as_slice() {
                    [one] => self.pretokenizer(one, &format!("{list_field}[0]")),
                    [split, byte_level] => {
                        let bl_field = format!("{list_field}[1]");
                        if self.type_of(byte_level, &bl_field)? != "ByteLevel"
                            || self.bool_field(byte_level, &bl_field, "use_regex", true)?
                            || self.bool_field(byte_level, &bl_field, "add_prefix_space", true)?
                        {
                            return Err(self.err(&bl_field, "expected ByteLevel(add_prefix_space=false, use_regex=false) after a Split"));
                        }
                        self.split(split, &format!("{list_field}[0]"))
                    }
                    _ => Err(self.err(&list_field, "supported: [Split, ByteLevel] or [ByteLevel]")),
                }
            }
            other => Err(self.err(&format!("{field}.type"), format!("pre-tokenizer {other:?} is not supported (supported: ByteLevel, Sequence[Split, ByteLevel])"))),
        }
    }

    fn split(&self, v: &Value, field: &str) -> Result<PreTokenizer> {
        if self.type_of(v, field)? != "Split" {
            return Err(self.err(&format!("{field}.type"), "expected Split"));
        }
        let behavior = v.get("behavior").and_then(Value::as_str).unwrap_or("");
        if behavior != "Isolated" {
            return Err(self.err(&format!("{field}.behavior"), format!("{behavior:?} is not supported (supported: Isolated)")));
        }
        if self.bool_field(v, field, "invert", false)? {
            return Err(self.err(&format!("{field}.invert"), "invert=true is not supported"));
        }
        let pattern = v.get("pattern");
        let regex = match (pattern.and_then(|p| p.get("Regex")), pattern.and_then(|p| p.get("String"))) {
            (Some(Value::String(r)), _) => r.clone(),
            (_, Some(Value::String(s))) => fancy_regex::escape(s).into_owned(),
            _ => return Err(self.err(&format!("{field}.pattern"), "expected {\"Regex\": ...} or {\"String\": ...}")),
        };
        PreTokenizer::from_pattern(&regex).map_err(|e| self.err(&format!("{field}.pattern"), e.to_string()))
    }

    fn decoder(&self, v: &Value) -> Result<()> {
        if v.is_null() {
            return Ok(());
        }
        match self.type_of(v, "decoder")? {
            "ByteLevel" | "Fuse" => Ok(()),
            other => Err(self.err("decoder.type", format!("decoder {other:?} is not supported (supported: ByteLevel, Fuse)"))),
        }
    }

    /// The splits our char and word models write; nothing else goes with a WordLevel model.
    fn word_level_pretokenizer(&self, v: &Value) -> Result<PreTokenizer> {
        let chars = split_json(CHARS_PATTERN, "Isolated");
        let words = pretokenizer_to_json(&PreTokenizer::Words);
        if *v == chars {
            Ok(PreTokenizer::Chars)
        } else if *v == words {
            Ok(PreTokenizer::Words)
        } else {
            Err(self.err("pre_tokenizer", "a WordLevel model is supported with hataori's char or word split only"))
        }
    }

    /// `model.vocab` as (id, token) pairs.
    fn model_vocab(&self, m: &Value) -> Result<Vec<(u32, String)>> {
        let vocab_obj = m
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| self.err("model.vocab", "expected an object of token -> id"))?;
        vocab_obj
            .iter()
            .map(|(tok, id)| {
                self.id(id, &format!("model.vocab[{tok:?}]"))
                    .map(|id| (id, tok.clone()))
            })
            .collect()
    }

    fn word_level_model(&self, m: &Value, added: &[AddedToken]) -> Result<Vocab> {
        let tokens = self.model_vocab(m)?;
        let unk = m
            .get("unk_token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err("model.unk_token", "a WordLevel model needs an unknown token"))?;
        Vocab::new_word_level(self.source, tokens, added, unk)
    }

    fn added_tokens(&self, v: Option<&Value>) -> Result<Vec<AddedToken>> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        let items = v.as_array().ok_or_else(|| self.err("added_tokens", "expected a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let field = format!("added_tokens[{i}]");
                let id = self.id(t.get("id").unwrap_or(&Value::Null), &format!("{field}.id"))?;
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.err(&format!("{field}.content"), "expected a string"))?;
                for key in ["lstrip", "rstrip", "single_word"] {
                    if self.bool_field(t, &field, key, false)? {
                        return Err(self.err(&format!("{field}.{key}"), "true is not supported"));
                    }
                }
                Ok(AddedToken {
                    id,
                    content: content.to_string(),
                    special: self.bool_field(t, &field, "special", false)?,
                    normalized: self.bool_field(t, &field, "normalized", false)?,
                })
            })
            .collect()
    }

    fn merges(&self, v: &Value) -> Result<Vec<(String, String)>> {
        let items = v.as_array().ok_or_else(|| self.err("model.merges", "expected a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Value::String(s) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                        _ => Err(self.err(&format!("model.merges[{i}]"), format!("{s:?} is not two tokens separated by one space"))),
                    }
                }
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
                    _ => Err(self.err(&format!("model.merges[{i}]"), "expected a pair of strings")),
                },
                _ => Err(self.err(&format!("model.merges[{i}]"), "expected \"a b\" or [\"a\", \"b\"]")),
            })
            .collect()
    }

    fn model(&self, m: &Value, added: &[AddedToken]) -> Result<Vocab> {
        if let Some(t) = m.get("type").and_then(Value::as_str) {
            if t != "BPE" {
                return Err(self.err("model.type", format!("model {t:?} is not supported (supported: BPE, WordLevel)")));
            }
        }
        if m.get("dropout").is_some_and(|d| !d.is_null()) {
            return Err(self.err("model.dropout", "BPE dropout is not supported"));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if m.get(key).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                return Err(self.err(&format!("model.{key}"), "not supported for byte-level BPE"));
            }
        }
        if self.bool_field(m, "model", "byte_fallback", false)? {
            return Err(self.err("model.byte_fallback", "byte_fallback is not supported (byte-level BPE needs none)"));
        }
        let tokens = self.model_vocab(m)?;
        let merges = self.merges(m.get("merges").ok_or_else(|| self.err("model.merges", "missing"))?)?;
        let unk = m.get("unk_token").and_then(Value::as_str);
        let ignore_merges = self.bool_field(m, "model", "ignore_merges", false)?;
        Vocab::new(self.source, tokens, added, &merges, unk, ignore_merges)
    }
}

pub fn from_json_str(text: &str, source: &str) -> Result<Tokenizer> {
    if text.len() as u64 > MAX_TOKENIZER_FILE_BYTES {
        return Err(too_large(source, text.len() as u64));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::format(source, format!("line {} column {}", e.line(), e.column()), format!("invalid JSON: {e}")))?;
    let r = Reader { source };
    if !value.is_object() {
        return Err(r.err("(root)", "expected a JSON object"));
    }
    let model = value.get("model").ok_or_else(|| r.err("model", "missing"))?;
    let added = r.added_tokens(value.get("added_tokens"))?;
    let normalizer = r.normalizer(value.get("normalizer").unwrap_or(&Value::Null), "normalizer")?;
    let pre_tokenizer = value.get("pre_tokenizer").unwrap_or(&Value::Null);
    r.decoder(value.get("decoder").unwrap_or(&Value::Null))?;
    if model.get("type").and_then(Value::as_str) == Some("WordLevel") {
        let pretokenizer = r.word_level_pretokenizer(pre_tokenizer)?;
        let vocab = r.word_level_model(model, &added)?;
        return Ok(Tokenizer::new(vocab, added, normalizer, pretokenizer));
    }
    let pretokenizer = r.pretokenizer(pre_tokenizer, "pre_tokenizer")?;
    let vocab = r.model(model, &added)?;
    Ok(Tokenizer::new(vocab, added, normalizer, pretokenizer))
}

/// The file's text, refused before reading when it is over [`MAX_TOKENIZER_FILE_BYTES`] (and,
/// for a file that grows or a device that reports no size, as soon as reading passes the limit).
fn read_text(path: &Path) -> Result<String> {
    let io = |e| Error::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_TOKENIZER_FILE_BYTES {
        return Err(too_large(&path.display().to_string(), size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_TOKENIZER_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_TOKENIZER_FILE_BYTES {
        return Err(too_large(&path.display().to_string(), bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to() as u64,
    })
}

pub fn from_file(path: &Path) -> Result<Tokenizer> {
    from_json_str(&read_text(path)?, &path.display().to_string())
}

/// OpenAI's GPT-2 files: `encoder.json` (token -> id) and `vocab.bpe` (merges, one per line).
pub fn from_gpt2_files(encoder_json: &Path, vocab_bpe: &Path) -> Result<Tokenizer> {
    let enc_source = encoder_json.display().to_string();
    let bpe_source = vocab_bpe.display().to_string();
    let encoder: Value = serde_json::from_str(&read_text(encoder_json)?)
        .map_err(|e| Error::format(&enc_source, format!("line {} column {}", e.line(), e.column()), format!("invalid JSON: {e}")))?;
    let encoder = encoder
        .as_object()
        .ok_or_else(|| Error::format(&enc_source, "(root)", "expected an object of token -> id"))?;
    let r = Reader { source: &enc_source };
    let tokens = encoder
        .iter()
        .map(|(t, id)| r.id(id, &format!("[{t:?}]")).map(|id| (id, t.clone())))
        .collect::<Result<Vec<_>>>()?;
    let text = read_text(vocab_bpe)?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        match line.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => merges.push((a.to_string(), b.to_string())),
            _ => return Err(Error::format(&bpe_source, format!("line {}", i + 1), format!("{line:?} is not two tokens separated by one space"))),
        }
    }
    let added: Vec<AddedToken> = tokens
        .iter()
        .filter(|(_, t)| t == "<|endoftext|>")
        .map(|(id, t)| AddedToken {
            id: *id,
            content: t.clone(),
            special: true,
            normalized: false,
        })
        .collect();
    let vocab = Vocab::new(&bpe_source, tokens, &added, &merges, None, false)?;
    Ok(Tokenizer::new(vocab, added, None, PreTokenizer::Gpt2 { add_prefix_space: false }))
}
