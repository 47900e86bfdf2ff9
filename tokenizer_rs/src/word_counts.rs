//! Word (pre-token) counting, the first half of training: text from files or sequences is
//! normalized, pre-tokenized and counted in parallel blocks. The counts are all the trainer needs.

use crate::error::{Error, Result};
use crate::normalize::{normalize_opt, Normalizer};
use crate::pretokenize::PreTokenizer;
use indicatif::ProgressBar;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::io::Read;
use std::path::Path;

/// Word (pre-token) counts: the only state that grows with the corpus.
pub struct WordCounts {
    pretokenizer: PreTokenizer,
    normalizer: Option<Normalizer>,
    pub(crate) counts: FxHashMap<Box<[u8]>, u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_lines_covers_text() {
        let text = "line\n".repeat(100_000) + &"日本語の行\n".repeat(50_000);
        let parts = split_at_lines(&text, 7);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.ends_with('\n')));
        assert_eq!(parts.concat(), text);
    }
}
