//! The tokenizer: normalizer -> pre-tokenizer -> BPE model -> byte-level decoder, plus added
//! (special) tokens matched in the raw text first, as HF's `AddedVocabulary` does.

use crate::encode::{encode_piece, Scratch};
use crate::error::{Error, Result};
use crate::normalize::{normalize_opt, Normalizer};
use crate::pretokenize::PreTokenizer;
use crate::train::{train_bpe, train_word_level, TrainConfig, TrainedBpe, WordCounts};
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
    /// Matches every added token (leftmost-longest, like HF).
    all_matcher: Option<AhoCorasick>,
    /// Matches only the non-special added tokens (used when specials are not allowed).
    plain_matcher: Option<AhoCorasick>,
}

fn matcher<'a>(tokens: impl Iterator<Item = &'a AddedToken>) -> Option<AhoCorasick> {
    let patterns: Vec<&str> = tokens.map(|t| t.content.as_str()).filter(|c| !c.is_empty()).collect();
    if patterns.is_empty() {
        return None;
    }
    Some(
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("added tokens form a valid automaton"),
    )
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Tokenizer {
    pub fn new(vocab: Vocab, added: Vec<AddedToken>, normalizer: Option<Normalizer>, pretokenizer: PreTokenizer) -> Self {
        let all_matcher = matcher(added.iter());
        let plain_matcher = matcher(added.iter().filter(|t| !t.special));
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
            all_matcher,
            plain_matcher,
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
        let prefixed;
        let mut text: &str = &normalized;
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

    fn encode_into(&self, text: &str, allowed: &AllowedSpecial, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let custom;
        let matcher = match allowed {
            AllowedSpecial::All => self.all_matcher.as_ref(),
            AllowedSpecial::None => self.plain_matcher.as_ref(),
            AllowedSpecial::Only(set) => {
                custom = matcher(self.added.iter().filter(|t| !t.special || set.contains(&t.content)));
                custom.as_ref()
            }
        };
        let Some(matcher) = matcher else {
            return self.encode_ordinary_into(text, out, scratch);
        };
        let mut last = 0;
        for m in matcher.find_iter(text) {
            if m.start() > last {
                self.encode_ordinary_into(&text[last..m.start()], out, scratch);
            }
            let content = &text[m.start()..m.end()];
            out.push(self.vocab.id(content).expect("added token is in the vocab"));
            last = m.end();
        }
        if last < text.len() {
            self.encode_ordinary_into(&text[last..], out, scratch);
        }
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
                None => {
                    return Err(Error::IdOutOfRange {
                        id: id as u64,
                        position,
                        vocab_size: self.vocab.len(),
                    })
                }
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
