//! Property tests of the core invariants, on small fixtures built here (no shared data needed).

use proptest::prelude::*;
use tokenizer_rs::pretokenize::{ja_pattern, PreTokenizer, GPT2_PATTERN};
use tokenizer_rs::{hf_json, AllowedSpecial, TrainConfig, Tokenizer, WordCounts};

const CORPUS: &str = "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?\n\
    吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n\
    Emoji 😀👍🏽, combining e\u{301}, tabs\tand   spaces\r\n<|endoftext|>日本語のテキスト\n";

fn trained(pretokenizer: &str) -> Tokenizer {
    let mut counts = WordCounts::new(PreTokenizer::from_name(pretokenizer).unwrap(), None);
    let seqs: Vec<String> = CORPUS.lines().map(|l| l.repeat(3)).collect();
    counts.add_sequences(&seqs);
    let cfg = TrainConfig {
        vocab_size: 600,
        min_frequency: 0,
        special_tokens: vec!["<|endoftext|>".into()],
        max_token_length: None,
        show_progress: false,
    };
    Tokenizer::train(&counts, &cfg, None, PreTokenizer::from_name(pretokenizer).unwrap()).unwrap()
}

/// Text drawn from a mix of scripts, spaces, punctuation and look-alikes of special tokens.
fn text_strategy() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        "[a-zA-Z']{1,8}",
        "[ \t\n\r\u{3000}\u{a0}]{1,6}",
        "[0-9]{1,5}",
        "[、。「」『』！？…・ー]{1,3}",
        "[ 　]{0,1}[「『]{0,1}[一-龯々〇]{1,3}[ぁ-ん]{0,4}[、。」』]{0,3}",
        "[ァ-ヶー]{1,5}",
        "[ｱ-ﾝ０-９Ａ-Ｚ]{1,4}",
        "[ぁ-んァ-ン一-龯]{1,10}",
        "[😀👍🏽\u{301}\u{200d}\u{fe0f}]{1,3}",
        Just("<|endoftext|>".to_string()),
        Just("<|endo".to_string()),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    proptest::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn gpt2_scanner_equals_the_regex(text in text_strategy()) {
        let re = fancy_regex::Regex::new(GPT2_PATTERN).unwrap();
        let expected: Vec<&str> = re.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
        let ours = PreTokenizer::from_name("gpt2").unwrap().pieces(&text);
        prop_assert_eq!(ours, expected);
    }

    #[test]
    fn ja_scanner_equals_its_regex(text in text_strategy()) {
        for max_digits in [3u8, 1] {
            let re = fancy_regex::Regex::new(&ja_pattern(max_digits)).unwrap();
            let expected: Vec<&str> = re.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
            let name = if max_digits == 3 { "ja" } else { "ja-digits1" };
            let ours = PreTokenizer::from_name(name).unwrap().pieces(&text);
            prop_assert_eq!(ours, expected);
        }
    }

    #[test]
    fn decode_inverts_encode(text in text_strategy()) {
        for preset in ["gpt2", "cl100k", "o200k", "ja", "ja-isolated"] {
            let tok = trained(preset);
            let ids = tok.encode(&text, &AllowedSpecial::All);
            prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), text.as_bytes().to_vec());
            let ordinary = tok.encode(&text, &AllowedSpecial::None);
            prop_assert_eq!(tok.decode_bytes(&ordinary).unwrap(), text.as_bytes().to_vec());
        }
    }

    #[test]
    fn long_pieces_round_trip(word in "[a-zあ-お]{50,400}") {
        // No split points: one piece, long enough for the heap path.
        let tok = trained("gpt2");
        let ids = tok.encode(&word, &AllowedSpecial::None);
        prop_assert_eq!(tok.decode(&ids).unwrap(), word);
    }
}

#[test]
fn saved_json_reloads_identically() {
    for preset in ["gpt2", "cl100k", "o200k", "ja", "ja-digits1", "ja-isolated"] {
        let tok = trained(preset);
        let json = hf_json::to_json(&tok).to_string();
        let back = hf_json::from_json_str(&json, "test").unwrap();
        assert_eq!(back.pretokenizer.name(), preset);
        assert_eq!(hf_json::to_json(&back).to_string(), json);
        for line in CORPUS.lines() {
            assert_eq!(back.encode(line, &AllowedSpecial::All), tok.encode(line, &AllowedSpecial::All));
        }
    }
}

#[test]
fn training_is_independent_of_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| hf_json::to_json(&trained("gpt2")).to_string())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn file_errors_name_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"fine line\n\xff\xfe broken\n").unwrap();
    let mut counts = WordCounts::new(PreTokenizer::from_name("gpt2").unwrap(), None);
    let err = counts.add_file(&bad, None).unwrap_err().to_string();
    assert!(err.contains("bad.txt") && err.contains("byte offset 10"), "{err}");
    let missing = dir.path().join("missing.txt");
    let err = counts.add_file(&missing, None).unwrap_err().to_string();
    assert!(err.contains("missing.txt"), "{err}");
}
