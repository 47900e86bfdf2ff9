//! GPT-2's reversible byte <-> printable-character map, as used by HF's `ByteLevel` components.
//!
//! Printable Latin-1 bytes map to themselves; the other 68 bytes are shifted to U+0100.. in byte
//! order, so every token string in a tokenizer.json is printable and whitespace-free.

use std::sync::OnceLock;

struct Tables {
    byte_to_char: [char; 256],
    /// Indexed by code point; only U+0000..U+0143 can be byte-level characters.
    char_to_byte: [i16; 0x144],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = [-1i16; 0x144];
        let mut shifted = 0u32;
        for b in 0u32..256 {
            let cp = if printable(b) {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            let c = char::from_u32(cp).expect("byte-level code points are valid");
            byte_to_char[b as usize] = c;
            char_to_byte[cp as usize] = b as i16;
        }
        Tables {
            byte_to_char,
            char_to_byte,
        }
    })
}

#[inline]
pub fn byte_to_char(b: u8) -> char {
    tables().byte_to_char[b as usize]
}

#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as usize;
    let t = tables();
    if cp < t.char_to_byte.len() && t.char_to_byte[cp] >= 0 {
        Some(t.char_to_byte[cp] as u8)
    } else {
        None
    }
}

/// The byte-level string of raw bytes (what a tokenizer.json stores as a token).
pub fn encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// Inverse of [`encode_bytes`]; `None` if some character is not a byte-level character.
pub fn decode_str(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// HF's ByteLevel decoder rule for one token: map every char back to its byte, or, when any char
/// is outside the byte-level alphabet (an added token such as "<|日本|>"), keep the raw UTF-8.
pub fn token_bytes(token: &str) -> Vec<u8> {
    decode_str(token).unwrap_or_else(|| token.as_bytes().to_vec())
}

/// All 256 byte-level characters in code-point order (HF's `ByteLevel.alphabet()` sorted).
pub fn alphabet_sorted() -> Vec<char> {
    let mut chars: Vec<char> = (0u8..=255).map(byte_to_char).collect();
    chars.sort_unstable();
    chars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_every_byte() {
        for b in 0u8..=255 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn token_bytes_falls_back_to_utf8() {
        assert_eq!(token_bytes("Ġhello"), b" hello".to_vec());
        assert_eq!(token_bytes("<|日本|>"), "<|日本|>".as_bytes().to_vec());
    }
}
