"""Japanese tokenizers: the `ja` presets, NFKC, and the char/word baselines, each checked against
Hugging Face `tokenizers` / `transformers` loading what we save (ids must be identical)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tokenizers
import transformers

from tokenizer_rs import Tokenizer

JA_TEXT = (
    "　吾輩は猫である。名前はまだ無い。\n"
    "「そうか。」と彼は言った。『羅生門』を読む。カタカナのテキスト、ひらがな。\n"
    "数字１２３と123456、Latin words and GPT-2 model. ㍻元年、ｶﾀｶﾅ。\n"
    "mixed日本語text\r\n絵文字😀と𠮷野家、異体字葛󠄀城。\u3000\u3000全角スペース\n"
)


def held_out_lines(text: str) -> tuple[str, list[str]]:
    """Works split by the blank line between them; every 10th (index % 10 == 5) is held out."""
    works = text.split("\n\n")
    train = "\n\n".join(w for i, w in enumerate(works) if i % 10 != 5)
    held = [line for i, w in enumerate(works) if i % 10 == 5 for line in w.split("\n") if line]
    return train, held


def save(tok: Tokenizer, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def aozora_split(data_dir: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    text = (data_dir / "aozora" / "aozora_ja.txt").read_text(encoding="utf-8")
    train, held = held_out_lines(text[: 2_000_000])
    path = tmp_path_factory.mktemp("aozora") / "train.txt"
    path.write_text(train, encoding="utf-8")
    return path, held


@pytest.mark.data
@pytest.mark.parametrize("preset", ["ja", "ja-digits1", "ja-isolated"])
def test_ja_presets_load_in_hf_with_identical_ids(preset, aozora_split, tmp_path):
    train, held = aozora_split
    tok = Tokenizer.train([str(train)], 4000, pretokenizer=preset, show_progress=False)
    path = save(tok, tmp_path, preset)
    hf = tokenizers.Tokenizer.from_file(str(path))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    sample = held[:300] + JA_TEXT.splitlines(keepends=True)
    ours = tok.encode_batch(sample)
    assert ours == [e.ids for e in hf.encode_batch(sample)]
    assert ours == [fast(s)["input_ids"] for s in sample]
    assert [tok.decode(ids) for ids in ours] == sample


@pytest.mark.data
def test_ja_split_keeps_okurigana_and_trailing_punctuation():
    tok = Tokenizer.train(iter([JA_TEXT]), 300, pretokenizer="ja", show_progress=False)
    assert tok.pre_tokenize("　吾輩は猫である。名前はまだ無い。") == ["　吾輩は", "猫である。", "名前はまだ", "無い。"]
    assert tok.pre_tokenize("「そうか。」と") == ["「そうか。」", "と"]
    assert tok.pre_tokenize("12345") == ["123", "45"]
    digits1 = Tokenizer.train(iter([JA_TEXT]), 300, pretokenizer="ja-digits1", show_progress=False)
    assert digits1.pre_tokenize("2024年") == ["2", "0", "2", "4", "年"]


def test_ja_round_trips_without_normalizer():
    tok = Tokenizer.train(iter([JA_TEXT] * 3), 600, pretokenizer="ja", show_progress=False)
    for line in JA_TEXT.splitlines(keepends=True):
        assert tok.decode(tok.encode(line)) == line
    assert "".join(tok.pre_tokenize(JA_TEXT)) == JA_TEXT


def test_nfkc_is_a_choice_and_matches_hf(tmp_path):
    import unicodedata

    plain = Tokenizer.train(iter([JA_TEXT]), 500, pretokenizer="ja", show_progress=False)
    nfkc = Tokenizer.train(iter([JA_TEXT]), 500, pretokenizer="ja", normalizer="nfkc", show_progress=False)
    assert plain.normalizer is None and nfkc.normalizer == "nfkc"
    text = "ＡＢＣ１２３ｶﾀｶﾅ㍻\u3000終"
    assert plain.decode(plain.encode(text)) == text
    assert nfkc.decode(nfkc.encode(text)) == unicodedata.normalize("NFKC", text) == "ABC123カタカナ平成 終"
    path = save(nfkc, tmp_path, "nfkc")
    assert json.loads(path.read_text())["normalizer"] == {"type": "NFKC"}
    hf = tokenizers.Tokenizer.from_file(str(path))
    for line in JA_TEXT.splitlines():
        assert nfkc.encode(line) == hf.encode(line).ids


def test_char_model_is_hf_wordlevel(tmp_path):
    tok = Tokenizer.train(iter([JA_TEXT]), 60, model="char", show_progress=False)
    assert tok.model == "char" and tok.vocab_size == 60
    vocab = tok.get_vocab()
    assert vocab["<|endoftext|>"] == 0 and vocab["<|unk|>"] == 1
    # The most frequent characters are kept: every kept char occurs at least as often as any dropped one.
    counts = {c: JA_TEXT.count(c) for c in set(JA_TEXT)}
    kept = [c for c in vocab if c in counts]
    dropped = [c for c in counts if c not in vocab]
    assert min(counts[c] for c in kept) >= max(counts[c] for c in dropped)
    ids = tok.encode("吾輩は😀")
    assert len(ids) == 4 and (ids[-1] == vocab["<|unk|>"]) == ("😀" not in vocab)
    path = save(tok, tmp_path, "char")
    model = json.loads(path.read_text())["model"]
    assert model["type"] == "WordLevel" and model["unk_token"] == "<|unk|>"
    hf = tokenizers.Tokenizer.from_file(str(path))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for line in JA_TEXT.splitlines():
        assert tok.encode(line) == hf.encode(line).ids == fast(line)["input_ids"]
    assert Tokenizer.from_file(str(path)).encode(JA_TEXT) == tok.encode(JA_TEXT)


def simple_tokenizer_v2_split(text: str) -> list[str]:
    """SimpleTokenizerV2's preprocessing (Raschka's book, chapter 2), written from its description."""
    return [item.strip() for item in re.split(r'([,.:;?_!"()\']|--|\s)', text) if item.strip()]


@pytest.mark.data
def test_word_model_matches_simple_tokenizer_v2(data_dir: Path, tmp_path):
    text = (data_dir / "the-verdict.txt").read_text(encoding="utf-8")
    tok = Tokenizer.train([str(data_dir / "the-verdict.txt")], 100_000, model="word", show_progress=False)
    words = simple_tokenizer_v2_split(text)
    assert tok.vocab_size == len(set(words)) + 2  # + <|endoftext|> and <|unk|>
    vocab = tok.get_vocab()
    sample = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough."
    ids = tok.encode(sample)
    assert ids == [vocab[w] for w in simple_tokenizer_v2_split(sample)]
    assert tok.decode(ids) == "I HAD always thought Jack Gisburn rather a cheap genius -- though a good fellow enough."
    assert tok.encode("Hello, do you like tea?")[0] == vocab["<|unk|>"]
    path = save(tok, tmp_path, "word")
    hf = tokenizers.Tokenizer.from_file(str(path))
    for line in text.splitlines()[:50]:
        assert tok.encode(line) == hf.encode(line).ids


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="model"):
        Tokenizer.train(iter(["abc"]), 100, model="unigram", show_progress=False)
    with pytest.raises(ValueError, match="pretokenizer"):
        Tokenizer.train(iter(["abc"]), 100, model="char", pretokenizer="ja", show_progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(iter(["abc"]), 1, model="word", show_progress=False)
