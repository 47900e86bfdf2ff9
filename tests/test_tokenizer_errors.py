"""Errors: every bad input raises an ordinary Python exception whose message names the thing at
fault (the id and its position, the file and byte offset, the JSON field), and no Rust panic
(pyo3_runtime.PanicException) or process abort ever crosses the FFI boundary."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tokenizer_rs import Tokenizer

CORPUS = ["hello world, hello there\n", "日本語のテキスト。\n", "numbers 123 4567\n"] * 3


def train(source, vocab_size=300, **kw):
    return Tokenizer.train(source, vocab_size, show_progress=False, **kw)


@pytest.fixture(scope="module")
def tok():
    return train(iter(CORPUS))


@pytest.fixture(scope="module")
def tok_json(tok):
    return json.loads(tok.to_str())


def expect_error(exc_types, *needles, call):
    """Run ``call``; it must raise one of ``exc_types`` (never a panic) naming every needle."""
    with pytest.raises(BaseException) as info:
        call()
    e = info.value
    assert type(e).__name__ != "PanicException", f"a Rust panic crossed the FFI: {e!r}"
    assert isinstance(e, exc_types), f"expected {exc_types}, got {type(e).__name__}: {e}"
    for needle in needles:
        assert needle in str(e), f"{needle!r} not in message {str(e)!r}"
    return e


# ------------------------------------------------------------------------------ decoding


def test_decode_out_of_range_names_id_and_position(tok):
    n = tok.vocab_size
    expect_error(ValueError, str(n), "position 2", call=lambda: tok.decode([1, 2, n, 3]))
    expect_error(ValueError, "123456", "position 0", call=lambda: tok.decode_bytes([123456]))
    expect_error(ValueError, str(2**40), call=lambda: tok.decode([2**40]))


def test_decode_negative_id(tok):
    expect_error(ValueError, "-1", "negative", "position 1", call=lambda: tok.decode([5, -1]))
    expect_error(ValueError, "-7", call=lambda: tok.decode_bytes([-7]))


def test_decode_wrong_types(tok):
    expect_error(TypeError, "integers", call=lambda: tok.decode(["a"]))
    expect_error(TypeError, "integers", call=lambda: tok.decode("abc"))
    expect_error(TypeError, call=lambda: tok.decode(None))
    expect_error(TypeError, "ids[1]", "float", call=lambda: tok.decode([1, 2.0]))


@pytest.mark.parametrize("big", [2**32, 2**64, 2**70, 99999999999999999999999, 10**400])
def test_decode_ids_of_any_size_are_value_errors(tok, big):
    """Python ints are unbounded; an id past u32/u64 is out of range, not an OverflowError."""
    for method in (tok.decode, tok.decode_bytes):
        expect_error(ValueError, f"token id {big} is out of range", "position 1", call=lambda: method([3, big]))
    expect_error(ValueError, f"token id {-big} is negative", "position 2", call=lambda: tok.decode([3, 4, -big]))


def test_decode_takes_any_iterable_of_ints(tok):
    ids = tok.encode("hello world")
    assert tok.decode(tuple(ids)) == tok.decode(iter(ids)) == tok.decode(ids) == "hello world"
    numpy = pytest.importorskip("numpy")
    assert tok.decode(numpy.array(ids, dtype=numpy.int64)) == "hello world"
    assert tok.decode(numpy.array(ids, dtype=numpy.uint16)) == "hello world"
    expect_error(ValueError, "-1", "negative", call=lambda: tok.decode(numpy.array([1, -1])))


def test_token_bytes_out_of_range(tok):
    expect_error(ValueError, str(tok.vocab_size), call=lambda: tok.token_bytes(tok.vocab_size))
    expect_error(ValueError, "-1", call=lambda: tok.token_bytes(-1))
    expect_error(ValueError, str(2**70), call=lambda: tok.token_bytes(2**70))
    expect_error(TypeError, "integer", call=lambda: tok.token_bytes("5"))
    assert tok.token_bytes(tok.token_to_id("h")) == b"h"
    assert tok.token_to_id("definitely not a token") is None


def test_id_to_token_is_none_outside_the_vocabulary(tok):
    """As HF's `id_to_token`: None for any int that is not an id, whatever its size."""
    for id in (-1, tok.vocab_size, 2**32, 2**70, -(2**70)):
        assert tok.id_to_token(id) is None, id
    assert tok.id_to_token(tok.token_to_id("h")) == "h"
    expect_error(TypeError, "integer", call=lambda: tok.id_to_token("3"))


@pytest.mark.parametrize("separator", [-1, 300, 2**32, 2**70])
def test_flat_encoding_separator_out_of_range(tok, separator):
    expect_error(ValueError, "separator id", str(separator), "vocabulary size 300",
                 call=lambda: tok.encode_batch_flat(["a b"], separator=separator))


def test_bad_allowed_special(tok):
    expect_error(ValueError, "allowed_special", "some", call=lambda: tok.encode("x", allowed_special="some"))
    expect_error(TypeError, call=lambda: tok.encode("x", allowed_special={3}))
    expect_error(TypeError, call=lambda: tok.encode(3))
    expect_error(TypeError, "texts[1]", call=lambda: tok.encode_batch(["ok", 3]))


# --------------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.encode("\ud800"),
        lambda t: t.encode("abc\udfffdef", allowed_special="none"),
        lambda t: t.encode_ordinary("a\ud800"),
        lambda t: t.encode_batch(["fine", "bad\ud800"]),
        lambda t: t.pre_tokenize("\ud800"),
        lambda t: t.token_to_id("\ud800"),
    ],
    ids=["encode", "encode-none", "encode_ordinary", "encode_batch", "pre_tokenize", "token_to_id"],
)
def test_lone_surrogate_is_a_python_error(tok, call):
    # UnicodeEncodeError is a ValueError; a TypeError is accepted only if it says what is wrong.
    e = expect_error((ValueError, TypeError), call=lambda: call(tok))
    if isinstance(e, TypeError):
        assert "surrogate" in str(e) or "UTF-8" in str(e), str(e)
    assert tok.encode("still alive") == tok.encode("still alive")  # the process survived


def test_lone_surrogate_in_training_iterator_is_reported_as_such():
    """A str holding a lone surrogate is a str; the error must not claim it is not one."""
    e = expect_error((ValueError, TypeError), "item 1", call=lambda: train(iter(["fine", "bad\ud800"])))
    msg = str(e)
    assert "not a str (got str)" not in msg, f"misleading message: {msg!r}"
    assert isinstance(e, ValueError) or "surrogate" in msg or "UTF-8" in msg, msg
    expect_error(ValueError, call=lambda: train(iter(CORPUS), special_tokens=["\ud800"]))


# ------------------------------------------------------------------------------- training


@pytest.mark.parametrize(("vocab_size", "specials"), [(0, None), (200, None), (256, None), (257, ["<a>", "<b>"])])
def test_vocab_size_too_small(vocab_size, specials):
    kw = {} if specials is None else {"special_tokens": specials}
    needed = str(256 + (1 if specials is None else len(specials)))
    expect_error(ValueError, "vocab_size", str(vocab_size), needed, call=lambda: train(iter(CORPUS), vocab_size, **kw))


def test_vocab_size_at_minimum_works():
    assert train(iter(CORPUS), 257).vocab_size == 257
    assert train(iter(CORPUS), 258, special_tokens=["<a>", "<b>"]).vocab_size == 258


def test_negative_sizes_are_python_errors():
    expect_error(ValueError, "vocab_size", "-1", call=lambda: train(iter(CORPUS), -1))
    expect_error(ValueError, "min_frequency", "-1", call=lambda: train(iter(CORPUS), min_frequency=-1))
    expect_error(ValueError, "max_token_length", call=lambda: train(iter(CORPUS), max_token_length=0))
    expect_error(ValueError, "max_token_length", "-5", call=lambda: train(iter(CORPUS), max_token_length=-5))


@pytest.mark.parametrize(
    ("kw", "needles"),
    [
        ({"vocab_size": 2**32}, ["vocab_size", "4294967295", str(2**32)]),
        ({"vocab_size": 10**30}, ["vocab_size", str(10**30)]),
        ({"min_frequency": 2**64}, ["min_frequency", str(2**64)]),
        ({"max_token_length": 2**70}, ["max_token_length", str(2**70)]),
    ],
    ids=["vocab-2^32", "vocab-10^30", "min-frequency-2^64", "max-token-length-2^70"],
)
def test_sizes_beyond_their_range_are_value_errors(kw, needles):
    """Python ints of any size: a value no run can use is a ValueError naming it, not an OverflowError."""
    vocab_size = kw.get("vocab_size", 300)
    rest = {k: v for k, v in kw.items() if k != "vocab_size"}
    expect_error(ValueError, *needles, call=lambda: train(iter(CORPUS), vocab_size, **rest))


def test_non_integer_sizes_are_type_errors():
    expect_error(TypeError, "vocab_size", "float", call=lambda: train(iter(CORPUS), 300.0))
    expect_error(TypeError, "min_frequency", "str", call=lambda: train(iter(CORPUS), min_frequency="2"))


HUGE_VOCAB_SCRIPT = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway allocation fails fast
    from tokenizer_rs import Tokenizer
    for model in ("bpe", "char", "word"):
        tok = Tokenizer.train(iter(["hello world, hello there"] * 3), 2**32 - 1, show_progress=False, model=model)
        print(model, tok.vocab_size)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS")
def test_largest_vocab_size_allocates_only_what_the_corpus_fills():
    """vocab_size 2**32 - 1 is legal; training stops when pairs run out, without reserving ~100 GB."""
    proc = subprocess.run([sys.executable, "-c", HUGE_VOCAB_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"process died (rc {proc.returncode}): {proc.stderr[-300:]}"
    sizes = dict(line.split() for line in proc.stdout.splitlines())
    assert 257 < int(sizes["bpe"]) < 300 and int(sizes["char"]) < 30 and int(sizes["word"]) < 10, sizes


@pytest.mark.parametrize("model", ["char", "word"])
def test_empty_special_token_in_the_baselines_is_harmless(model):
    """HF keeps an empty special token as a vocabulary entry that never matches (the BPE case is a
    parity test); the baselines do the same instead of failing."""
    tok = train(iter(CORPUS), 300, special_tokens=["<|endoftext|>", ""], model=model)
    assert tok.id_to_token(1) == "" and tok.special_tokens == ["<|endoftext|>", "", "<|unk|>"]
    assert 1 not in tok.encode("hello world, hello there")
    assert Tokenizer.from_str(tok.to_str()).to_str() == tok.to_str()


@pytest.mark.parametrize("kind", ["empty-file", "empty-iterator", "empty-strings", "empty-list"])
def test_empty_corpus(tmp_path, kind):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    source = {"empty-file": empty, "empty-iterator": iter([]), "empty-strings": iter(["", ""]), "empty-list": []}[kind]
    expect_error(ValueError, "empty", call=lambda: train(source))


@pytest.mark.parametrize(
    ("content", "offset"),
    [
        (b"ok line\n" + b"\xff\xfe", 8),
        (b"abc\xe3\x81", 3),  # truncated 3-byte sequence at EOF
        (b"x" * 100 + b"\n" + "日本".encode() + b"\xc3(\n", 107),
        (b"ok line\n" * 1_500_000 + b"abc\x80", 12_000_003),  # past the 8 MiB read block
    ],
    ids=["after-first-line", "truncated-at-eof", "after-multibyte", "second-block"],
)
def test_non_utf8_file_names_file_and_offset(tmp_path, content, offset):
    path = tmp_path / "latin1_corpus.txt"
    path.write_bytes(content)
    expect_error(ValueError, "latin1_corpus.txt", f"offset {offset}", call=lambda: train(path))
    expect_error(ValueError, "latin1_corpus.txt", f"offset {offset}", call=lambda: train([str(path)]))


def test_missing_file_names_path(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text("hello world\n", encoding="utf-8")
    missing = tmp_path / "no_such_corpus.txt"
    expect_error(FileNotFoundError, "no_such_corpus.txt", call=lambda: train(missing))
    expect_error(FileNotFoundError, "no_such_corpus.txt", call=lambda: train(str(missing)))
    expect_error(FileNotFoundError, "no_such_corpus.txt", call=lambda: train([ok, missing]))


def test_directory_path(tmp_path):
    expect_error((ValueError, OSError), str(tmp_path), "directory", call=lambda: train(tmp_path))
    expect_error((ValueError, OSError), "directory", call=lambda: train([str(tmp_path)]))


def test_list_mixing_paths_and_non_paths_gives_guidance(tmp_path):
    e = expect_error(TypeError, call=lambda: train([str(tmp_path / "a.txt"), 3]))
    assert "iter(" in str(e)
    expect_error(TypeError, "iterator of strings", call=lambda: train(3))


def test_list_of_texts_passed_as_files_gives_guidance():
    """A list is taken as file paths; when those 'paths' are really texts, say how to pass texts."""
    texts = ["hello world, this is a sentence.", "another sentence here."]
    e = expect_error((TypeError, FileNotFoundError), "hello world, this is a sentence.", call=lambda: train(texts))
    assert "iter(" in str(e) or "iterator" in str(e), f"no guidance in {str(e)!r}"


def test_iterator_with_non_str_names_index():
    expect_error(TypeError, "item 2", "int", call=lambda: train(iter(["a", "b", 3])))
    expect_error(TypeError, "item 1", "bytes", call=lambda: train(iter(["a", b"b"])))


def test_iterator_exception_propagates():
    def gen():
        yield "hello world"
        raise RuntimeError("boom from the corpus reader")

    expect_error(RuntimeError, "boom from the corpus reader", call=lambda: train(gen()))


def test_unknown_normalizer():
    expect_error(ValueError, "nfd", "normalizer", call=lambda: train(iter(CORPUS), normalizer="nfd"))


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "\\p{NoSuchClass}", ""])
def test_invalid_custom_regex(pattern):
    e = expect_error(ValueError, "regular expression", call=lambda: train(iter(CORPUS), pretokenizer="regex:" + pattern))
    if "\\" not in pattern:
        assert pattern in str(e)


# ------------------------------------------------------------------ malformed tokenizer.json


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken_tokenizer.json"
    path.write_text('{"model": {"type": "BPE",\n  "vocab": {]}}', encoding="utf-8")
    expect_error(ValueError, "broken_tokenizer.json", "line 2", "column", call=lambda: Tokenizer.from_file(path))
    expect_error(ValueError, "line 3", call=lambda: Tokenizer.from_str('{"model":\n\n  nope}'))
    expect_error(ValueError, call=lambda: Tokenizer.from_str(""))
    expect_error(ValueError, call=lambda: Tokenizer.from_str("[]"))


def test_tokenizer_json_missing_or_directory(tmp_path):
    expect_error(FileNotFoundError, "nope.json", call=lambda: Tokenizer.from_file(tmp_path / "nope.json"))
    expect_error(OSError, str(tmp_path), call=lambda: Tokenizer.from_file(tmp_path))
    bad = tmp_path / "binary.json"
    bad.write_bytes(b'{"a": "\xff"}')
    expect_error(ValueError, "binary.json", "offset 7", call=lambda: Tokenizer.from_file(bad))
    expect_error(FileNotFoundError, "missing_encoder.json", call=lambda: Tokenizer.from_gpt2(tmp_path / "missing_encoder.json", tmp_path / "v.bpe"))


def _set(path, value):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value

    return edit


MALFORMED = {
    "model-type": (_set(["model", "type"], "WordPiece"), ["model.type", "WordPiece"]),
    "merge-missing-token": (lambda d: d["model"]["merges"].insert(3, ["zz", "q"]), ["model.merges[3]", "zz"]),
    "merge-bad-string": (lambda d: d["model"]["merges"].insert(4, "a b c"), ["model.merges[4]"]),
    "merge-result-missing": (lambda d: d["model"]["merges"].insert(2, ["q", "q"]), ["model.merges[2]", "qq"]),
    "pre-tokenizer-type": (_set(["pre_tokenizer"], {"type": "Whitespace"}), ["pre_tokenizer.type", "Whitespace"]),
    "pre-tokenizer-none": (_set(["pre_tokenizer"], None), ["pre_tokenizer"]),
    "pre-tokenizer-flag": (_set(["pre_tokenizer"], {"type": "ByteLevel", "add_prefix_space": "yes"}), ["pre_tokenizer.add_prefix_space"]),
    "split-regex": (
        _set(["pre_tokenizer"], {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}),
        ["pre_tokenizer.pretokenizers[0].pattern", "(unclosed"],
    ),
    "split-behavior": (
        _set(["pre_tokenizer"], {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}),
        ["pre_tokenizer.pretokenizers[0].behavior", "Removed"],
    ),
    "normalizer": (_set(["normalizer"], {"type": "Lowercase"}), ["normalizer.type", "Lowercase"]),
    "decoder": (_set(["decoder"], {"type": "WordPiece"}), ["decoder.type", "WordPiece"]),
    "no-model": (lambda d: d.pop("model"), ["model"]),
    "vocab-gap": (lambda d: d["model"]["vocab"].pop("a"), ["model.vocab", str(ord("a") - 32)]),
    "vocab-negative-id": (_set(["model", "vocab", "zzz"], -1), ["model.vocab", "zzz"]),
    "vocab-duplicate-id": (_set(["model", "vocab", "zzz"], 1), ["model.vocab", "zzz"]),
    "added-token-conflict": (_set(["added_tokens", 0, "id"], 5), ["added_tokens"]),
    "added-token-lstrip": (_set(["added_tokens", 0, "lstrip"], True), ["added_tokens[0].lstrip"]),
    "unk-missing": (_set(["model", "unk_token"], "<unk>"), ["model.unk_token", "<unk>"]),
    "dropout": (_set(["model", "dropout"], 0.1), ["model.dropout"]),
    "merges-not-list": (_set(["model", "merges"], {"a": "b"}), ["model.merges"]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_tokenizer_json_names_field(tok_json, name):
    edit, needles = MALFORMED[name]
    data = json.loads(json.dumps(tok_json))
    edit(data)
    expect_error(ValueError, *needles, call=lambda: Tokenizer.from_str(json.dumps(data)))


HUGE_ID_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway allocation fails fast
    from tokenizer_rs import Tokenizer
    data = json.loads(Tokenizer.train(iter(["hello world"] * 3), 300, show_progress=False).to_str())
    if sys.argv[1] == "vocab":
        data["model"]["vocab"]["zzz"] = 4_000_000_000
    else:
        data["added_tokens"][0]["id"] = 4_000_000_000
    try:
        Tokenizer.from_str(json.dumps(data))
        print("LOADED")
    except Exception as e:
        print("PYERR", type(e).__name__, e)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS")
@pytest.mark.parametrize("where", ["vocab", "added_tokens"])
def test_huge_token_id_is_an_error_not_an_abort(where):
    """An id near u32::MAX in tokenizer.json must be refused, not allocate ~100 GB and abort."""
    proc = subprocess.run(
        [sys.executable, "-c", HUGE_ID_SCRIPT, where], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"process died (rc {proc.returncode}): {proc.stderr[:200]}"
    assert "PYERR ValueError" in proc.stdout and "4000000000" in proc.stdout, proc.stdout


def test_id_just_past_the_id_space_names_the_field(tok_json):
    data = json.loads(json.dumps(tok_json))
    data["model"]["vocab"]["zzz"] = 2**32 - 1
    expect_error(ValueError, 'model.vocab["zzz"]', "4294967294", call=lambda: Tokenizer.from_str(json.dumps(data)))
    data = json.loads(json.dumps(tok_json))
    data["added_tokens"][0]["id"] = 2**64
    expect_error(ValueError, "added_tokens[0].id", call=lambda: Tokenizer.from_str(json.dumps(data)))


def test_oversized_tokenizer_json_is_refused_unread(tmp_path):
    """A sparse 300 MiB file: refused from its size alone (reading it would take the time and memory)."""
    path = tmp_path / "huge_tokenizer.json"
    with open(path, "wb") as f:
        f.truncate(300 << 20)
    e = expect_error(ValueError, "huge_tokenizer.json", "(root)", "256 MiB", call=lambda: Tokenizer.from_file(path))
    assert str(300 << 20) in str(e)
    expect_error(ValueError, "huge_tokenizer.json", "256 MiB", call=lambda: Tokenizer.from_gpt2(path, path))


def _gpt2_files(tmp_path, tok, edit=lambda encoder: None):
    encoder = tok.get_vocab()
    edit(encoder)
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tok.merges), encoding="utf-8")
    return tmp_path / "encoder.json", tmp_path / "vocab.bpe"


def test_gpt2_encoder_ids_past_32_bits_are_errors_not_wrapped(tmp_path, tok):
    """An id of 2**32 + 5 used to wrap to 5 silently; it names the token now."""
    assert Tokenizer.from_gpt2(*_gpt2_files(tmp_path, tok)).get_vocab() == tok.get_vocab()
    token = tok.id_to_token(5)

    def wrap(encoder):
        encoder[token] = 2**32 + 5

    expect_error(ValueError, "encoder.json", json.dumps(token), str(2**32 + 5),
                 call=lambda: Tokenizer.from_gpt2(*_gpt2_files(tmp_path, tok, wrap)))
