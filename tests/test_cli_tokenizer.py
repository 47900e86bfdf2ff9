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


def run_bytes(*args: str, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], input=stdin, capture_output=True, timeout=120)


def one_error_line(r) -> str:
    stderr = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
    lines = stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("ids", [["99999999999999999999999"], ["3", str(2**64)], ["--", "3", "-7"]], ids=["past-u64", "2^64", "negative"])
def test_decode_any_int_is_one_error_line(trained: Path, ids: list[str]):
    line = one_error_line(hataori("tokenizer", "decode", "--tokenizer", str(trained), *ids))
    bad, position = ids[-1], len([i for i in ids if i != "--"]) - 1
    assert f"token id {bad} is" in line and f"position {position}" in line, line


def test_decode_reads_ids_from_stdin_with_the_same_errors(trained: Path):
    line = one_error_line(hataori("tokenizer", "decode", "--tokenizer", str(trained), stdin="[5, 99999999999999999999999]"))
    assert "99999999999999999999999" in line and "position 1" in line


@pytest.mark.parametrize(("data", "offset"), [(b"ok \xff\xfe", 3), (b"\xe3\x81", 0), ("日本".encode() + b"\x80", 6)])
def test_encode_non_utf8_stdin_names_stdin_and_offset(trained: Path, data: bytes, offset: int):
    for command in ("encode", "decode"):
        line = one_error_line(run_bytes("tokenizer", command, "--tokenizer", str(trained), stdin=data))
        assert f"stdin: not valid UTF-8 at byte offset {offset}" in line, line


def test_encode_stdin_is_read_byte_for_byte(trained: Path):
    """No newline translation: CRLF text gives the ids of CRLF text, as `Tokenizer.encode` does."""
    text = "a line\r\nnext\r\n日本語"
    r = run_bytes("tokenizer", "encode", "--tokenizer", str(trained), "--json", stdin=text.encode())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == tokenizers.Tokenizer.from_file(str(trained / "tokenizer.json")).encode(text).ids


def test_encode_non_utf8_argument_names_offset(trained: Path):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "tokenizer", "encode", "--tokenizer", str(trained), b"ab\xffc"],
                       capture_output=True, timeout=120)
    assert "TEXT argument: not valid UTF-8 at byte offset 2" in one_error_line(r)


def test_oversized_tokenizer_json_is_one_error_line(tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    with open(path, "wb") as f:
        f.truncate(257 << 20)
    line = one_error_line(hataori("tokenizer", "encode", "--tokenizer", str(tmp_path), "x"))
    assert str(path) in line and "256 MiB" in line


def test_train_absurd_sizes_are_one_error_line(tmp_path: Path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    for option, value in [("--vocab-size", "99999999999999999999"), ("--max-token-length", "0"), ("--min-frequency", "-1")]:
        r = hataori("tokenizer", "train", str(corpus), option, value, "--out", str(tmp_path / "o"), "--no-progress")
        line = one_error_line(r)
        assert option.lstrip("-").replace("-", "_") in line and value in line, line
    assert not (tmp_path / "o").exists()


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


def test_encode_shows_each_tokens_text(tmp_path):
    """`--tokens`: a Japanese user sees which characters each id stands for; bytes of a character
    split across tokens are escaped, and the pieces join back into the text."""
    import json as _json

    from typer.testing import CliRunner

    from pipeline.cli import app
    from tokenizer_rs import Tokenizer

    text = "吾輩は猫である。\n吾輩は猫である。\tcat"
    tok = Tokenizer.train(iter([text] * 20), 300, show_progress=False)
    tok.save(str(tmp_path / "tokenizer.json"))
    r = CliRunner().invoke(app, ["tokenizer", "encode", "-t", str(tmp_path / "tokenizer.json"), "--tokens", text])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    ids = tok.encode(text)
    assert [int(line.split()[0]) for line in lines] == ids
    assert any(line.endswith("'猫'") or "猫" in line for line in lines) and any(line.endswith("'\\n'") for line in lines)
    r = CliRunner().invoke(app, ["tokenizer", "encode", "-t", str(tmp_path / "tokenizer.json"), "--tokens", "--json", text])
    rows = _json.loads(r.output)
    assert [row["id"] for row in rows] == ids
    assert b"".join(bytes.fromhex(row["bytes"]) for row in rows).decode() == text
