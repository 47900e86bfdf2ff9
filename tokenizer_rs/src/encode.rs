//! Applying merges to one pre-token: HF's BPE semantics (lowest rank first, leftmost on ties).
//!
//! Short pieces use an array of adjacent-pair ranks (cheap scans, two hash lookups per merge);
//! long ones use a linked list and a heap so that a megabyte with no split points stays O(n log n).

use crate::vocab::{Vocab, NO_ID};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pieces longer than this (in bytes) take the heap path.
const SHORT_PIECE: usize = 96;

/// Reusable buffers, one per thread, so encoding a piece allocates nothing.
#[derive(Default)]
pub struct Scratch {
    syms: Vec<u32>,
    ranks: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}

/// Appends the ids of `piece` (raw bytes) to `out`.
pub fn encode_piece(vocab: &Vocab, piece: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
    if vocab.ignore_merges {
        if let Some(id) = vocab.model_id_of_bytes(piece) {
            out.push(id);
            return;
        }
    }
    s.syms.clear();
    for &b in piece {
        let id = vocab.byte_id(b);
        if id != NO_ID {
            s.syms.push(id);
        } else if let Some(unk) = vocab.unk_id {
            // HF's BPE fuses nothing here (fuse_unk=false): one unk per unknown symbol.
            s.syms.push(unk);
        }
        // With no unk token HF drops symbols missing from the vocabulary; so do we.
    }
    if s.syms.len() < 2 {
        out.extend_from_slice(&s.syms);
        return;
    }
    if s.syms.len() <= SHORT_PIECE {
        merge_short(vocab, s);
        out.extend_from_slice(&s.syms);
    } else {
        merge_long(vocab, s, out);
    }
}

#[inline]
fn rank_of(vocab: &Vocab, a: u32, b: u32) -> u32 {
    vocab.merge(a, b).map_or(u32::MAX, |m| m.0)
}

fn merge_short(vocab: &Vocab, s: &mut Scratch) {
    let syms = &mut s.syms;
    let ranks = &mut s.ranks;
    ranks.clear();
    ranks.extend(syms.windows(2).map(|w| rank_of(vocab, w[0], w[1])));
    loop {
        let mut best = u32::MAX;
        let mut at = 0;
        for (i, &r) in ranks.iter().enumerate() {
            if r < best {
                best = r;
                at = i;
            }
        }
        if best == u32::MAX {
            break;
        }
        let merged = vocab.merge(syms[at], syms[at + 1]).expect("ranked pair has a merge").1;
        syms[at] = merged;
        syms.remove(at + 1);
        ranks.remove(at);
        if at < ranks.len() {
            ranks[at] = rank_of(vocab, syms[at], syms[at + 1]);
        }
        if at > 0 {
            ranks[at - 1] = rank_of(vocab, syms[at - 1], syms[at]);
        }
    }
}

fn merge_long(vocab: &Vocab, s: &mut Scratch, out: &mut Vec<u32>) {
    let n = s.syms.len();
    let syms = &mut s.syms;
    let (prev, next, heap) = (&mut s.prev, &mut s.next, &mut s.heap);
    prev.clear();
    next.clear();
    heap.clear();
    prev.extend((0..n as u32).map(|i| i.wrapping_sub(1)));
    next.extend((1..=n as u32).map(|i| if i as usize == n { NO_ID } else { i }));
    for i in 0..n - 1 {
        if let Some((rank, _)) = vocab.merge(syms[i], syms[i + 1]) {
            heap.push(Reverse((rank, i as u32)));
        }
    }
    while let Some(Reverse((rank, pos))) = heap.pop() {
        let pos = pos as usize;
        if syms[pos] == NO_ID {
            continue; // merged into its left neighbour
        }
        let right = next[pos];
        if right == NO_ID {
            continue;
        }
        let right = right as usize;
        let merged = match vocab.merge(syms[pos], syms[right]) {
            Some((r, merged)) if r == rank => merged,
            _ => continue, // stale entry: the pair at `pos` changed
        };
        syms[pos] = merged;
        syms[right] = NO_ID;
        let after = next[right];
        next[pos] = after;
        if after != NO_ID {
            prev[after as usize] = pos as u32;
            if let Some((r, _)) = vocab.merge(merged, syms[after as usize]) {
                heap.push(Reverse((r, pos as u32)));
            }
        }
        let before = prev[pos];
        if before != NO_ID {
            if let Some((r, _)) = vocab.merge(syms[before as usize], merged) {
                heap.push(Reverse((r, before)));
            }
        }
    }
    out.extend(syms.iter().copied().filter(|&id| id != NO_ID));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytelevel::encode_bytes;

    fn toy_vocab(merges: &[(&str, &str)]) -> Vocab {
        let mut tokens: Vec<String> = (0u8..=255).map(|b| encode_bytes(&[b])).collect();
        for (a, b) in merges {
            let t = format!("{a}{b}");
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        }
        let model = tokens.into_iter().enumerate().map(|(i, t)| (i as u32, t)).collect();
        let merges: Vec<(String, String)> = merges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Vocab::new("test", model, &[], &merges, None, false).unwrap()
    }

    fn encode(v: &Vocab, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        encode_piece(v, text.as_bytes(), &mut out, &mut Scratch::default());
        out.iter().map(|&id| v.token(id).unwrap().to_string()).collect()
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let v = toy_vocab(&[("b", "c"), ("a", "b"), ("a", "bc"), ("a", "a")]);
        assert_eq!(encode(&v, "abc"), vec!["abc"]);
        assert_eq!(encode(&v, "aaa"), vec!["aa", "a"]);
        assert_eq!(encode(&v, "xyz"), vec!["x", "y", "z"]);
    }

    #[test]
    fn long_and_short_paths_agree() {
        let v = toy_vocab(&[("a", "a"), ("aa", "aa"), ("b", "a"), ("aaaa", "aaaa"), ("ba", "aa")]);
        let mut rng = 12345u64;
        for len in [2usize, 5, 17, 95, 96, 97, 300, 1000] {
            for _ in 0..20 {
                let text: String = (0..len)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        if (rng >> 33) % 3 == 0 { 'b' } else { 'a' }
                    })
                    .collect();
                let mut s = Scratch::default();
                let mut short = Vec::new();
                s.syms = text.bytes().map(|b| v.byte_id(b)).collect();
                merge_short(&v, &mut s);
                short.extend_from_slice(&s.syms);
                let mut long = Vec::new();
                s.syms = text.bytes().map(|b| v.byte_id(b)).collect();
                merge_long(&v, &mut s, &mut long);
                assert_eq!(short, long, "{text}");
            }
        }
    }
}
