//! BPE training with exactly the results of HF `tokenizers`' `BpeTrainer` (same vocabulary ids, same
//! merges in the same order), but with u64 counts, no negative counts, and faster data structures.
//!
//! The merge loop mirrors HF's structure on purpose: a max-heap of (count, pair) entries that each
//! carry the set of words to update, lazily re-queued when their count is stale. Where a merge
//! produces a string that is already in the vocabulary, this structure decides which words see the
//! merge; replicating it is what makes the parity exact rather than "usually equal".

use crate::bytelevel;
use crate::error::{Error, Result};
use crate::progress::progress_bar;
use crate::vocab::Pair;
use crate::word_counts::WordCounts;
use indicatif::ProgressBar;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub vocab_size: usize,
    pub min_frequency: u64,
    pub special_tokens: Vec<String>,
    /// Longest token, in characters; `None` for no limit.
    pub max_token_length: Option<usize>,
    pub show_progress: bool,
}

/// A heap entry: HF's `Merge`. Highest count first; on ties the smaller pair.
struct QueueEntry {
    count: u64,
    pair: Pair,
    words: Vec<u32>,
}

impl PartialEq for QueueEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for QueueEntry {}
impl PartialOrd for QueueEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QueueEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.pair.cmp(&self.pair))
            // Only reachable for one pair queued twice; any fixed order keeps runs reproducible.
            .then_with(|| other.words.cmp(&self.words))
    }
}

/// The outcome of training: HF token strings by id, and merges (as id pairs) in creation order.
pub struct TrainedBpe {
    pub tokens: Vec<String>,
    pub merges: Vec<Pair>,
    pub special_tokens: Vec<String>,
}

/// Character length bookkeeping for `max_token_length`: the number of characters a token touches,
/// and whether it begins inside a character (so joining it to its left neighbour shares one).
#[derive(Clone, Copy)]
struct CharLen {
    chars: u32,
    starts_mid_char: bool,
}

fn char_len(bytes: &[u8]) -> CharLen {
    let is_cont = |b: u8| (b & 0xC0) == 0x80;
    let lead = bytes.iter().filter(|&&b| !is_cont(b)).count() as u32;
    let starts_mid_char = bytes.first().is_some_and(|&b| is_cont(b));
    CharLen {
        chars: lead + starts_mid_char as u32,
        starts_mid_char,
    }
}

fn joined_len(a: CharLen, b: CharLen) -> u32 {
    a.chars + b.chars - b.starts_mid_char as u32
}

/// Whether joining tokens `x` and `y` stays within `limit` characters (always, without a limit).
/// `y` may be the id being created; its length is pushed before any word is updated.
fn within_limit(lens: &[CharLen], limit: Option<usize>, x: u32, y: u32) -> bool {
    match limit {
        None => true,
        Some(limit) => {
            let (lx, ly) = (lens[x as usize], lens.get(y as usize).copied());
            ly.is_some_and(|ly| joined_len(lx, ly) as usize <= limit)
        }
    }
}

/// Applies merge `(a, b) -> rep` to one word in place, returning the pair-count changes in HF's order.
fn merge_word(
    syms: &mut Vec<u32>,
    (a, b): Pair,
    rep: u32,
    allowed: &dyn Fn(u32, u32) -> bool,
    changes: &mut Vec<(Pair, i32)>,
) {
    let n = syms.len();
    let (mut read, mut write) = (0, 0);
    while read < n {
        if syms[read] == a && read + 1 < n && syms[read + 1] == b {
            if write > 0 {
                let before = syms[write - 1];
                changes.push(((before, a), -1));
                if allowed(before, rep) {
                    changes.push(((before, rep), 1));
                }
            }
            if read + 2 < n {
                let after = syms[read + 2];
                changes.push(((b, after), -1));
                if allowed(rep, after) {
                    changes.push(((rep, after), 1));
                }
            }
            syms[write] = rep;
            read += 2;
        } else {
            syms[write] = syms[read];
            read += 1;
        }
        write += 1;
    }
    syms.truncate(write);
}

/// Minimum number of words to update before a merge step goes parallel.
const PARALLEL_WORDS: usize = 512;

/// The largest vocabulary: ids are u32 (as in HF), so a larger request can never be filled.
pub const MAX_VOCAB_SIZE: usize = u32::MAX as usize;

/// The vocabulary's initial allocation; a larger `vocab_size` grows it only as merges are found,
/// so an absurd request costs nothing before the corpus runs out of pairs.
const INITIAL_VOCAB_CAPACITY: usize = 1 << 16;

impl TrainConfig {
    /// Refuses settings no training run can honour, before anything is allocated.
    pub fn check(&self) -> Result<()> {
        if self.vocab_size > MAX_VOCAB_SIZE {
            return Err(Error::Config(format!(
                "vocab_size {} is larger than the largest vocabulary ({MAX_VOCAB_SIZE}: ids are 32-bit)",
                self.vocab_size
            )));
        }
        if self.max_token_length == Some(0) {
            return Err(Error::Config("max_token_length must be at least 1 character".into()));
        }
        Ok(())
    }
}

/// The vocabulary while it grows: HF token strings by id, and each string's id.
struct TrainingVocab {
    tokens: Vec<String>,
    ids: FxHashMap<String, u32>,
}

impl TrainingVocab {
    fn with_capacity(capacity: usize) -> Self {
        TrainingVocab {
            tokens: Vec::with_capacity(capacity),
            ids: FxHashMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The id of `token`, adding it with the next id when it is new.
    fn add(&mut self, token: String) -> u32 {
        if let Some(id) = self.id(&token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.ids.insert(token.clone(), id);
        self.tokens.push(token);
        id
    }
}

/// HF `add_special_tokens`: specials take the first ids (a repeated one keeps its first id).
fn add_special_tokens(vocab: &mut TrainingVocab, special_tokens: &[String]) {
    for s in special_tokens {
        vocab.add(s.clone());
    }
}

/// HF `compute_alphabet` with `initial_alphabet=ByteLevel.alphabet()`: all 256 byte-level
/// characters in code-point order. Returns the id of each byte's character.
fn add_initial_alphabet(vocab: &mut TrainingVocab) -> Vec<u32> {
    for c in bytelevel::alphabet_sorted() {
        vocab.add(c.to_string());
    }
    (0u8..=255)
        .map(|b| vocab.id(&bytelevel::byte_to_char(b).to_string()).expect("the alphabet was just added"))
        .collect()
}

/// HF `tokenize_words`: each word as symbol ids (one per byte), in byte order so that runs are
/// reproducible, with the word counts.
fn tokenize_words(counts: &WordCounts, byte_ids: &[u32]) -> (Vec<Vec<u32>>, Vec<i64>) {
    let mut entries: Vec<(&[u8], u64)> = counts.counts.iter().map(|(k, v)| (&k[..], *v)).collect();
    entries.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
    let words: Vec<Vec<u32>> = entries
        .par_iter()
        .map(|(w, _)| w.iter().map(|&b| byte_ids[b as usize]).collect())
        .collect();
    let word_counts: Vec<i64> = entries.iter().map(|(_, c)| *c as i64).collect();
    (words, word_counts)
}

type PairMaps = (FxHashMap<Pair, i64>, FxHashMap<Pair, Vec<u32>>);

fn merge_maps((mut pc, mut wtu): PairMaps, (pc2, wtu2): PairMaps) -> PairMaps {
    for (k, v) in pc2 {
        *pc.entry(k).or_insert(0) += v;
    }
    for (k, v) in wtu2 {
        wtu.entry(k).or_default().extend(v);
    }
    (pc, wtu)
}

/// HF `count_pairs`: the count of every adjacent pair and, per pair, the words that hold it.
fn count_pairs(words: &[Vec<u32>], word_counts: &[i64]) -> PairMaps {
    words
        .par_iter()
        .enumerate()
        .fold(
            || (FxHashMap::<Pair, i64>::default(), FxHashMap::<Pair, Vec<u32>>::default()),
            |(mut pc, mut wtu), (i, w)| {
                for win in w.windows(2) {
                    let pair = (win[0], win[1]);
                    *pc.entry(pair).or_insert(0) += word_counts[i];
                    let list = wtu.entry(pair).or_default();
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
                (pc, wtu)
            },
        )
        .reduce(
            || (FxHashMap::default(), FxHashMap::default()),
            |(pc, wtu), (pc2, wtu2)| {
                if pc.len() < pc2.len() {
                    return merge_maps((pc2, wtu2), (pc, wtu));
                }
                merge_maps((pc, wtu), (pc2, wtu2))
            },
        )
}

/// The merge queue's first entries: every pair that occurs, with the (sorted) words holding it.
fn initial_queue(pair_counts: &FxHashMap<Pair, i64>, where_to_update: FxHashMap<Pair, Vec<u32>>) -> BinaryHeap<QueueEntry> {
    let mut queue: BinaryHeap<QueueEntry> = BinaryHeap::with_capacity(pair_counts.len());
    for (pair, mut words_of) in where_to_update {
        let count = pair_counts[&pair];
        if count > 0 {
            words_of.sort_unstable();
            queue.push(QueueEntry {
                count: count as u64,
                pair,
                words: words_of,
            });
        }
    }
    queue
}

/// Applies merge `pair -> rep` to the words listed in `word_ids`, collecting each word's pair-count
/// changes. Many words are updated in parallel (each word belongs to one task).
fn merge_in_words(
    words: &mut [Vec<u32>],
    word_ids: &[u32],
    pair: Pair,
    rep: u32,
    allowed: &(dyn Fn(u32, u32) -> bool + Sync),
    changes_by_word: &mut Vec<(Vec<(Pair, i32)>, u32)>,
) {
    changes_by_word.clear();
    if word_ids.len() >= PARALLEL_WORDS {
        struct WordsPtr(*mut Vec<u32>);
        unsafe impl Sync for WordsPtr {}
        let base = WordsPtr(words.as_mut_ptr());
        let base = &base;
        let n_words = words.len();
        *changes_by_word = word_ids
            .par_iter()
            .map(|&w| {
                assert!((w as usize) < n_words);
                // SAFETY: `word_ids` holds distinct indices, so each word is borrowed once.
                let word = unsafe { &mut *base.0.add(w as usize) };
                let mut ch = Vec::new();
                merge_word(word, pair, rep, allowed, &mut ch);
                (ch, w)
            })
            .collect();
    } else {
        for &w in word_ids {
            let mut ch = Vec::new();
            merge_word(&mut words[w as usize], pair, rep, allowed, &mut ch);
            if !ch.is_empty() {
                changes_by_word.push((ch, w));
            }
        }
    }
}

/// HF's merge loop, state and steps: pop the best pair, give it a token, rewrite the words that
/// hold it, and re-queue the pairs whose counts changed.
struct MergeLoop<'c> {
    cfg: &'c TrainConfig,
    vocab: TrainingVocab,
    words: Vec<Vec<u32>>,
    word_counts: Vec<i64>,
    pair_counts: FxHashMap<Pair, i64>,
    queue: BinaryHeap<QueueEntry>,
    /// Character lengths per id, only kept with a length limit.
    lens: Vec<CharLen>,
    merges: Vec<Pair>,
    bar: Option<ProgressBar>,
    /// Buffers reused from one merge to the next.
    changes_by_word: Vec<(Vec<(Pair, i32)>, u32)>,
    where_to_update: FxHashMap<Pair, Vec<u32>>,
}

impl MergeLoop<'_> {
    /// Merges until the vocabulary is full or no pair is frequent enough.
    fn run(&mut self) {
        while self.vocab.len() < self.cfg.vocab_size {
            let Some(top) = self.pop_best() else { break };
            let Some(new_id) = self.token_for(top.pair) else {
                continue; // never form a token over the length limit
            };
            self.merges.push(top.pair);
            self.rewrite_words(&top, new_id);
            self.requeue_changed_pairs();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// The best pair whose queued count is current (stale entries are re-queued with their
    /// present count); `None` once the queue is empty or the best pair is below `min_frequency`.
    fn pop_best(&mut self) -> Option<QueueEntry> {
        loop {
            let mut top = self.queue.pop()?;
            let current = self.pair_counts.get(&top.pair).copied().unwrap_or(0).max(0) as u64;
            if top.count != current {
                top.count = current;
                if current > 0 {
                    self.queue.push(top);
                }
                continue;
            }
            if top.count < 1 || self.cfg.min_frequency > top.count {
                return None;
            }
            return Some(top);
        }
    }

    /// The id of the merged token, added to the vocabulary when new; `None` when a new token
    /// would be longer than `max_token_length`.
    fn token_for(&mut self, (a, b): Pair) -> Option<u32> {
        let new_token = format!("{}{}", self.vocab.tokens[a as usize], self.vocab.tokens[b as usize]);
        if let Some(id) = self.vocab.id(&new_token) {
            return Some(id);
        }
        if let Some(limit) = self.cfg.max_token_length {
            if joined_len(self.lens[a as usize], self.lens[b as usize]) as usize > limit {
                return None;
            }
            self.lens.push(char_len(&bytelevel::token_bytes(&new_token)));
        }
        let id = self.vocab.add(new_token);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        Some(id)
    }

    /// Applies the merge to every word holding the pair and records the pair-count changes.
    fn rewrite_words(&mut self, top: &QueueEntry, new_id: u32) {
        let (lens, limit) = (&self.lens, self.cfg.max_token_length);
        let allowed = |x: u32, y: u32| within_limit(lens, limit, x, y);
        merge_in_words(&mut self.words, &top.words, top.pair, new_id, &allowed, &mut self.changes_by_word);
        for (changes, w) in self.changes_by_word.drain(..) {
            let count = self.word_counts[w as usize];
            for (p, change) in changes {
                *self.pair_counts.entry(p).or_insert(0) += change as i64 * count;
                if change > 0 {
                    let list = self.where_to_update.entry(p).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                }
            }
        }
    }

    /// Queues the pairs the last merge created, in pair order, with the words that now hold them.
    fn requeue_changed_pairs(&mut self) {
        let mut updated: Vec<(Pair, Vec<u32>)> = self.where_to_update.drain().collect();
        updated.sort_unstable_by_key(|(p, _)| *p);
        for (p, mut ws) in updated {
            let count = self.pair_counts[&p];
            if count > 0 {
                ws.sort_unstable();
                ws.dedup();
                self.queue.push(QueueEntry {
                    count: count as u64,
                    pair: p,
                    words: ws,
                });
            }
        }
    }
}

/// Trains a byte-level BPE on `counts`; the steps follow HF `BpeTrainer::do_train`.
pub fn train_bpe(counts: &WordCounts, cfg: &TrainConfig) -> Result<TrainedBpe> {
    cfg.check()?;
    let mut vocab = TrainingVocab::with_capacity(cfg.vocab_size.min(INITIAL_VOCAB_CAPACITY));
    add_special_tokens(&mut vocab, &cfg.special_tokens);
    let byte_ids = add_initial_alphabet(&mut vocab);
    let alphabet_len = vocab.len();
    if cfg.vocab_size < alphabet_len {
        return Err(Error::Config(format!(
            "vocab_size {} is smaller than the {} special tokens plus the 256-byte alphabet ({alphabet_len})",
            cfg.vocab_size,
            cfg.special_tokens.len()
        )));
    }
    if counts.is_empty() {
        return Err(Error::Config("the corpus is empty: no words to train on".into()));
    }
    let (words, word_counts) = tokenize_words(counts, &byte_ids);
    let (pair_counts, where_to_update) = count_pairs(&words, &word_counts);
    let queue = initial_queue(&pair_counts, where_to_update);
    let lens: Vec<CharLen> = match cfg.max_token_length {
        Some(_) => vocab.tokens.iter().map(|t| char_len(&bytelevel::token_bytes(t))).collect(),
        None => Vec::new(),
    };
    let mut merge_loop = MergeLoop {
        cfg,
        vocab,
        words,
        word_counts,
        pair_counts,
        queue,
        lens,
        merges: Vec::new(),
        bar: progress_bar(cfg.show_progress, (cfg.vocab_size - alphabet_len) as u64, "Merge pairs", false),
        changes_by_word: Vec::new(),
        where_to_update: FxHashMap::default(),
    };
    merge_loop.run();
    Ok(TrainedBpe {
        tokens: merge_loop.vocab.tokens,
        merges: merge_loop.merges,
        special_tokens: cfg.special_tokens.clone(),
    })
}

/// Vocabulary of the char/word baselines: specials, `unk`, then pieces by count (ties by text),
/// dropping pieces seen fewer than `min_frequency` times.
pub fn train_word_level(counts: &WordCounts, cfg: &TrainConfig, unk: &str) -> Result<Vec<String>> {
    cfg.check()?;
    let mut tokens: Vec<String> = Vec::new();
    for s in cfg.special_tokens.iter().map(String::as_str).chain(std::iter::once(unk)) {
        if !tokens.iter().any(|t| t == s) {
            tokens.push(s.to_string());
        }
    }
    if cfg.vocab_size < tokens.len() {
        return Err(Error::Config(format!(
            "vocab_size {} is smaller than the special tokens plus {unk:?} ({})",
            cfg.vocab_size,
            tokens.len()
        )));
    }
    if counts.is_empty() {
        return Err(Error::Config("the corpus is empty: no words to train on".into()));
    }
    let mut pieces: Vec<(&[u8], u64)> = counts
        .counts
        .iter()
        .filter(|(_, &c)| c >= cfg.min_frequency.max(1))
        .map(|(k, &c)| (&k[..], c))
        .collect();
    pieces.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (piece, _) in pieces {
        if tokens.len() >= cfg.vocab_size {
            break;
        }
        let piece = std::str::from_utf8(piece).expect("pieces come from str");
        if !tokens.iter().take(cfg.special_tokens.len() + 1).any(|t| t == piece) {
            tokens.push(piece.to_string());
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pretokenize::PreTokenizer;

    fn counts_of(words: &[(&str, u64)]) -> WordCounts {
        let mut wc = WordCounts::new(PreTokenizer::from_name("gpt2").unwrap(), None);
        for (w, c) in words {
            wc.counts.insert(Box::from(w.as_bytes()), *c);
        }
        wc
    }

    #[test]
    fn merge_word_reports_hf_changes() {
        // "hello" with ll -> L: HF's own unit test expectations.
        let mut w = vec![0, 1, 2, 2, 3];
        let mut ch = Vec::new();
        merge_word(&mut w, (2, 2), 4, &|_, _| true, &mut ch);
        assert_eq!(w, vec![0, 1, 4, 3]);
        assert_eq!(ch, vec![((1, 2), -1), ((1, 4), 1), ((2, 3), -1), ((4, 3), 1)]);
        // Overlapping occurrences merge left to right.
        let mut w = vec![7, 7, 7];
        ch.clear();
        merge_word(&mut w, (7, 7), 9, &|_, _| true, &mut ch);
        assert_eq!(w, vec![9, 7]);
        assert_eq!(ch, vec![((7, 7), -1), ((9, 7), 1)]);
    }

    #[test]
    fn trains_hf_toy_example() {
        // HF's trainer unit test: min_frequency 2 gives merges re, are, is.
        let wc = counts_of(&[
            ("roses", 1), ("are", 2), ("red", 1), ("voilets", 1), ("blue", 1), ("BERT", 1),
            ("is", 2), ("big", 1), ("and", 1), ("so", 1), ("GPT-2", 1),
        ]);
        let cfg = TrainConfig {
            vocab_size: 1000,
            min_frequency: 2,
            special_tokens: vec![],
            max_token_length: None,
            show_progress: false,
        };
        let t = train_bpe(&wc, &cfg).unwrap();
        let new: Vec<&str> = t.tokens[256..].iter().map(String::as_str).collect();
        assert_eq!(new, vec!["re", "are", "is"]);
    }

    #[test]
    fn respects_vocab_size_and_specials() {
        let wc = counts_of(&[("aaaa", 10), ("ab", 3)]);
        let cfg = TrainConfig {
            vocab_size: 258,
            min_frequency: 0,
            special_tokens: vec!["<|endoftext|>".into()],
            max_token_length: None,
            show_progress: false,
        };
        let t = train_bpe(&wc, &cfg).unwrap();
        assert_eq!(t.tokens.len(), 258);
        assert_eq!(t.tokens[0], "<|endoftext|>");
        assert_eq!(t.tokens[257], "aa");
        let small = TrainConfig { vocab_size: 100, ..cfg };
        assert!(train_bpe(&wc, &small).is_err());
    }

    #[test]
    fn max_token_length_caps_characters() {
        let wc = counts_of(&[("abc", 100), ("abcdefgh", 5), ("xyzxyzxyz", 50)]);
        let cfg = TrainConfig {
            vocab_size: 400,
            min_frequency: 0,
            special_tokens: vec![],
            max_token_length: Some(3),
            show_progress: false,
        };
        let t = train_bpe(&wc, &cfg).unwrap();
        assert!(t.tokens[256..].iter().all(|s| s.chars().count() <= 3), "{:?}", &t.tokens[256..]);
        assert!(t.tokens.iter().any(|s| s.chars().count() == 3));
    }

    #[test]
    fn counts_beyond_32_bits_rank_correctly() {
        // HF keeps pair counts in i32: 3e9 would wrap negative and "ab" would never be merged.
        let wc = counts_of(&[("ab", 3_000_000_000), ("cd", 2_000_000_000), ("ef", 5)]);
        let cfg = TrainConfig {
            vocab_size: 258,
            min_frequency: 0,
            special_tokens: vec![],
            max_token_length: None,
            show_progress: false,
        };
        let t = train_bpe(&wc, &cfg).unwrap();
        assert_eq!(&t.tokens[256..], &["ab".to_string(), "cd".to_string()]);
    }
}
