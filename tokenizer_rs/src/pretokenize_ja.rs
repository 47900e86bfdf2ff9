//! The `ja` pre-tokenizer: pre-tokens bounded for Japanese, chosen by measurement on held-out
//! Aozora works (see BENCHMARKS.md). A pre-token is an optional leading space (ASCII or U+3000) and
//! opening bracket, then a kanji run with the hiragana that follows it (okurigana and particles),
//! or a hiragana run, or a katakana run, then up to two of 、。」』. Latin and other letters,
//! digit groups, other punctuation and whitespace are split as in cl100k.
//!
//! The scanner below is a one-pass equivalent of [`ja_pattern`]; the pattern is what goes into
//! tokenizer.json (HF `Split`), and a property test keeps the two identical.

use regex_syntax::hir::{Class, HirKind};
use std::sync::OnceLock;

/// The regular expression the scanner implements, with digits grouped by at most `max_digits`.
pub fn ja_pattern(max_digits: u8) -> String {
    let lead = "[ \u{3000}]?[「『]?";
    let trail = "[、。」』]{0,2}";
    let ja = r"\p{Han}\p{Hiragana}\p{Katakana}ー";
    format!(
        r"{lead}\p{{Han}}+\p{{Hiragana}}*{trail}|{lead}\p{{Hiragana}}+{trail}|{lead}[\p{{Katakana}}ー]+{trail}| ?[^\s\p{{N}}\p{{P}}\p{{S}}\p{{Z}}\p{{C}}{ja}]+|\p{{N}}{{1,{max_digits}}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

// Character flags (a char can have several: 〇 is both Han and a number).
const SPACE: u16 = 1; // \s
const LETTER: u16 = 2; // \p{L}
const NUMBER: u16 = 4; // \p{N}
const HAN: u16 = 8;
const HIRAGANA: u16 = 16;
const KATAKANA: u16 = 32; // \p{Katakana} or ー
const OTHER_LETTER: u16 = 64; // [^\s\p{N}\p{P}\p{S}\p{Z}\p{C}] and not Japanese
const OPEN: u16 = 128; // 「『
const CLOSE: u16 = 256; // 、。」』

struct FlagTable {
    bmp: Vec<u16>,
    /// (start, end inclusive, flags) above U+FFFF, sorted.
    astral: Vec<(u32, u32, u16)>,
}

fn ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new().parse(pattern).expect("class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect(),
        HirKind::Literal(_) => {
            let c = pattern.chars().next().unwrap() as u32;
            vec![(c, c)]
        }
        other => panic!("unexpected HIR for {pattern}: {other:?}"),
    }
}

fn table() -> &'static FlagTable {
    static TABLE: OnceLock<FlagTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let defs: [(&str, u16); 9] = [
            (r"\s", SPACE),
            (r"\p{L}", LETTER),
            (r"\p{N}", NUMBER),
            (r"\p{Han}", HAN),
            (r"\p{Hiragana}", HIRAGANA),
            (r"[\p{Katakana}ー]", KATAKANA),
            (r"[^\s\p{N}\p{P}\p{S}\p{Z}\p{C}\p{Han}\p{Hiragana}\p{Katakana}ー]", OTHER_LETTER),
            (r"[「『]", OPEN),
            (r"[、。」』]", CLOSE),
        ];
        let mut bmp = vec![0u16; 0x10000];
        let mut boundaries: Vec<u32> = vec![0x10000, 0x110000];
        let mut astral_defs = Vec::new();
        for (pattern, flag) in defs {
            for (s, e) in ranges(pattern) {
                for cp in s..=e.min(0xFFFF) {
                    bmp[cp as usize] |= flag;
                }
                if e > 0xFFFF {
                    let s = s.max(0x10000);
                    boundaries.push(s);
                    boundaries.push(e + 1);
                    astral_defs.push((s, e, flag));
                }
            }
        }
        // Flatten overlapping astral ranges into disjoint segments with combined flags.
        boundaries.sort_unstable();
        boundaries.dedup();
        let mut astral = Vec::new();
        for w in boundaries.windows(2) {
            let (s, e) = (w[0], w[1] - 1);
            let flags = astral_defs
                .iter()
                .filter(|(ds, de, _)| *ds <= s && e <= *de)
                .fold(0, |acc, (_, _, f)| acc | f);
            if flags != 0 {
                astral.push((s, e, flags));
            }
        }
        FlagTable { bmp, astral }
    })
}

#[inline(always)]
fn flags_at(b: &[u8], i: usize) -> (u16, usize) {
    let x = b[i];
    let (cp, len) = if x < 0x80 {
        (x as u32, 1)
    } else if x < 0xE0 {
        ((((x & 0x1F) as u32) << 6) | (b[i + 1] & 0x3F) as u32, 2)
    } else if x < 0xF0 {
        ((((x & 0x0F) as u32) << 12) | (((b[i + 1] & 0x3F) as u32) << 6) | (b[i + 2] & 0x3F) as u32, 3)
    } else {
        (
            (((x & 0x07) as u32) << 18) | (((b[i + 1] & 0x3F) as u32) << 12) | (((b[i + 2] & 0x3F) as u32) << 6) | (b[i + 3] & 0x3F) as u32,
            4,
        )
    };
    let t = table();
    let f = if cp < 0x10000 {
        t.bmp[cp as usize]
    } else {
        match t.astral.binary_search_by(|r| if r.1 < cp { std::cmp::Ordering::Less } else if r.0 > cp { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Equal }) {
            Ok(k) => t.astral[k].2,
            Err(_) => 0,
        }
    };
    (f, len)
}

/// End of the run of chars having `flag`, from `i`.
#[inline(always)]
fn run(b: &[u8], mut i: usize, flag: u16) -> usize {
    while i < b.len() {
        let (f, l) = flags_at(b, i);
        if f & flag == 0 {
            break;
        }
        i += l;
    }
    i
}

/// Up to `max` chars having `flag`, from `i`.
#[inline(always)]
fn run_max(b: &[u8], mut i: usize, flag: u16, max: usize) -> usize {
    for _ in 0..max {
        if i >= b.len() {
            break;
        }
        let (f, l) = flags_at(b, i);
        if f & flag == 0 {
            break;
        }
        i += l;
    }
    i
}

/// The Japanese alternatives at `i`: `[ 　]?[「『]?(kanji+ hiragana* | hiragana+ | katakana+)[、。」』]{0,2}`.
#[inline(always)]
fn japanese_word(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if j < b.len() {
        let (f, l) = flags_at(b, j);
        if b[j] == b' ' || (f & SPACE != 0 && l == 3 && b[j..j + 3] == [0xE3, 0x80, 0x80]) {
            j += l;
        }
    }
    if j < b.len() {
        let (f, l) = flags_at(b, j);
        if f & OPEN != 0 {
            j += l;
        }
    }
    if j >= b.len() {
        return None;
    }
    let (f, l) = flags_at(b, j);
    let end = if f & HAN != 0 {
        run(b, run(b, j + l, HAN), HIRAGANA)
    } else if f & HIRAGANA != 0 {
        run(b, j + l, HIRAGANA)
    } else if f & KATAKANA != 0 {
        run(b, j + l, KATAKANA)
    } else {
        // Backtracking cannot help: without the optional prefixes the char at `i` is a space or a
        // bracket, which no Japanese alternative starts with.
        return None;
    };
    Some(run_max(b, end, CLOSE, 2))
}

pub fn ja_pieces<'t, F: FnMut(&'t str)>(text: &'t str, max_digits: usize, mut f: F) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n {
        let start = i;
        i = match japanese_word(b, i) {
            Some(end) => end,
            None => other_piece(b, i, max_digits),
        };
        f(&text[start..i]);
    }
}

/// The non-Japanese alternatives, in pattern order.
#[inline(always)]
fn other_piece(b: &[u8], i: usize, max_digits: usize) -> usize {
    let n = b.len();
    let (f, l) = flags_at(b, i);
    // ` ?` + other letters, ` ?` + punctuation run: the optional space joins what follows.
    let (lead, body_flags, body_len) = if b[i] == b' ' && i + 1 < n {
        let (g, gl) = flags_at(b, i + 1);
        if g & (OTHER_LETTER) != 0 || g & (SPACE | LETTER | NUMBER) == 0 {
            (1, g, gl)
        } else {
            (0, f, l)
        }
    } else {
        (0, f, l)
    };
    let body = i + lead;
    if body_flags & OTHER_LETTER != 0 {
        return run(b, body + body_len, OTHER_LETTER);
    }
    if lead == 0 && f & NUMBER != 0 {
        return run_max(b, i, NUMBER, max_digits);
    }
    if body_flags & (SPACE | LETTER | NUMBER) == 0 {
        return punctuation_end(b, body + body_len);
    }
    if f & SPACE == 0 {
        // A letter that no alternative above takes (only reachable for Japanese letters that the
        // Japanese alternatives already handle); keep progress safe.
        return i + l;
    }
    space_end(b, i)
}

/// `[^\s\p{L}\p{N}]+[\r\n]*` from `j`, just after its first character: the rest of the
/// punctuation run, then any line breaks.
#[inline]
fn punctuation_end(b: &[u8], mut j: usize) -> usize {
    let n = b.len();
    while j < n {
        let (g, gl) = flags_at(b, j);
        if g & (SPACE | LETTER | NUMBER) != 0 {
            break;
        }
        j += gl;
    }
    while j < n && (b[j] == b'\r' || b[j] == b'\n') {
        j += 1;
    }
    j
}

/// White space from `i`: `\s*[\r\n]+`, then `\s+(?!\S)`, then `\s+`.
#[inline]
fn space_end(b: &[u8], i: usize) -> usize {
    let n = b.len();
    let mut j = i;
    let mut last_break = None;
    let mut last_start = i;
    while j < n {
        let (g, gl) = flags_at(b, j);
        if g & SPACE == 0 {
            break;
        }
        if b[j] == b'\r' || b[j] == b'\n' {
            last_break = Some(j + 1);
        }
        last_start = j;
        j += gl;
    }
    if let Some(end) = last_break {
        // [\r\n]+ continues greedily after the last break char, but that char was the last one.
        return end;
    }
    if j < n && last_start > i {
        last_start
    } else {
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_pieces(text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(&ja_pattern(3)).unwrap();
        re.find_iter(text).map(|m| m.unwrap().as_str().to_string()).collect()
    }

    fn ours(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        ja_pieces(text, 3, |p| v.push(p.to_string()));
        v
    }

    #[test]
    fn examples_match_the_regex() {
        for s in [
            "　吾輩は猫である。名前はまだ無い。",
            "「そうか。」と彼は言った。『羅生門』を読む",
            "カタカナとひらがな、漢字〇々。GPT-2 model 12345円 ー",
            "mixed 日本語 text\r\n\n　 spaces\t\u{3000}\u{3000}end",
            "emoji 😀 and 𠮷野家 e\u{301} ！？……",
            " 「 x 」 、、、。。",
            "",
        ] {
            assert_eq!(ours(s), regex_pieces(s), "text {s:?}");
        }
    }
}
