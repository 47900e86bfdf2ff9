//! Character classes for the hand-written GPT-2 pre-tokenizer: letter (\p{L}), number (\p{N}),
//! white space (\s) or other. The ranges come from `regex-syntax`, the same tables the `regex`
//! crate (and so tiktoken's fancy-regex) uses, so the scanner and the regex agree on every char.

use regex_syntax::hir::{Class, HirKind};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CharClass {
    Letter = 0,
    Number = 1,
    Space = 2,
    Other = 3,
}

struct ClassTable {
    /// Class of every code point in the Basic Multilingual Plane.
    bmp: Vec<CharClass>,
    /// Sorted, non-overlapping (start, end inclusive, class) ranges above U+FFFF.
    astral: Vec<(u32, u32, CharClass)>,
}

fn unicode_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("built-in class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("unexpected HIR for {pattern}: {other:?}"),
    }
}

fn table() -> &'static ClassTable {
    static TABLE: OnceLock<ClassTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut bmp = vec![CharClass::Other; 0x10000];
        let mut astral = Vec::new();
        for (pattern, class) in [
            (r"\p{L}", CharClass::Letter),
            (r"\p{N}", CharClass::Number),
            (r"\s", CharClass::Space),
        ] {
            for (start, end) in unicode_ranges(pattern) {
                for cp in start..=end.min(0xFFFF) {
                    bmp[cp as usize] = class;
                }
                if end > 0xFFFF {
                    astral.push((start.max(0x10000), end, class));
                }
            }
        }
        astral.sort_unstable_by_key(|r| r.0);
        ClassTable { bmp, astral }
    })
}

#[inline]
pub fn class_of(c: char) -> CharClass {
    let cp = c as u32;
    let t = table();
    if cp < 0x10000 {
        t.bmp[cp as usize]
    } else {
        match t.astral.binary_search_by(|r| {
            if r.1 < cp {
                std::cmp::Ordering::Less
            } else if r.0 > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => t.astral[i].2,
            Err(_) => CharClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of('a'), CharClass::Letter);
        assert_eq!(class_of('日'), CharClass::Letter);
        assert_eq!(class_of('ア'), CharClass::Letter);
        assert_eq!(class_of('7'), CharClass::Number);
        assert_eq!(class_of('Ⅻ'), CharClass::Number);
        assert_eq!(class_of('\u{3000}'), CharClass::Space);
        assert_eq!(class_of('\n'), CharClass::Space);
        assert_eq!(class_of('、'), CharClass::Other);
        assert_eq!(class_of('😀'), CharClass::Other);
        assert_eq!(class_of('𠮷'), CharClass::Letter);
        assert_eq!(class_of('\u{301}'), CharClass::Other);
    }
}
