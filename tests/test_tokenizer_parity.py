"""Differential tests: tokenizer_rs against Hugging Face `tokenizers` and `tiktoken`.

Training parity: same vocabulary (token -> id) and the same merges in the same order as HF's
BpeTrainer. Encoding parity: the same ids as HF (and, for GPT-2, as tiktoken) on every corpus,
line by line and as whole documents.
"""

from __future__ import annotations

import json

import pytest
from conftest import CL100K_PAT, MULTILINGUAL_TEXT, hf_merges, hf_train

from tokenizer_rs import Tokenizer

EOT = ["<|endoftext|>"]
MULTI = ["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>", "<|日本語|>"]

# tiktoken's o200k_base pattern (tiktoken_ext/openai_public.py), written out independently.
O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

ENGLISH_FILES = [
    "the-verdict.txt",
    "tinystories_sample.txt",
    "tinyshakespeare.txt",
    "SMSSpamCollection.tsv",
    "instruction-data.json",
    "gutenberg/pg11_alice_in_wonderland.txt",
    "gutenberg/pg84_frankenstein.txt",
    "gutenberg/pg1661_sherlock_holmes.txt",
    "gutenberg/pg1342_pride_and_prejudice.txt",
    "gutenberg/pg2701_moby_dick.txt",
]
JAPANESE_FILES = [
    "aozora/rashomon_aozora_raw.txt",  # CRLF line endings
    "jglue/jnli-v1.3-valid.json",
    "jglue/jcommonsenseqa-v1.3-valid.json",
]
BIG = {"tinyshakespeare.txt", "gutenberg/pg2701_moby_dick.txt", "gutenberg/pg1342_pride_and_prejudice.txt"}


def assert_same_model(ours: Tokenizer, hf_tok, special_tokens: list[str]) -> None:
    ours_vocab, hf_vocab = ours.get_vocab(), hf_tok.get_vocab()
    missing = sorted(set(hf_vocab) - set(ours_vocab))[:10]
    extra = sorted(set(ours_vocab) - set(hf_vocab))[:10]
    assert ours_vocab == hf_vocab, f"vocab differs: missing {missing}, extra {extra}"
    ours_merges, ref_merges = ours.merges, hf_merges(hf_tok)
    if ours_merges != ref_merges:
        i = next((i for i, (a, b) in enumerate(zip(ours_merges, ref_merges)) if a != b), None)
        i = min(len(ours_merges), len(ref_merges)) if i is None else i
        pytest.fail(
            f"merges differ at rank {i} (ours {len(ours_merges)}, HF {len(ref_merges)}): "
            f"ours {ours_merges[i:i + 3]} vs HF {ref_merges[i:i + 3]}"
        )
    assert ours.vocab_size == len(hf_vocab)
    assert ours.special_tokens == special_tokens
    assert [ours.token_to_id(s) for s in special_tokens] == [hf_vocab[s] for s in special_tokens]


def case(name, vocab_size, min_frequency, specials, *marks):
    return pytest.param(
        name, vocab_size, min_frequency, specials,
        id=f"{name.split('/')[-1]}-v{vocab_size}-mf{min_frequency}-sp{len(specials)}",
        marks=[pytest.mark.data, *marks],
    )


# ------------------------------------------------------------------------ training parity

TRAIN_CASES = [
    case("the-verdict.txt", 300, 0, EOT),
    case("the-verdict.txt", 1000, 0, EOT),
    case("the-verdict.txt", 1000, 2, MULTI),
    case("the-verdict.txt", 5000, 0, []),  # more than the corpus can fill
    case("tinystories_sample.txt", 300, 0, EOT),
    case("tinystories_sample.txt", 1000, 2, MULTI),
    case("tinyshakespeare.txt", 1000, 5, EOT),
    case("tinyshakespeare.txt", 5000, 0, MULTI),
    case("tinyshakespeare.txt", 20000, 2, EOT),
    case("gutenberg/pg1342_pride_and_prejudice.txt", 20000, 0, EOT),
    case("gutenberg/pg11_alice_in_wonderland.txt", 5000, 5, MULTI),
    case("AOZORA", 5000, 2, EOT, pytest.mark.slow),
    case("AOZORA", 20000, 0, MULTI, pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "vocab_size", "min_frequency", "specials"), TRAIN_CASES)
def test_train_files_matches_hf(data_dir, aozora_slice, name, vocab_size, min_frequency, specials):
    path = aozora_slice if name == "AOZORA" else data_dir / name
    ours = Tokenizer.train(
        str(path), vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False
    )
    ref = hf_train([path], vocab_size, min_frequency=min_frequency, special_tokens=specials)
    assert_same_model(ours, ref, specials)
    assert len(ours.merges) > 0


@pytest.mark.data
def test_train_several_files_matches_hf(data_dir):
    paths = [data_dir / "the-verdict.txt", data_dir / "gutenberg/pg11_alice_in_wonderland.txt"]
    ours = Tokenizer.train(paths, 3000, special_tokens=MULTI, show_progress=False)  # list of PathLike
    ref = hf_train(paths, 3000, special_tokens=MULTI)
    assert_same_model(ours, ref, MULTI)
    again = Tokenizer.train(tuple(str(p) for p in paths), 3000, special_tokens=MULTI, show_progress=False)
    assert again.to_str() == ours.to_str()


@pytest.mark.data
@pytest.mark.parametrize("min_frequency", [0, 3])
def test_train_from_iterator_matches_hf(read_text, aozora_heldout, min_frequency):
    # Multi-line sequences: paragraphs of English, whole works of Japanese.
    texts = read_text("the-verdict.txt").split("\n\n") + aozora_heldout.split("\n\n")
    texts += read_text("tinystories_sample.txt").splitlines(keepends=True)
    ours = Tokenizer.train(iter(texts), 4000, min_frequency=min_frequency, show_progress=False)
    ref = hf_train(texts, 4000, min_frequency=min_frequency, from_iterator=True)
    assert_same_model(ours, ref, EOT)
    # A generator is an iterator too.
    gen = Tokenizer.train((t for t in texts), 4000, min_frequency=min_frequency, show_progress=False)
    assert gen.to_str() == ours.to_str()


def test_train_from_iterator_matches_hf_small():
    texts = MULTILINGUAL_TEXT.split("\n") * 4
    ours = Tokenizer.train(iter(texts), 700, special_tokens=MULTI, show_progress=False)
    ref = hf_train(texts, 700, special_tokens=MULTI, from_iterator=True)
    assert_same_model(ours, ref, MULTI)


@pytest.mark.parametrize(
    "specials",
    [["<s>", "<s>"], [""], ["a", "<s>"], ["Ġ", "hello"], ["<|endoftext|>", "<|endoftext|>x", "<|endo"]],
    ids=["duplicate", "empty", "byte-char", "bytelevel-char-and-word", "overlapping"],
)
def test_odd_special_tokens_match_hf(specials):
    texts = ["hello world a b <s> x <|endoftext|>x <|endo"] * 3 + MULTILINGUAL_TEXT.splitlines(keepends=True)
    ours = Tokenizer.train(iter(texts), 400, special_tokens=specials, show_progress=False)
    ref = hf_train(texts, 400, special_tokens=specials, from_iterator=True)
    assert ours.get_vocab() == ref.get_vocab()
    assert ours.merges == hf_merges(ref)
    for probe in ["hello <s> a world Ġ", "<|endoftext|>x<|endo<|endoftext|>", MULTILINGUAL_TEXT]:
        assert ours.encode(probe) == ref.encode(probe).ids, probe


# ------------------------------------------------------------ regex pre-tokenizers and NFKC


def test_cl100k_preset_pattern_is_cl100k():
    tok = Tokenizer.train(iter(["hello world"] * 3), 260, pretokenizer="cl100k", show_progress=False)
    pre = json.loads(tok.to_str())["pre_tokenizer"]
    assert pre["type"] == "Sequence"
    assert pre["pretokenizers"][0]["pattern"]["Regex"] == CL100K_PAT
    assert tok.pretokenizer == "cl100k"
    o200k = Tokenizer.train(iter(["hello world"] * 3), 260, pretokenizer="o200k", show_progress=False)
    assert json.loads(o200k.to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == O200K_PAT


@pytest.mark.data
@pytest.mark.parametrize(
    ("preset", "pattern"),
    [("cl100k", CL100K_PAT), ("o200k", O200K_PAT), ("ja", None), ("ja-isolated", None), ("ja-digits1", None)],
)
def test_regex_preset_training_and_encoding_match_hf(read_text, aozora_heldout, preset, pattern):
    """ja* have no outside spec: HF runs the regex from our tokenizer.json (Oniguruma) while we
    run a hand-written scanner, so the comparison still checks one against the other."""
    texts = read_text("tinyshakespeare.txt").splitlines(keepends=True)[:20000]
    texts += aozora_heldout.splitlines(keepends=True)[:600] + MULTILINGUAL_TEXT.splitlines(keepends=True)
    ours = Tokenizer.train(iter(texts), 3000, pretokenizer=preset, show_progress=False)
    assert ours.pretokenizer == preset
    if pattern is None:
        pattern = json.loads(ours.to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    ref = hf_train(texts, 3000, pattern=pattern, from_iterator=True)
    assert_same_model(ours, ref, EOT)
    heldout = read_text("gutenberg/pg84_frankenstein.txt")[:60000] + aozora_heldout[-30000:]
    assert ours.encode(heldout) == ref.encode(heldout).ids
    lines = heldout.splitlines(keepends=True)
    assert ours.encode_batch(lines) == [e.ids for e in ref.encode_batch(lines)]


def test_custom_regex_training_and_encoding_match_hf():
    pattern = r" ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"
    texts = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    ours = Tokenizer.train(iter(texts), 500, pretokenizer="regex:" + pattern, show_progress=False)
    assert ours.pretokenizer == "regex:" + pattern
    ref = hf_train(texts, 500, pattern=pattern, from_iterator=True)
    assert_same_model(ours, ref, EOT)
    probe = "Numbers 2024 and 日本語１２３ ok!!  \n"
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(pattern), "isolated")
    assert ours.pre_tokenize(probe) == [p for p, _ in split.pre_tokenize_str(probe)]
    assert ours.encode(probe) == ref.encode(probe).ids


NFKC_TEXT = [
    "全角のＡＢＣＤＥＦと数字１２３４５６７８９０、記号！？（）［］。\n",
    "半角カナｶﾀｶﾅﾃﾞｽ、ｱｲｳｴｵ。丸数字①②③と単位㍍㌔㍻、㈱。\n",
    "全角スペース　で　区切る　文章。ﾊﾟﾋﾟﾌﾟﾍﾟﾎﾟ。ｶﾞｷﾞｸﾞ。\n",
    "Ｈｅｌｌｏ　Ｗｏｒｌｄ！ｆｉ ligature ﬁ and ½ ¼ ² ™ ℃.\n",
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n",
]


@pytest.mark.parametrize("from_file", [False, True], ids=["iterator", "file"])
def test_nfkc_training_and_encoding_match_hf(tmp_path, from_file):
    texts = NFKC_TEXT * 5
    if from_file:
        path = tmp_path / "nfkc.txt"
        path.write_text("".join(texts), encoding="utf-8")
        ours = Tokenizer.train(path, 400, normalizer="nfkc", show_progress=False)
        ref = hf_train([path], 400, normalizer="nfkc")
    else:
        ours = Tokenizer.train(iter(texts), 400, normalizer="nfkc", show_progress=False)
        ref = hf_train(texts, 400, normalizer="nfkc", from_iterator=True)
    assert ours.normalizer == "nfkc"
    assert_same_model(ours, ref, EOT)
    # Full-width forms must not survive as tokens: NFKC folded them before counting.
    assert not any("Ａ" in tok or "１" in tok for tok in ref.get_vocab())
    probe = "ＡＢＣ１２３ ｶﾀｶﾅ　㍻ ﬁne<|endoftext|>ﾃﾞｽ"
    assert ours.encode(probe) == ref.encode(probe).ids
    assert ours.decode(ours.encode(probe)) == ref.decode(ref.encode(probe).ids, skip_special_tokens=False)


# --------------------------------------------------- encoding parity with trained tokenizers


@pytest.fixture(scope="module")
def trained_pair(data_dir, aozora_slice):
    paths = [data_dir / "gutenberg/pg1342_pride_and_prejudice.txt", aozora_slice]
    ours = Tokenizer.train(paths, 8000, special_tokens=MULTI, show_progress=False)
    ref = hf_train(paths, 8000, special_tokens=MULTI)
    assert_same_model(ours, ref, MULTI)
    return ours, ref


@pytest.mark.data
@pytest.mark.slow
def test_trained_encoding_matches_hf_on_heldout(trained_pair, read_text, aozora_heldout):
    ours, ref = trained_pair
    docs = {
        "frankenstein": read_text("gutenberg/pg84_frankenstein.txt"),
        "tinystories": read_text("tinystories_sample.txt"),
        "aozora-heldout": aozora_heldout,
        "rashomon-crlf": read_text("aozora/rashomon_aozora_raw.txt"),
        "jnli": read_text("jglue/jnli-v1.3-valid.json"),
        "specials": "<|im_start|>user\n日本語<|日本語|>text<pad><pad><|im_end|><|endoftext|>",
    }
    for name, doc in docs.items():
        assert ours.encode(doc) == ref.encode(doc).ids, name
        lines = doc.splitlines(keepends=True)
        ours_lines = ours.encode_batch(lines)
        ref_lines = [e.ids for e in ref.encode_batch(lines)]
        bad = next((i for i, (a, b) in enumerate(zip(ours_lines, ref_lines)) if a != b), None)
        assert bad is None, f"{name} line {bad}: {lines[bad]!r}"
        assert len(ours_lines) == len(ref_lines)
        assert ours.decode(ours.encode(doc)) == doc, name
        ids = ours.encode(doc[:5000])
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False), name


# ---------------------------------------------------------------------- GPT-2, four ways


@pytest.mark.data
def test_gpt2_models_agree(gpt2_ours, gpt2_ours_openai, gpt2_hf, gpt2_tiktoken, gpt2_paths):
    hf_vocab = gpt2_hf.get_vocab()
    assert len(hf_vocab) == 50257
    assert gpt2_ours.get_vocab() == hf_vocab
    assert gpt2_ours_openai.get_vocab() == hf_vocab
    bpe_lines = gpt2_paths["vocab_bpe"].read_text(encoding="utf-8").split("\n")[1:-1]
    ref_merges = [tuple(line.split(" ")) for line in bpe_lines]
    assert gpt2_ours.merges == hf_merges(gpt2_hf) == ref_merges
    assert gpt2_ours_openai.merges == ref_merges
    assert gpt2_ours.special_tokens == gpt2_ours_openai.special_tokens == ["<|endoftext|>"]
    for i in range(50257):
        assert gpt2_ours.token_bytes(i) == gpt2_tiktoken.decode_single_token_bytes(i), i
    assert gpt2_ours_openai.token_bytes(1000) == gpt2_tiktoken.decode_single_token_bytes(1000)


def gpt2_params():
    for name in ENGLISH_FILES + JAPANESE_FILES + ["AOZORA"]:
        marks = [pytest.mark.data] + ([pytest.mark.slow] if name in BIG or name == "AOZORA" else [])
        yield pytest.param(name, id=name.split("/")[-1], marks=marks)


@pytest.mark.parametrize("name", list(gpt2_params()))
def test_gpt2_encoding_matches_hf_and_tiktoken(
    name, read_text, aozora_slice, gpt2_ours, gpt2_ours_openai, gpt2_hf, gpt2_tiktoken
):
    text = aozora_slice.read_text(encoding="utf-8") if name == "AOZORA" else read_text(name)
    # Whole document.
    expected = gpt2_tiktoken.encode(text, allowed_special="all")
    ours = gpt2_ours.encode(text)
    assert ours == expected
    assert gpt2_hf.encode(text).ids == expected
    assert gpt2_ours_openai.encode(text) == expected
    assert gpt2_ours.decode(ours) == text
    assert gpt2_ours.decode_bytes(ours) == text.encode("utf-8")
    # Line by line.
    lines = text.splitlines(keepends=True)
    ours_lines = gpt2_ours.encode_batch(lines)
    ref_lines = gpt2_tiktoken.encode_batch(lines, allowed_special="all")
    bad = next((i for i, (a, b) in enumerate(zip(ours_lines, ref_lines)) if a != b), None)
    assert bad is None, f"line {bad}: {lines[bad]!r}"
    assert len(ours_lines) == len(lines)
    assert [e.ids for e in gpt2_hf.encode_batch(lines[:5000])] == ref_lines[:5000]
    assert [gpt2_ours.encode(t) for t in lines[:3000]] == ours_lines[:3000]
    assert gpt2_ours_openai.encode_batch(lines) == ours_lines


@pytest.mark.data
@pytest.mark.parametrize(("preset", "pattern"), [("cl100k", CL100K_PAT), ("o200k", O200K_PAT)])
def test_gpt2_vocab_with_regex_split_three_ways(gpt2_paths, read_text, preset, pattern):
    """The GPT-2 vocabulary behind a cl100k/o200k split: ours (fancy-regex), HF (Oniguruma), tiktoken."""
    import tiktoken
    import tiktoken.load
    from tokenizers import Tokenizer as HFTokenizer

    data = json.loads(gpt2_paths["tokenizer_json"].read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    ours = Tokenizer.from_str(json.dumps(data))
    assert ours.pretokenizer == preset
    ref = HFTokenizer.from_str(json.dumps(data))
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local files, cache nothing
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(gpt2_paths["vocab_bpe"]), str(gpt2_paths["encoder_json"]))
    finally:
        mp.undo()
    tk = tiktoken.Encoding(name=f"gpt2_{preset}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    for name in ["the-verdict.txt", "tinystories_sample.txt", "aozora/rashomon_aozora_raw.txt", "jglue/jnli-v1.3-valid.json"]:
        text = read_text(name)
        expected = tk.encode(text, allowed_special="all")
        assert ours.encode(text) == expected, name
        assert ref.encode(text).ids == expected, name
        lines = text.splitlines(keepends=True)
        assert ours.encode_batch(lines) == tk.encode_batch(lines, allowed_special="all"), name
        assert ours.decode(expected) == text


def test_allowed_special_none_object_means_none(small_tokenizer):
    """The stub allows ``allowed_special=None`` and python.rs maps a None object to "none", but PyO3
    turns an explicit None into the default ("all") before that branch can run."""
    text = "a<|endoftext|>b"
    assert small_tokenizer.encode(text, allowed_special=None) == small_tokenizer.encode(text, allowed_special="none")


@pytest.mark.data
def test_gpt2_special_token_modes(read_text, gpt2_ours, gpt2_hf, gpt2_tiktoken):
    text = read_text("tinystories_sample.txt")
    eot = 50256
    assert text.count("<|endoftext|>") >= 2
    every = gpt2_ours.encode(text)
    assert every.count(eot) == text.count("<|endoftext|>")
    assert every == gpt2_ours.encode(text, allowed_special="all")
    assert every == gpt2_ours.encode(text, allowed_special={"<|endoftext|>"})
    assert every == gpt2_hf.encode(text).ids
    plain = gpt2_tiktoken.encode(text, allowed_special=set(), disallowed_special=())
    assert eot not in plain
    assert gpt2_ours.encode(text, allowed_special="none") == plain
    assert gpt2_ours.encode(text, allowed_special=set()) == plain
    assert gpt2_ours.encode_ordinary(text) == gpt2_tiktoken.encode_ordinary(text) == plain
    lines = text.splitlines(keepends=True)
    assert gpt2_ours.encode_batch(lines, allowed_special="none") == [
        gpt2_ours.encode(t, allowed_special="none") for t in lines
    ]
    assert gpt2_ours.decode(plain) == gpt2_ours.decode(every) == text
    for probe in ["<|endoftext|><|endoftext|>", "<|endo", "x<|endoftext|", "<<|endoftext|>>", "<|ENDOFTEXT|>"]:
        assert gpt2_ours.encode(probe) == gpt2_tiktoken.encode(probe, allowed_special="all") == gpt2_hf.encode(probe).ids
