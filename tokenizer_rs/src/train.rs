//! BPE training with exactly the results of HF `tokenizers`' `BpeTrainer` (same vocabulary ids, same
//! merges in the same order), but with u64 counts, no negative counts, and faster data structures.
//!
//! The merge loop mirrors HF's structure on purpose: a max-heap of (count, pair) entries that each
//! carry the set of words to update, lazily re-queued when their count is stale. Where a merge
//! produces a string that is already in the vocabulary, this structure decides which words see the
//! merge; replicating it is what makes the parity exact rather than "usually equal".

use crate::bytelevel;
use crate::error::{Error, Result};
use crate::normalize::{normalize_opt, Normalizer};
use crate::pretokenize::PreTokenizer;
use crate::vocab::Pair;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub vocab_size: usize,
    pub min_frequency: u64,
    pub special_tokens: Vec<String>,
    /// Longest token, in characters; `None` for no limit.
    pub max_token_length: Option<usize>,
    pub show_progress: bool,
}

/// Word (pre-token) counts: the only state that grows with the corpus.
pub struct WordCounts {
    pretokenizer: PreTokenizer,
    normalizer: Option<Normalizer>,
    counts: FxHashMap<Box<[u8]>, u64>,
}

/// Text is processed in blocks of this many bytes, split at line ends, each block in parallel.
const BLOCK_BYTES: usize = 8 << 20;

impl WordCounts {
    pub fn new(pretokenizer: PreTokenizer, normalizer: Option<Normalizer>) -> Self {
        WordCounts {
            pretokenizer,
            normalizer,
            counts: FxHashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Total number of pre-tokens seen.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn count_text<'t>(&self, text: &'t str, split_lines: bool, local: &mut FxHashMap<&'t [u8], u64>) {
        let mut add = |piece: &'t str| *local.entry(piece.as_bytes()).or_insert(0) += 1;
        if split_lines {
            for line in text.split_inclusive('\n') {
                self.pretokenizer.for_each_piece(line, &mut add);
            }
        } else {
            self.pretokenizer.for_each_piece(text, &mut add);
        }
    }

    /// Counts one chunk; keys are copied out only once per distinct word.
    fn count_chunk(&self, chunk: &str, split_lines: bool) -> Vec<(Box<[u8]>, u64)> {
        let mut local: FxHashMap<&[u8], u64> = FxHashMap::default();
        match self.normalizer {
            None => {
                self.count_text(chunk, split_lines, &mut local);
                local.into_iter().map(|(k, v)| (Box::from(k), v)).collect()
            }
            Some(_) => {
                // Normalization is per sequence (per line for files), as in HF.
                let normalized: Vec<String> = if split_lines {
                    chunk
                        .split_inclusive('\n')
                        .map(|l| normalize_opt(self.normalizer, l).into_owned())
                        .collect()
                } else {
                    vec![normalize_opt(self.normalizer, chunk).into_owned()]
                };
                for s in &normalized {
                    self.count_text(s, false, &mut local);
                }
                local.into_iter().map(|(k, v)| (Box::from(k), v)).collect()
            }
        }
    }

    fn absorb(&mut self, parts: Vec<Vec<(Box<[u8]>, u64)>>) {
        for part in parts {
            for (k, v) in part {
                *self.counts.entry(k).or_insert(0) += v;
            }
        }
    }

    /// Each string is one sequence (HF `train_from_iterator` semantics).
    pub fn add_sequences<S: AsRef<str> + Sync>(&mut self, seqs: &[S]) {
        let this = &*self;
        let parts: Vec<_> = seqs
            .par_chunks(64.max(seqs.len() / (4 * rayon::current_num_threads()).max(1)))
            .map(|chunk| {
                let mut local: FxHashMap<&[u8], u64> = FxHashMap::default();
                let mut owned: Vec<Vec<(Box<[u8]>, u64)>> = Vec::new();
                for s in chunk {
                    if this.normalizer.is_none() {
                        this.count_text(s.as_ref(), false, &mut local);
                    } else {
                        owned.push(this.count_chunk(s.as_ref(), false));
                    }
                }
                let mut out: Vec<(Box<[u8]>, u64)> = local.into_iter().map(|(k, v)| (Box::from(k), v)).collect();
                out.extend(owned.into_iter().flatten());
                out
            })
            .collect();
        self.absorb(parts);
    }

    /// Counts a UTF-8 text file line by line (HF `train(files)` semantics: each line, with its
    /// ending, is one sequence). Streams in blocks; memory does not grow with the file.
    pub fn add_file(&mut self, path: &Path, progress: Option<&ProgressBar>) -> Result<()> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 4096);
        let mut offset: u64 = 0; // file offset of buf[0]
        let mut eof = false;
        while !eof {
            let have = buf.len();
            buf.resize(have + BLOCK_BYTES, 0);
            let mut filled = have;
            while filled < buf.len() {
                let n = file.read(&mut buf[filled..]).map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    eof = true;
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            // Process up to the last line end (everything at EOF); keep the tail for the next block.
            let cut = if eof {
                buf.len()
            } else {
                match buf.iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    None => continue, // a line longer than the block: read more
                }
            };
            let text = std::str::from_utf8(&buf[..cut]).map_err(|e| Error::NotUtf8 {
                path: path.to_path_buf(),
                offset: offset + e.valid_up_to() as u64,
            })?;
            let chunks = split_at_lines(text, 4 * rayon::current_num_threads());
            let parts: Vec<_> = chunks.par_iter().map(|c| self.count_chunk(c, true)).collect();
            self.absorb(parts);
            if let Some(p) = progress {
                p.inc(cut as u64);
            }
            buf.drain(..cut);
            offset += cut as u64;
        }
        Ok(())
    }
}

/// Splits `text` into about `parts` pieces, each ending at a line end.
fn split_at_lines(text: &str, parts: usize) -> Vec<&str> {
    let target = (text.len() / parts.max(1)).max(1 << 16);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > target {
        match rest.as_bytes()[target..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                let (head, tail) = rest.split_at(target + p + 1);
                out.push(head);
                rest = tail;
            }
            None => break,
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
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

fn progress_bar(show: bool, len: u64, message: &'static str, bytes: bool) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::new(len);
    let template = if bytes {
        "{msg:>16} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
    } else {
        "{msg:>16} [{bar:40}] {pos}/{len} (eta {eta})"
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap().progress_chars("=> "));
    bar.set_message(message);
    Some(bar)
}

pub fn file_progress(show: bool, total_bytes: u64) -> Option<ProgressBar> {
    progress_bar(show, total_bytes, "Count words", true)
}

/// Minimum number of words to update before a merge step goes parallel.
const PARALLEL_WORDS: usize = 512;

pub fn train_bpe(counts: &WordCounts, cfg: &TrainConfig) -> Result<TrainedBpe> {
    // 1. Special tokens, then the 256 byte-level characters in code-point order.
    let mut token_to_id: FxHashMap<String, u32> = FxHashMap::default();
    let mut tokens: Vec<String> = Vec::with_capacity(cfg.vocab_size);
    let mut add = |s: String, tokens: &mut Vec<String>| {
        token_to_id.entry(s.clone()).or_insert_with(|| {
            tokens.push(s);
            (tokens.len() - 1) as u32
        });
    };
    for s in &cfg.special_tokens {
        add(s.clone(), &mut tokens);
    }
    for c in bytelevel::alphabet_sorted() {
        add(c.to_string(), &mut tokens);
    }
    let alphabet_len = tokens.len();
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
    let byte_ids: Vec<u32> = (0u8..=255)
        .map(|b| token_to_id[&bytelevel::byte_to_char(b).to_string()])
        .collect();

    // 2. Words as symbol ids, in a fixed order so runs are reproducible.
    let mut entries: Vec<(&[u8], u64)> = counts.counts.iter().map(|(k, v)| (&k[..], *v)).collect();
    entries.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut words: Vec<Vec<u32>> = entries
        .par_iter()
        .map(|(w, _)| w.iter().map(|&b| byte_ids[b as usize]).collect())
        .collect();
    let word_counts: Vec<i64> = entries.iter().map(|(_, c)| *c as i64).collect();
    drop(entries);

    // 3. Initial pair counts and, per pair, the words that hold it.
    let (mut pair_counts, where_to_update) = words
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
        );
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

    // Character lengths per id, only needed with a length limit.
    let mut lens: Vec<CharLen> = if cfg.max_token_length.is_some() {
        tokens.iter().map(|t| char_len(&bytelevel::token_bytes(t))).collect()
    } else {
        Vec::new()
    };

    // 4. Merge until the vocabulary is full or no pair is frequent enough.
    let bar = progress_bar(cfg.show_progress, (cfg.vocab_size - alphabet_len) as u64, "Merge pairs", false);
    let mut merges: Vec<Pair> = Vec::new();
    let mut changes_by_word: Vec<(Vec<(Pair, i32)>, u32)> = Vec::new();
    let mut where_to_update: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    while token_to_id.len() < cfg.vocab_size {
        let Some(mut top) = queue.pop() else { break };
        let current = pair_counts.get(&top.pair).copied().unwrap_or(0).max(0) as u64;
        if top.count != current {
            top.count = current;
            if current > 0 {
                queue.push(top);
            }
            continue;
        }
        if top.count < 1 || cfg.min_frequency > top.count {
            break;
        }
        let new_token = format!("{}{}", tokens[top.pair.0 as usize], tokens[top.pair.1 as usize]);
        let new_id = match token_to_id.get(&new_token) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                if let Some(limit) = cfg.max_token_length {
                    let len = joined_len(lens[top.pair.0 as usize], lens[top.pair.1 as usize]);
                    if len as usize > limit {
                        continue; // never form a token over the limit
                    }
                    lens.push(char_len(&bytelevel::token_bytes(&new_token)));
                }
                token_to_id.insert(new_token.clone(), id);
                tokens.push(new_token);
                if let Some(b) = &bar {
                    b.inc(1);
                }
                id
            }
        };
        merges.push(top.pair);

        let allowed = |x: u32, y: u32| match cfg.max_token_length {
            None => true,
            Some(limit) => {
                let (lx, ly) = (lens[x as usize], lens.get(y as usize).copied());
                // `rep` may be the id being created; its length is already pushed above.
                ly.is_some_and(|ly| joined_len(lx, ly) as usize <= limit)
            }
        };
        let pair = top.pair;
        changes_by_word.clear();
        if top.words.len() >= PARALLEL_WORDS {
            struct WordsPtr(*mut Vec<u32>);
            unsafe impl Sync for WordsPtr {}
            let base = WordsPtr(words.as_mut_ptr());
            let base = &base;
            let n_words = words.len();
            changes_by_word = top
                .words
                .par_iter()
                .map(|&w| {
                    assert!((w as usize) < n_words);
                    // SAFETY: `top.words` holds distinct indices, so each word is borrowed once.
                    let word = unsafe { &mut *base.0.add(w as usize) };
                    let mut ch = Vec::new();
                    merge_word(word, pair, new_id, &allowed, &mut ch);
                    (ch, w)
                })
                .collect();
        } else {
            for &w in &top.words {
                let mut ch = Vec::new();
                merge_word(&mut words[w as usize], pair, new_id, &allowed, &mut ch);
                if !ch.is_empty() {
                    changes_by_word.push((ch, w));
                }
            }
        }
        for (changes, w) in changes_by_word.drain(..) {
            let count = word_counts[w as usize];
            for (p, change) in changes {
                *pair_counts.entry(p).or_insert(0) += change as i64 * count;
                if change > 0 {
                    let list = where_to_update.entry(p).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                }
            }
        }
        let mut updated: Vec<(Pair, Vec<u32>)> = where_to_update.drain().collect();
        updated.sort_unstable_by_key(|(p, _)| *p);
        for (p, mut ws) in updated {
            let count = pair_counts[&p];
            if count > 0 {
                ws.sort_unstable();
                ws.dedup();
                queue.push(QueueEntry {
                    count: count as u64,
                    pair: p,
                    words: ws,
                });
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(TrainedBpe {
        tokens,
        merges,
        special_tokens: cfg.special_tokens.clone(),
    })
}

/// Vocabulary of the char/word baselines: specials, `unk`, then pieces by count (ties by text),
/// dropping pieces seen fewer than `min_frequency` times.
pub fn train_word_level(counts: &WordCounts, cfg: &TrainConfig, unk: &str) -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn split_at_lines_covers_text() {
        let text = "line\n".repeat(100_000) + &"日本語の行\n".repeat(50_000);
        let parts = split_at_lines(&text, 7);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts.concat(), text);
    }
}
