//! The tokenizer: normalizer -> pre-tokenizer -> BPE model -> byte-level decoder, plus added
//! (special) tokens matched in the raw text first, as HF's `AddedVocabulary` does.

use crate::encode::{encode_piece, Scratch};
use crate::error::{Error, Result};
use crate::normalize::{normalize_opt, Normalizer};
use crate::pretokenize::PreTokenizer;
use crate::train::{train_bpe, train_word_level, TrainConfig, TrainedBpe};
use crate::word_counts::WordCounts;
use crate::vocab::{AddedToken, Vocab};
use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use std::cell::RefCell;

/// How ids become text. Byte-level BPE and the char model concatenate token bytes; the word model
/// joins words with spaces the way the seeds' SimpleTokenizerV2 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    ByteLevel,
    Fuse,
    WordJoin,
}

/// Which special tokens `encode` turns into their ids; the others are encoded as plain text.
#[derive(Debug, Clone)]
pub enum AllowedSpecial {
    All,
    None,
    Only(FxHashSet<String>),
}

#[derive(Clone)]
pub struct Tokenizer {
    pub vocab: Vocab,
    added: Vec<AddedToken>,
    pub normalizer: Option<Normalizer>,
    pub pretokenizer: PreTokenizer,
    pub decoder: Decoder,
    /// Added tokens matched in the raw text: (all of them, only the non-special ones).
    raw_matchers: (Option<Matcher>, Option<Matcher>),
    /// Added tokens with `normalized: true`, matched in the normalized text (only with a normalizer).
    normalized_matchers: (Option<Matcher>, Option<Matcher>),
}

/// Leftmost-longest matching of added tokens (as HF's AddedVocabulary), with each pattern's id.
#[derive(Clone)]
struct Matcher {
    automaton: AhoCorasick,
    ids: Vec<u32>,
}

fn matcher<'a>(tokens: impl Iterator<Item = &'a AddedToken>, normalizer: Option<Normalizer>) -> Option<Matcher> {
    let (patterns, ids): (Vec<String>, Vec<u32>) = tokens
        .map(|t| (normalize_opt(normalizer, &t.content).into_owned(), t.id))
        .filter(|(c, _)| !c.is_empty())
        .unzip();
    if patterns.is_empty() {
        return None;
    }
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns)
        .expect("added tokens form a valid automaton");
    Some(Matcher { automaton, ids })
}

/// Matchers for (all tokens, non-special tokens) among those `select` keeps.
fn matcher_pair(added: &[AddedToken], normalizer: Option<Normalizer>, select: impl Fn(&AddedToken) -> bool) -> (Option<Matcher>, Option<Matcher>) {
    (
        matcher(added.iter().filter(|t| select(t)), normalizer),
        matcher(added.iter().filter(|t| select(t) && !t.special), normalizer),
    )
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Tokenizer {
    pub fn new(vocab: Vocab, added: Vec<AddedToken>, normalizer: Option<Normalizer>, pretokenizer: PreTokenizer) -> Self {
        // HF: tokens marked `normalized` are found in the normalized text, the others in the raw
        // text; without a normalizer the two are the same text.
        let in_normalized = |t: &AddedToken| t.normalized && normalizer.is_some();
        let raw_matchers = matcher_pair(&added, None, |t| !in_normalized(t));
        let normalized_matchers = matcher_pair(&added, normalizer, in_normalized);
        let decoder = match (&pretokenizer, vocab.word_level) {
            (PreTokenizer::Words, true) => Decoder::WordJoin,
            (_, true) => Decoder::Fuse,
            _ => Decoder::ByteLevel,
        };
        Tokenizer {
            vocab,
            added,
            normalizer,
            pretokenizer,
            decoder,
            raw_matchers,
            normalized_matchers,
        }
    }

    /// Builds a tokenizer from a training run's output.
    pub fn from_trained(t: TrainedBpe, normalizer: Option<Normalizer>, pretokenizer: PreTokenizer) -> Result<Self> {
        let added: Vec<AddedToken> = t
            .special_tokens
            .iter()
            .map(|s| AddedToken {
                id: t.tokens.iter().position(|x| x == s).expect("specials are in the vocab") as u32,
                content: s.clone(),
                special: true,
                normalized: false,
            })
            .collect();
        let merges: Vec<(String, String)> = t
            .merges
            .iter()
            .map(|&(a, b)| (t.tokens[a as usize].clone(), t.tokens[b as usize].clone()))
            .collect();
        let model: Vec<(u32, String)> = t.tokens.into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
        let vocab = Vocab::new("trained tokenizer", model, &added, &merges, None, false)?;
        Ok(Tokenizer::new(vocab, added, normalizer, pretokenizer))
    }

    pub fn train(counts: &WordCounts, cfg: &TrainConfig, normalizer: Option<Normalizer>, pretokenizer: PreTokenizer) -> Result<Self> {
        let trained = train_bpe(counts, cfg)?;
        Tokenizer::from_trained(trained, normalizer, pretokenizer)
    }

    /// The baseline models: the most frequent pieces of `counts` (chars or words) as a WordLevel
    /// vocabulary, special tokens first, then `unk`.
    pub fn train_word_level(counts: &WordCounts, cfg: &TrainConfig, unk: &str, normalizer: Option<Normalizer>, pretokenizer: PreTokenizer) -> Result<Self> {
        let tokens = train_word_level(counts, cfg, unk)?;
        let added: Vec<AddedToken> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| cfg.special_tokens.contains(t) || t.as_str() == unk)
            .map(|(id, t)| AddedToken { id: id as u32, content: t.clone(), special: true, normalized: false })
            .collect();
        let model = tokens.into_iter().enumerate().map(|(i, t)| (i as u32, t)).collect();
        let vocab = Vocab::new_word_level("trained tokenizer", model, &added, unk)?;
        Ok(Tokenizer::new(vocab, added, normalizer, pretokenizer))
    }

    /// "bpe", "char" or "word".
    pub fn model_name(&self) -> &'static str {
        match self.decoder {
            Decoder::ByteLevel => "bpe",
            Decoder::Fuse => "char",
            Decoder::WordJoin => "word",
        }
    }

    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    pub fn special_tokens(&self) -> impl Iterator<Item = &AddedToken> {
        self.added.iter().filter(|t| t.special)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.token(id)
    }

    /// Encodes text with no added-token handling: normalize, split, merge.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let normalized = normalize_opt(self.normalizer, text);
        self.encode_normalized_into(&normalized, out, scratch);
    }

    /// Pre-tokenizes and merges text that is already normalized.
    fn encode_normalized_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let prefixed;
        let mut text: &str = text;
        if self.pretokenizer.add_prefix_space() && !text.is_empty() && !text.starts_with(' ') {
            prefixed = format!(" {text}");
            text = &prefixed;
        }
        if self.vocab.word_level {
            let unk = self.vocab.unk_id.expect("word-level vocabularies have an unknown token");
            self.pretokenizer
                .for_each_piece(text, |piece| out.push(self.vocab.id(piece).unwrap_or(unk)));
        } else {
            self.pretokenizer
                .for_each_piece(text, |piece| encode_piece(&self.vocab, piece.as_bytes(), out, scratch));
        }
    }

    /// Splits `text` around the matches of `matcher`: gaps go to `gap`, matches become their ids.
    fn split_added(text: &str, matcher: Option<&Matcher>, out: &mut Vec<u32>, mut gap: impl FnMut(&str, &mut Vec<u32>)) {
        let Some(m) = matcher else {
            return gap(text, out);
        };
        let mut last = 0;
        for hit in m.automaton.find_iter(text) {
            if hit.start() > last {
                gap(&text[last..hit.start()], out);
            }
            out.push(m.ids[hit.pattern().as_usize()]);
            last = hit.end();
        }
        if last < text.len() {
            gap(&text[last..], out);
        }
    }

    fn encode_into(&self, text: &str, allowed: &AllowedSpecial, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let custom;
        let (raw, normalized) = match allowed {
            AllowedSpecial::All => (self.raw_matchers.0.as_ref(), self.normalized_matchers.0.as_ref()),
            AllowedSpecial::None => (self.raw_matchers.1.as_ref(), self.normalized_matchers.1.as_ref()),
            AllowedSpecial::Only(set) => {
                let keep = |t: &AddedToken| !t.special || set.contains(&t.content);
                let in_normalized = |t: &AddedToken| t.normalized && self.normalizer.is_some();
                custom = (
                    matcher(self.added.iter().filter(|t| keep(t) && !in_normalized(t)), None),
                    matcher(self.added.iter().filter(|t| keep(t) && in_normalized(t)), self.normalizer),
                );
                (custom.0.as_ref(), custom.1.as_ref())
            }
        };
        Self::split_added(text, raw, out, |segment, out| {
            let normalized_segment = normalize_opt(self.normalizer, segment);
            Self::split_added(&normalized_segment, normalized, out, |piece, out| self.encode_normalized_into(piece, out, scratch));
        });
    }

    pub fn encode(&self, text: &str, allowed: &AllowedSpecial) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        SCRATCH.with(|s| self.encode_into(text, allowed, &mut out, &mut s.borrow_mut()));
        out
    }

    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        SCRATCH.with(|s| self.encode_ordinary_into(text, &mut out, &mut s.borrow_mut()));
        out
    }

    /// Encodes many texts in parallel; the result is the same as encoding each in turn.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S], allowed: &AllowedSpecial) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .with_min_len(8)
            .map(|t| self.encode(t.as_ref(), allowed))
            .collect()
    }

    /// Encodes documents in parallel into one flat buffer of little-endian ids (`width` 2 or 4
    /// bytes), each document followed by `separator` when given. Returns the buffer and the token
    /// count of each document (separator included).
    pub fn encode_batch_flat<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &AllowedSpecial,
        separator: Option<u32>,
        width: usize,
    ) -> (Vec<u8>, Vec<u64>) {
        let encoded: Vec<Vec<u32>> = texts
            .par_iter()
            .with_min_len(4)
            .map(|t| {
                let mut ids = self.encode(t.as_ref(), allowed);
                ids.extend(separator);
                ids
            })
            .collect();
        let lengths: Vec<u64> = encoded.iter().map(|ids| ids.len() as u64).collect();
        let total: usize = encoded.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(total * width);
        for ids in &encoded {
            match width {
                2 => ids.iter().for_each(|&id| out.extend_from_slice(&(id as u16).to_le_bytes())),
                _ => ids.iter().for_each(|&id| out.extend_from_slice(&id.to_le_bytes())),
            }
        }
        (out, lengths)
    }

    /// The exact bytes the ids stand for (for the word model: words joined as SimpleTokenizerV2 does).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (position, &id) in ids.iter().enumerate() {
            match self.vocab.token_bytes(id) {
                Some(b) => {
                    // No space before , . ? ! " ( ) ' (the seeds' `re.sub(r'\s+([,.?!"()\'])', r'\1', ...)`).
                    if self.decoder == Decoder::WordJoin
                        && position > 0
                        && !matches!(b.first(), Some(b',' | b'.' | b'?' | b'!' | b'"' | b'(' | b')' | b'\''))
                    {
                        out.push(b' ');
                    }
                    out.extend_from_slice(b)
                }
                None => return Err(Error::id_out_of_range(id, position, self.vocab.len())),
            }
        }
        Ok(out)
    }

    /// Decodes to text; byte sequences that are not valid UTF-8 become U+FFFD (as HF and tiktoken).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}
