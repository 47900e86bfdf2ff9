//! Pre-tokenizers: split text into the pieces that BPE merges never cross.
//!
//! `gpt2` is a hand-written scanner equivalent to the GPT-2 regex (as in HF's `ByteLevel` and
//! tiktoken); it runs in one pass with no backtracking, which is where most of the encoding speed
//! comes from. Every other preset, and any custom pattern, runs through `fancy-regex` with HF's
//! `Split(behavior="Isolated")` semantics (matches and the gaps between them are all pieces).

use crate::error::{Error, Result};
pub use crate::pretokenize_ja::{ja_pattern, ja_pieces};
use crate::unicode_class::{class_of, CharClass};
use std::sync::Arc;

pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The char-level split, as an HF `Split` pattern.
pub const CHARS_PATTERN: &str = r"[\s\S]";
/// The word-level split: HF `Split(WORDS_SPACE, "removed")` then `Split(WORDS_PUNCT, "isolated")`.
pub const WORDS_SPACE: &str = r"\s+";
pub const WORDS_PUNCT: &str = r#"--|[,.:;?_!"()']"#;

/// Names accepted by [`PreTokenizer::from_name`].
pub const PRESETS: &[&str] = &["gpt2", "cl100k", "o200k", "ja", "ja-digits1", "ja-isolated"];

/// A custom pattern is asked for explicitly (`regex:<pattern>`), so that a misspelt preset is an
/// error instead of a regular expression that happens to compile.
pub const REGEX_PREFIX: &str = "regex:";

/// The preset a misspelt name most likely meant: the nearest by edit distance (a swap of two
/// neighbours counts once, case is ignored), if it is close enough to be a typo.
pub fn closest_preset(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    PRESETS
        .iter()
        .map(|&p| (edit_distance(&name, p), p))
        .filter(|&(d, p)| d <= 2 && d < p.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, p)| p)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// `ja` with punctuation never attached to words (measured to compress less; see BENCHMARKS.md).
pub fn ja_isolated_pattern() -> String {
    let lead = "[ \u{3000}]?";
    format!(
        r"{lead}\p{{Han}}+\p{{Hiragana}}*|{lead}\p{{Hiragana}}+|{lead}[\p{{Katakana}}ー]+| ?[^\s\p{{N}}\p{{P}}\p{{S}}\p{{Z}}\p{{C}}\p{{Han}}\p{{Hiragana}}\p{{Katakana}}ー]+|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

#[derive(Clone)]
pub enum PreTokenizer {
    /// HF `ByteLevel(use_regex=true)`: the GPT-2 split.
    Gpt2 { add_prefix_space: bool },
    /// The Japanese split (see `pretokenize_ja`), digits grouped by at most `max_digits`.
    Ja { max_digits: u8 },
    /// Every character is a piece (the char-level baseline model).
    Chars,
    /// The seeds' SimpleTokenizerV2 split: white space dropped, `--` and `,.:;?_!"()'` isolated
    /// (the word-level baseline model).
    Words,
    /// HF `ByteLevel(use_regex=false)`: the whole text is one piece.
    Whole { add_prefix_space: bool },
    /// HF `Split(pattern, "Isolated")` followed by `ByteLevel(use_regex=false)`.
    Regex {
        /// The preset this pattern came from, if any (only for display and saving).
        preset: Option<&'static str>,
        pattern: String,
        regex: Arc<fancy_regex::Regex>,
    },
}

impl std::fmt::Debug for PreTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreTokenizer({})", self.name())
    }
}

impl PreTokenizer {
    /// A preset name (see [`PRESETS`]) or `regex:<pattern>`; anything else is an error that lists
    /// the presets (and the likely one, for a typo).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "gpt2" => Ok(PreTokenizer::Gpt2 {
                add_prefix_space: false,
            }),
            "cl100k" => Self::from_pattern(CL100K_PATTERN),
            "o200k" => Self::from_pattern(O200K_PATTERN),
            "ja" => Ok(PreTokenizer::Ja { max_digits: 3 }),
            "ja-digits1" => Ok(PreTokenizer::Ja { max_digits: 1 }),
            "ja-isolated" => Self::from_pattern(&ja_isolated_pattern()),
            other => match other.strip_prefix(REGEX_PREFIX) {
                Some(pattern) => Self::from_pattern(pattern),
                None => Err(Error::UnknownPreset {
                    name: other.to_string(),
                    suggestion: closest_preset(other),
                }),
            },
        }
    }

    /// The regular expression this pre-tokenizer implements (what tokenizer.json stores).
    pub fn pattern(&self) -> Option<String> {
        match self {
            PreTokenizer::Gpt2 { .. } => Some(GPT2_PATTERN.to_string()),
            PreTokenizer::Whole { .. } | PreTokenizer::Words => None,
            PreTokenizer::Chars => Some(CHARS_PATTERN.to_string()),
            PreTokenizer::Ja { max_digits } => Some(ja_pattern(*max_digits)),
            PreTokenizer::Regex { pattern, .. } => Some(pattern.clone()),
        }
    }

    /// A regex split; the GPT-2 and `ja` patterns are recognised and served by the fast scanners.
    pub fn from_pattern(pattern: &str) -> Result<Self> {
        if pattern == GPT2_PATTERN {
            return Ok(PreTokenizer::Gpt2 {
                add_prefix_space: false,
            });
        }
        for max_digits in [3u8, 1] {
            if pattern == ja_pattern(max_digits) {
                return Ok(PreTokenizer::Ja { max_digits });
            }
        }
        let preset = match pattern {
            CL100K_PATTERN => Some("cl100k"),
            O200K_PATTERN => Some("o200k"),
            p if p == ja_isolated_pattern() => Some("ja-isolated"),
            _ => None,
        };
        let regex = fancy_regex::Regex::new(pattern).map_err(|e| Error::Regex {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?;
        if regex.is_match("").unwrap_or(false) && pattern.is_empty() {
            return Err(Error::Regex {
                pattern: pattern.to_string(),
                message: "pattern is empty".into(),
            });
        }
        Ok(PreTokenizer::Regex {
            preset,
            pattern: pattern.to_string(),
            regex: Arc::new(regex),
        })
    }

    /// What [`PreTokenizer::from_name`] takes back: a preset name, or `regex:<pattern>` for a
    /// custom pattern (`none`, `chars`, `words` name the splits that have no preset).
    pub fn name(&self) -> String {
        match self {
            PreTokenizer::Gpt2 { .. } => "gpt2".into(),
            PreTokenizer::Whole { .. } => "none".into(),
            PreTokenizer::Chars => "chars".into(),
            PreTokenizer::Words => "words".into(),
            PreTokenizer::Ja { max_digits: 3 } => "ja".into(),
            PreTokenizer::Ja { max_digits } => format!("ja-digits{max_digits}"),
            PreTokenizer::Regex { preset: Some(p), .. } => (*p).into(),
            PreTokenizer::Regex { pattern, .. } => format!("{REGEX_PREFIX}{pattern}"),
        }
    }

    pub fn add_prefix_space(&self) -> bool {
        match self {
            PreTokenizer::Gpt2 { add_prefix_space } | PreTokenizer::Whole { add_prefix_space } => *add_prefix_space,
            _ => false,
        }
    }

    /// Calls `f` on each piece of `text`, in order; the pieces concatenate to `text`.
    /// (A prefix space, when configured, is the caller's job: see [`crate::Tokenizer`].)
    pub fn for_each_piece<'t, F: FnMut(&'t str)>(&self, text: &'t str, mut f: F) {
        match self {
            PreTokenizer::Gpt2 { .. } => gpt2_pieces(text, f),
            PreTokenizer::Ja { max_digits } => ja_pieces(text, *max_digits as usize, f),
            PreTokenizer::Chars => {
                for (i, c) in text.char_indices() {
                    f(&text[i..i + c.len_utf8()]);
                }
            }
            PreTokenizer::Words => word_pieces(text, f),
            PreTokenizer::Whole { .. } => {
                if !text.is_empty() {
                    f(text)
                }
            }
            PreTokenizer::Regex { regex, .. } => {
                let mut last = 0;
                for m in regex.find_iter(text) {
                    match m {
                        Ok(m) => {
                            if m.start() > last {
                                f(&text[last..m.start()]);
                            }
                            if m.end() > m.start() {
                                f(m.as_str());
                            }
                            last = m.end();
                        }
                        // Backtracking limit hit: keep the rest as one piece rather than lose text.
                        Err(_) => break,
                    }
                }
                if last < text.len() {
                    f(&text[last..]);
                }
            }
        }
    }

    pub fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }
}

fn is_word_punct(b: u8) -> bool {
    matches!(b, b',' | b'.' | b':' | b';' | b'?' | b'_' | b'!' | b'"' | b'(' | b')' | b'\'')
}

/// SimpleTokenizerV2's split: `re.split(r'([,.:;?_!"()\']|--|\s)', text)` without empty items.
pub fn word_pieces<'t, F: FnMut(&'t str)>(text: &'t str, mut f: F) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    let mut word_start: Option<usize> = None;
    let flush = |start: &mut Option<usize>, end: usize, f: &mut F| {
        if let Some(s) = start.take() {
            f(&text[s..end]);
        }
    };
    while i < n {
        let (c, len) = char_at(b, i);
        if class_of(c) == CharClass::Space {
            flush(&mut word_start, i, &mut f);
        } else if is_word_punct(b[i]) {
            flush(&mut word_start, i, &mut f);
            f(&text[i..i + 1]);
        } else if b[i] == b'-' && i + 1 < n && b[i + 1] == b'-' {
            flush(&mut word_start, i, &mut f);
            f(&text[i..i + 2]);
            i += 2;
            continue;
        } else if word_start.is_none() {
            word_start = Some(i);
        }
        i += len;
    }
    flush(&mut word_start, n, &mut f);
}

/// Decodes the char starting at byte `i` of valid UTF-8; returns it and its length.
#[inline(always)]
fn char_at(b: &[u8], i: usize) -> (char, usize) {
    let x = b[i];
    if x < 0x80 {
        return (x as char, 1);
    }
    let (len, init) = if x < 0xE0 {
        (2, (x & 0x1F) as u32)
    } else if x < 0xF0 {
        (3, (x & 0x0F) as u32)
    } else {
        (4, (x & 0x07) as u32)
    };
    let mut cp = init;
    for k in 1..len {
        cp = (cp << 6) | (b[i + k] & 0x3F) as u32;
    }
    // SAFETY: `b` comes from a `&str`, so this is a valid scalar value.
    (unsafe { char::from_u32_unchecked(cp) }, len)
}

#[inline(always)]
fn class_at(b: &[u8], i: usize) -> (CharClass, usize) {
    let x = b[i];
    if x < 0x80 {
        return (ASCII_CLASS[x as usize], 1);
    }
    let (c, len) = char_at(b, i);
    (class_of(c), len)
}

const fn ascii_classes() -> [CharClass; 128] {
    let mut t = [CharClass::Other; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            CharClass::Letter
        } else if c.is_ascii_digit() {
            CharClass::Number
        } else if c == b' ' || (c >= 0x09 && c <= 0x0D) {
            CharClass::Space
        } else {
            CharClass::Other
        };
        i += 1;
    }
    t
}
static ASCII_CLASS: [CharClass; 128] = ascii_classes();

/// End of the run of `class` characters starting at `i`.
#[inline(always)]
fn run_end(b: &[u8], mut i: usize, class: CharClass) -> usize {
    while i < b.len() {
        let (c, len) = class_at(b, i);
        if c != class {
            break;
        }
        i += len;
    }
    i
}

/// The end of the white-space piece starting at `i` (its first char `len` bytes long): the whole
/// run at the end of the text, else all but its last char (`\s+(?!\S)`), else the single char
/// (`\s+`).
#[inline(always)]
fn space_run_end(b: &[u8], i: usize, len: usize) -> usize {
    let n = b.len();
    let mut j = i + len;
    let mut last_start = i;
    while j < n {
        let (c, l) = class_at(b, j);
        if c != CharClass::Space {
            break;
        }
        last_start = j;
        j += l;
    }
    if j < n && last_start > i {
        last_start
    } else {
        j
    }
}

/// The GPT-2 split, one left-to-right pass. Alternatives in regex order:
/// contractions, ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`, `\s+(?!\S)`, `\s+`.
pub fn gpt2_pieces<'t, F: FnMut(&'t str)>(text: &'t str, mut f: F) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n {
        let start = i;
        if b[i] == b'\'' && i + 1 < n {
            let k = match b[i + 1] {
                b's' | b't' | b'm' | b'd' => 2,
                b'r' | b'v' if i + 2 < n && b[i + 2] == b'e' => 3,
                b'l' if i + 2 < n && b[i + 2] == b'l' => 3,
                _ => 0,
            };
            if k > 0 {
                i += k;
                f(&text[start..i]);
                continue;
            }
        }
        let (class, len) = class_at(b, i);
        i = match class {
            CharClass::Space => {
                // ` ` followed by a letter, digit or symbol joins that run.
                let joined = if b[i] == b' ' && i + 1 < n {
                    let (next, next_len) = class_at(b, i + 1);
                    (next != CharClass::Space).then(|| run_end(b, i + 1 + next_len, next))
                } else {
                    None
                };
                joined.unwrap_or_else(|| space_run_end(b, i, len))
            }
            other => run_end(b, i + len, other),
        };
        f(&text[start..i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_pieces(pattern: &str, text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(pattern).unwrap();
        re.find_iter(text).map(|m| m.unwrap().as_str().to_string()).collect()
    }

    #[test]
    fn gpt2_scanner_matches_regex_on_examples() {
        let samples = [
            "Hello world! It's a test, isn't it?  Yes\n\n  no",
            "  leading spaces and trailing   ",
            "tabs\t\tand\r\nCRLF lines\n",
            "numbers 12345 and 3.14, ' 's 'S 'll 're've",
            "日本語のテキスト、句読点。「かぎ」　全角スペース",
            "emoji 😀👍🏽 and combining e\u{301}",
            "a \u{3000}b\u{3000}\u{3000}c",
            "'''s ''ll x'",
            "",
            " ",
            "\n",
        ];
        for s in samples {
            let ours: Vec<String> = PreTokenizer::from_name("gpt2")
                .unwrap()
                .pieces(s)
                .into_iter()
                .map(String::from)
                .collect();
            assert_eq!(ours, regex_pieces(GPT2_PATTERN, s), "text: {s:?}");
        }
    }

    #[test]
    fn word_split_matches_simple_tokenizer_v2() {
        let p = PreTokenizer::Words;
        assert_eq!(
            p.pieces("Hello, world. Is this-- a test?  a---b \"quoted\" (x)"),
            vec!["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?", "a", "--", "-b", "\"", "quoted", "\"", "(", "x", ")"]
        );
        assert_eq!(PreTokenizer::Chars.pieces("日本e\u{301}"), vec!["日", "本", "e", "\u{301}"]);
    }

    #[test]
    fn regex_split_keeps_gaps() {
        let p = PreTokenizer::from_pattern(r"\d+").unwrap();
        assert_eq!(p.pieces("ab12cd3"), vec!["ab", "12", "cd", "3"]);
    }

    #[test]
    fn presets_compile() {
        for name in PRESETS {
            let p = PreTokenizer::from_name(name).unwrap();
            assert_eq!(p.pieces("Hello world 123").concat(), "Hello world 123");
        }
        assert!(PreTokenizer::from_name("regex:(unclosed").is_err());
    }

    #[test]
    fn unknown_presets_are_errors_with_a_suggestion() {
        for (name, suggestion) in [("gtp2", Some("gpt2")), ("cl100", Some("cl100k")), ("GPT2", Some("gpt2")),
                                   ("ja_digits1", Some("ja-digits1")), ("o200", Some("o200k")), (r"\s+", None), ("x", None)] {
            match PreTokenizer::from_name(name) {
                Err(Error::UnknownPreset { name: n, suggestion: s }) => assert_eq!((n.as_str(), s), (name, suggestion)),
                other => panic!("{name}: expected UnknownPreset, got {other:?}"),
            }
        }
        let message = PreTokenizer::from_name("gtp2").unwrap_err().to_string();
        assert!(message.contains("'gtp2' (did you mean 'gpt2'? presets: gpt2, cl100k"), "{message}");
        assert!(message.contains("regex:<pattern>"), "{message}");
    }

    #[test]
    fn custom_patterns_take_the_regex_prefix_and_name_round_trips() {
        let p = PreTokenizer::from_name(r"regex:\d+").unwrap();
        assert_eq!(p.pieces("ab12"), vec!["ab", "12"]);
        assert_eq!(p.name(), r"regex:\d+");
        assert_eq!(PreTokenizer::from_name(&p.name()).unwrap().name(), p.name());
        // A preset's own pattern spelt out is still that preset.
        assert_eq!(PreTokenizer::from_name(&format!("regex:{CL100K_PATTERN}")).unwrap().name(), "cl100k");
        assert!(matches!(PreTokenizer::from_name("regex:"), Err(Error::Regex { .. })));
    }
}
