//! Unicode normalizers, applied before pre-tokenization at train and encode time.
//! Stored in tokenizer.json as HF's `NFC` / `NFKC` normalizers so HF reproduces them.

use std::borrow::Cow;
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalizer {
    Nfc,
    Nfkc,
}

impl Normalizer {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "nfc" => Some(Normalizer::Nfc),
            "nfkc" => Some(Normalizer::Nfkc),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Normalizer::Nfc => "nfc",
            Normalizer::Nfkc => "nfkc",
        }
    }

    /// HF's normalizer `type` in tokenizer.json.
    pub fn hf_type(&self) -> &'static str {
        match self {
            Normalizer::Nfc => "NFC",
            Normalizer::Nfkc => "NFKC",
        }
    }

    pub fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        // The quick check skips the allocation for text that is already normalized (most of it).
        match self {
            Normalizer::Nfc => match is_nfc_quick(text.chars()) {
                IsNormalized::Yes => Cow::Borrowed(text),
                _ => Cow::Owned(text.nfc().collect()),
            },
            Normalizer::Nfkc => match is_nfkc_quick(text.chars()) {
                IsNormalized::Yes => Cow::Borrowed(text),
                _ => Cow::Owned(text.nfkc().collect()),
            },
        }
    }
}

pub fn normalize_opt<'a>(normalizer: Option<Normalizer>, text: &'a str) -> Cow<'a, str> {
    match normalizer {
        Some(n) => n.normalize(text),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfkc_folds_japanese_compatibility_forms() {
        let n = Normalizer::Nfkc;
        assert_eq!(n.normalize("ＡＢＣ１２３"), "ABC123");
        assert_eq!(n.normalize("ｶﾀｶﾅ"), "カタカナ");
        assert_eq!(n.normalize("㍻"), "平成");
        assert_eq!(n.normalize("a\u{3000}b"), "a b");
        assert!(matches!(n.normalize("plain ascii"), Cow::Borrowed(_)));
    }

    #[test]
    fn nfc_composes() {
        assert_eq!(Normalizer::Nfc.normalize("e\u{301}"), "\u{e9}");
        assert_eq!(Normalizer::Nfc.normalize("ｶ"), "ｶ");
    }
}
