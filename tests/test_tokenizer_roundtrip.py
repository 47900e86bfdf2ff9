"""Round trips: decode(encode(s)) == s for arbitrary text (hypothesis), tokenizer.json save/load
through ours, HF `tokenizers` and `transformers`, determinism across runs and thread counts, and
no quadratic cliff on megabyte-long pre-tokens."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
import unicodedata

import pytest
from conftest import CL100K_PAT, MULTILINGUAL_TEXT, hf_merges, hf_train
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokenizer_rs import Tokenizer

HYPO = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that stress the pre-tokenizer, the special-token matcher and the byte-level mapping.
PIECES = [
    "<|endoftext|>", "<|endo", "endoftext|>", "<|", "|>", "<pad>", "'s", "'S", "'ll", "'re", "''", "'",
    " ", "  ", " " * 40, "\t", "\n", "\n\n", "\r\n", "\r", "\x0b\x0c", "\x85", "\u2028", "\u3000",
    "\u00a0", "\u200b", "\ufeff", "\x00", "\x1f", "\x7f", "😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "e\u0301",
    "\u0301", "日本語", "ｶﾀｶﾅ", "ＡＢＣ１２３", "𠮷", "Ⅻ", "١٢٣", "x²", "ﬁ", "Hello", "world", "123456",
    "「かぎ」。", "『二重』、", "ー", "ｰ", "々", "〆", "」』、。",
]


def text_strategy(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(
        st.one_of(
            st.text(chars, max_size=20),
            st.sampled_from(PIECES),
            st.text(st.sampled_from(" \t\n\r\u3000\u00a0"), min_size=1, max_size=30),
            st.text(st.characters(min_codepoint=0x3040, max_codepoint=0x30FF), max_size=10),  # kana
            st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=10),  # CJK
            st.text(st.characters(categories=["Mn", "Me", "Mc"]), max_size=5),  # combining marks
            st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=5),
        ),
        max_size=12,
    ).map("".join)


# Text from every plane (lone surrogates excluded: they cannot be encoded to UTF-8).
broad_text = text_strategy(st.characters(codec="utf-8"))
# Only code points assigned in Python's Unicode database (14.0). Normalization of code points
# assigned later (e.g. U+0897, a combining mark new in Unicode 16) legitimately differs between
# Unicode versions: ours reorders "\u0897\u0316", HF's older tables leave it alone.
assigned_text = text_strategy(st.characters(codec="utf-8", exclude_categories=["Cs", "Co", "Cn"]))


def check_roundtrip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text
    assert "".join(tok.pre_tokenize(text)) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


# ---------------------------------------------------------------------------- hypothesis


@HYPO
@given(text=broad_text)
def test_roundtrip_small_trained(small_tokenizer, text):
    check_roundtrip(small_tokenizer, text)


@pytest.mark.data
@HYPO
@given(text=broad_text)
def test_roundtrip_gpt2(gpt2_ours, text):
    check_roundtrip(gpt2_ours, text)


@pytest.mark.data
@HYPO
@given(text=broad_text)
def test_gpt2_matches_hf_and_tiktoken_on_arbitrary_text(gpt2_ours, gpt2_hf, gpt2_tiktoken, text):
    expected = gpt2_tiktoken.encode(text, allowed_special="all")
    assert gpt2_ours.encode(text) == expected
    assert gpt2_hf.encode(text).ids == expected
    assert gpt2_ours.encode_ordinary(text) == gpt2_tiktoken.encode_ordinary(text)


@pytest.fixture(scope="module", params=["cl100k", "ja"])
def regex_pair(request):
    """Ours and HF trained identically with a regex split (ours: fancy-regex or the ja scanner,
    HF: Oniguruma running the pattern ours writes to tokenizer.json)."""
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    ours = Tokenizer.train(iter(texts), 600, pretokenizer=request.param, show_progress=False)
    pattern = json.loads(ours.to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert request.param != "cl100k" or pattern == CL100K_PAT
    ref = hf_train(texts, 600, pattern=pattern, from_iterator=True)
    assert ours.get_vocab() == ref.get_vocab() and ours.merges == hf_merges(ref)
    return ours, ref


@HYPO
@given(text=broad_text)
def test_regex_split_matches_hf_on_arbitrary_text(regex_pair, text):
    ours, ref = regex_pair
    assert ours.encode(text) == ref.encode(text).ids
    check_roundtrip(ours, text)


@pytest.fixture(scope="module")
def nfkc_pair():
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    ours = Tokenizer.train(iter(texts), 600, normalizer="nfkc", show_progress=False)
    ref = hf_train(texts, 600, normalizer="nfkc", from_iterator=True)
    assert ours.get_vocab() == ref.get_vocab() and ours.merges == hf_merges(ref)
    return ours, ref


@HYPO
@given(text=assigned_text)
def test_nfkc_matches_hf_on_arbitrary_text(nfkc_pair, text):
    ours, ref = nfkc_pair
    ids = ours.encode(text)
    # Special tokens are matched in the raw text; the text between them is normalized (as in HF).
    expected = "<|endoftext|>".join(unicodedata.normalize("NFKC", part) for part in text.split("<|endoftext|>"))
    assert ours.decode(ids) == expected
    # HF's NFKC tables are older than CPython's (Unicode 14): e.g. "\u0898\u0316" (U+0898 is new in
    # Unicode 14) is left unordered by HF. Compare ids only where the two references agree.
    assume(ref.normalizer.normalize_str(text) == unicodedata.normalize("NFKC", text))
    assert ids == ref.encode(text).ids


# ------------------------------------------------------------------- tokenizer.json round trip

PROBES = [
    MULTILINGUAL_TEXT,
    "ＡＢＣ１２３ ｶﾀｶﾅ　㍻ ﬁne <|endoftext|> tail",
    "It's   spaced\t\tout\r\n\r\n  and 1234567 numbers, don't we'LL?",
    "<|endoftext|><|endoftext|>x<|endo",
    "",
]


def trained(preset: str, normalizer: str | None) -> Tokenizer:
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    return Tokenizer.train(iter(texts), 700, pretokenizer=preset, normalizer=normalizer, show_progress=False)


@pytest.mark.parametrize(
    ("preset", "normalizer"), [("gpt2", None), ("cl100k", None), ("o200k", None), ("ja", None), ("gpt2", "nfkc"), ("cl100k", "nfc")]
)
def test_saved_file_loads_in_hf_and_transformers(tmp_path, preset, normalizer):
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    ours = trained(preset, normalizer)
    path = tmp_path / "tokenizer.json"
    ours.save(path)
    hf_tok = HFTokenizer.from_file(str(path))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert hf_tok.get_vocab() == ours.get_vocab()
    assert hf_merges(hf_tok) == ours.merges
    for text in PROBES:
        ids = ours.encode(text)
        assert hf_tok.encode(text).ids == ids, text
        assert fast(text)["input_ids"] == ids, text
        assert hf_tok.decode(ids, skip_special_tokens=False) == ours.decode(ids)
    reloaded = Tokenizer.from_file(path)
    assert (reloaded.pretokenizer, reloaded.normalizer) == (preset, normalizer)


@pytest.mark.parametrize("merge_format", ["pairs", "strings"])
@pytest.mark.parametrize("pattern", [None, CL100K_PAT], ids=["bytelevel", "cl100k"])
def test_we_load_hf_saved_file(tmp_path, merge_format, pattern):
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    ref = hf_train(texts, 700, special_tokens=["<|endoftext|>", "<pad>"], pattern=pattern, from_iterator=True)
    data = json.loads(ref.to_str())
    if merge_format == "strings":  # the pre-0.20 format: "a b"
        data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
        assert all(isinstance(m, str) for m in data["model"]["merges"])
    else:
        assert all(isinstance(m, list) for m in data["model"]["merges"])
    path = tmp_path / "hf_tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    from tokenizers import Tokenizer as HFTokenizer

    hf_loaded = HFTokenizer.from_file(str(path))
    ours = Tokenizer.from_file(path)
    assert ours.get_vocab() == ref.get_vocab()
    assert ours.merges == hf_merges(ref)
    assert ours.special_tokens == ["<|endoftext|>", "<pad>"]
    for text in PROBES + ["<pad>x<pad>"]:
        assert ours.encode(text) == ref.encode(text).ids == hf_loaded.encode(text).ids, text
    assert Tokenizer.from_str(path.read_text(encoding="utf-8")).to_str() == ours.to_str()


def test_hf_file_with_normalized_added_tokens(tmp_path):
    """HF matches added tokens with "normalized": true in the normalized text. Ours must do the
    same (or refuse the file naming added_tokens[i].normalized), never encode differently."""
    from tokenizers import AddedToken

    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    ref = hf_train(texts, 500, normalizer="nfkc", from_iterator=True)
    ref.add_tokens(["ＡＢ", "カタ"])  # non-special added tokens: normalized=True by default
    ref.add_special_tokens([AddedToken("<ＳＰ>", normalized=True, special=True)])
    assert [t["normalized"] for t in json.loads(ref.to_str())["added_tokens"]] == [False, True, True, True]
    try:
        ours = Tokenizer.from_str(ref.to_str())
    except ValueError as e:
        assert "added_tokens" in str(e) and "normalized" in str(e), str(e)
        return
    for text in ["xＡＢy AB", "カタ ｶﾀ", "<ＳＰ> <SP>"]:
        assert ours.encode(text) == ref.encode(text).ids, text


@pytest.mark.parametrize("preset", ["gpt2", "cl100k", "o200k"])
def test_to_str_is_stable_across_save_and_load(tmp_path, preset):
    ours = trained(preset, "nfkc" if preset == "o200k" else None)
    first = ours.to_str()
    ours.save(tmp_path / "a.json")
    loaded = Tokenizer.from_file(tmp_path / "a.json")
    assert loaded.to_str() == first
    loaded.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    ours.save(str(tmp_path / "pretty.json"), pretty=True)
    assert (tmp_path / "pretty.json").read_text(encoding="utf-8") != first  # really pretty-printed
    assert Tokenizer.from_file(tmp_path / "pretty.json").to_str() == first
    assert Tokenizer.from_str(first).to_str() == first
    clone = pickle.loads(pickle.dumps(ours))
    assert clone.to_str() == first
    assert clone.encode(MULTILINGUAL_TEXT) == ours.encode(MULTILINGUAL_TEXT)


@pytest.mark.data
def test_gpt2_json_round_trip(tmp_path, gpt2_ours, gpt2_ours_openai, gpt2_hf, read_text):
    # The shared gpt2 tokenizer.json is the old HF format (string merges, no model.type).
    gpt2_ours.save(tmp_path / "gpt2.json")
    gpt2_ours_openai.save(tmp_path / "gpt2_openai.json")
    saved = {k: json.loads((tmp_path / f"{k}.json").read_text(encoding="utf-8")) for k in ("gpt2", "gpt2_openai")}
    assert saved["gpt2"]["model"] == saved["gpt2_openai"]["model"]
    assert saved["gpt2"]["pre_tokenizer"] == saved["gpt2_openai"]["pre_tokenizer"]
    from tokenizers import Tokenizer as HFTokenizer

    text = read_text("the-verdict.txt") + read_text("tinystories_sample.txt")
    expected = gpt2_hf.encode(text).ids
    for k in saved:
        assert HFTokenizer.from_file(str(tmp_path / f"{k}.json")).encode(text).ids == expected
        assert Tokenizer.from_file(tmp_path / f"{k}.json").to_str() == (tmp_path / f"{k}.json").read_text("utf-8")
    assert gpt2_ours.encode(text) == expected


# ------------------------------------------------------------------------------ determinism

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from tokenizer_rs import Tokenizer
    files, out = sys.argv[1].split(","), sys.argv[2]
    Tokenizer.train(files, 5000, min_frequency=2, show_progress=False).save(out + "_files.json")
    texts = [l for f in files for l in open(f, encoding="utf-8").read().split("\\n\\n")]
    Tokenizer.train(iter(texts), 5000, show_progress=False).save(out + "_iter.json")
    """
)


@pytest.mark.data
@pytest.mark.slow
def test_training_is_deterministic_across_runs_and_threads(tmp_path, data_dir, aozora_slice):
    files = [str(aozora_slice), str(data_dir / "tinyshakespeare.txt")]
    outputs = {}
    for threads in ("1", "2"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        out = str(tmp_path / f"t{threads}")
        subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, ",".join(files), out], env=env, check=True, timeout=300)
        outputs[threads] = {k: open(f"{out}_{k}.json", "rb").read() for k in ("files", "iter")}
    assert outputs["1"]["files"] == outputs["2"]["files"]
    assert outputs["1"]["iter"] == outputs["2"]["iter"]
    in_process = [Tokenizer.train(files, 5000, min_frequency=2, show_progress=False).to_str() for _ in range(2)]
    assert in_process[0] == in_process[1] == outputs["2"]["files"].decode("utf-8")
    assert len(json.loads(in_process[0])["model"]["vocab"]) == 5000


# ------------------------------------------------------------------- no quadratic cliff

JA_LETTERS = "".join(chr(c) for c in range(0x3041, 0x3097)) + "漢字日本語文章猫名前見当生薄暗所泣" + "カタカナ"


def japanese_megabyte(seed: int = 0) -> str:
    rng = random.Random(seed)
    text = "".join(rng.choices(JA_LETTERS, k=350_000))
    return text.encode("utf-8")[:1_000_000].decode("utf-8", "ignore")


@pytest.fixture(scope="module")
def cliff_tokenizer():
    """Trained on text that has runs of "a" and unpunctuated Japanese, so long pieces do merge."""
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) + ["a" * k for k in range(1, 70)]
    ja = japanese_megabyte(7)
    texts += [ja[i : i + 500] for i in range(0, 20_000, 500)]
    return Tokenizer.train(iter(texts), 1000, show_progress=False)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["a", "japanese"])
def test_megabyte_single_pretoken_trained(cliff_tokenizer, kind):
    tok = cliff_tokenizer
    text = "a" * 1_000_000 if kind == "a" else japanese_megabyte()
    assert len(tok.pre_tokenize(text)) == 1  # really one giant pre-token
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8")) // 2  # merges were applied
    from tokenizers import Tokenizer as HFTokenizer

    assert HFTokenizer.from_str(tok.to_str()).encode(text).ids == ids


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["a", "japanese", "aozora"])
def test_megabyte_single_pretoken_gpt2(gpt2_ours, gpt2_hf, read_text, kind):
    if kind == "a":
        text = "a" * 1_000_000
    elif kind == "japanese":
        text = japanese_megabyte(1)
    else:  # real Japanese with every non-letter removed
        raw = read_text("aozora/aozora_ja.txt")[:600_000]
        text = "".join(c for c in raw if unicodedata.category(c).startswith("L"))
        text = text.encode("utf-8")[:1_000_000].decode("utf-8", "ignore")
    assert len(gpt2_ours.pre_tokenize(text)) == 1
    ids = gpt2_ours.encode(text)
    assert gpt2_ours.decode(ids) == text
    assert ids == gpt2_hf.encode(text).ids
