"""`hataori tokenizer ...` run as a user runs it: a subprocess, checking output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tokenizers

CORPUS = "The quick brown fox jumps over the lazy dog.\nHello world, hello tokenizers!\n日本語の文章です。\n" * 20


def hataori(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "tok"
    r = hataori("tokenizer", "train", str(corpus), "--vocab-size", "300", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "vocab size      300 " in r.stdout and "bytes/token" in r.stdout
    return out


def test_train_writes_a_tokenizer_hf_loads(trained: Path):
    hf = tokenizers.Tokenizer.from_file(str(trained / "tokenizer.json"))
    assert hf.get_vocab_size() == 300


def test_encode_decode_round_trip(trained: Path):
    text = "Hello world, 日本語!"
    r = hataori("tokenizer", "encode", "--tokenizer", str(trained), "--json", text)
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    hf = tokenizers.Tokenizer.from_file(str(trained / "tokenizer.json"))
    assert ids == hf.encode(text).ids
    r = hataori("tokenizer", "decode", "--tokenizer", str(trained), *map(str, ids))
    assert r.returncode == 0 and r.stdout == text + "\n"
    r = hataori("tokenizer", "encode", "--tokenizer", str(trained), stdin=text)
    assert [int(x) for x in r.stdout.split()] == ids


def test_stats_prints_ratios(trained: Path, tmp_path: Path):
    sample = tmp_path / "sample.txt"
    sample.write_text("Hello world, hello tokenizers!\n", encoding="utf-8")
    r = hataori("tokenizer", "stats", "--tokenizer", str(trained), str(sample))
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "sample.txt" in line).split()
    chars, nbytes, tokens = int(row[1]), int(row[2]), int(row[3])
    assert chars == nbytes == 31
    assert float(row[4]) == pytest.approx(chars / tokens, abs=1e-3)


def test_errors_are_clear_and_exit_2(trained: Path, tmp_path: Path):
    r = hataori("tokenizer", "decode", "--tokenizer", str(trained), "5", "99999")
    assert r.returncode == 2 and "99999" in r.stderr and "position 1" in r.stderr
    r = hataori("tokenizer", "encode", "--tokenizer", str(tmp_path / "nowhere"), "x")
    assert r.returncode == 2 and "nowhere" in r.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    r = hataori("tokenizer", "train", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 2 and "bad.txt" in r.stderr and "byte offset 5" in r.stderr
    r = hataori("tokenizer", "train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing.txt" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.data
def test_train_aozora_ja_char_and_word(data_dir: Path, tmp_path: Path):
    raw = data_dir / "aozora" / "rashomon_aozora_raw.txt"
    for model, extra in [("bpe", ["--preset", "ja", "--normalizer", "nfkc"]), ("char", []), ("word", [])]:
        out = tmp_path / model
        r = hataori("tokenizer", "train", str(raw), "--aozora", "--model", model, "--vocab-size", "600",
                    "--out", str(out), "--no-progress", *extra)
        assert r.returncode == 0, r.stderr
        saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
        # Markup never reaches the vocabulary.
        assert not any(m in tok for tok in saved["model"]["vocab"] for m in ("《", "［＃", "｜"))
        r = hataori("tokenizer", "stats", "--tokenizer", str(out), str(raw))
        assert r.returncode == 0 and model in r.stdout
