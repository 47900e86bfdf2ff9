"""Pre-tokenizer presets are names and custom patterns are asked for (`regex:<pattern>`): a misspelt
preset is an error listing the presets with the likely one, from the Python API, the CLI and a
pipeline config alike, instead of a regular expression that happens to compile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tokenizers

from pipeline.config import ConfigError, load_config
from tokenizer_rs import PRESETS, REGEX_PREFIX, Tokenizer, validate_pretokenizer

TEXTS = ["Hello world, hello there! 123 4567\n", "日本語のテキスト、カタカナ。\n"] * 5
CUSTOM = r" ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"


def train(pretokenizer: str | None, **kw) -> Tokenizer:
    return Tokenizer.train(iter(TEXTS), 300, pretokenizer=pretokenizer, show_progress=False, **kw)


@pytest.mark.parametrize(
    ("name", "guess"),
    [("gtp2", "gpt2"), ("cl100", "cl100k"), ("GPT2", "gpt2"), ("o200", "o200k"), ("ja_digits1", "ja-digits1"), ("ja-isolate", "ja-isolated")],
)
def test_misspelt_preset_names_the_likely_one(name, guess):
    with pytest.raises(ValueError) as e:
        train(name)
    message = str(e.value)
    assert f"unknown pre-tokenizer preset '{name}' (did you mean '{guess}'? presets: {', '.join(PRESETS)})" in message
    assert "for a custom pattern write regex:<pattern>" in message
    with pytest.raises(ValueError, match="did you mean"):
        validate_pretokenizer(name)


@pytest.mark.parametrize("name", [CUSTOM, r"\s+", "japanese", "x", "none"])
def test_a_bare_pattern_or_unknown_name_is_refused(name):
    """What used to be taken as a regex is an error that says how to ask for one."""
    with pytest.raises(ValueError) as e:
        validate_pretokenizer(name)
    assert f"unknown pre-tokenizer preset '{name}'" in str(e.value) and "regex:<pattern>" in str(e.value)
    assert "did you mean" not in str(e.value)


def test_presets_validate_to_themselves():
    assert REGEX_PREFIX == "regex:"
    for name in PRESETS:
        assert validate_pretokenizer(name) == name
    assert validate_pretokenizer("regex:" + CUSTOM) == "regex:" + CUSTOM
    with pytest.raises(ValueError, match="invalid regular expression"):
        validate_pretokenizer("regex:(unclosed")


def test_custom_pattern_round_trips_through_save_load_and_retrain(tmp_path):
    """`tok.pretokenizer` gives back what `train` takes; tokenizer.json stores the bare HF Split regex."""
    tok = train("regex:" + CUSTOM)
    assert tok.pretokenizer == "regex:" + CUSTOM
    saved = json.loads(tok.to_str())["pre_tokenizer"]["pretokenizers"][0]
    assert saved == {"type": "Split", "pattern": {"Regex": CUSTOM}, "behavior": "Isolated", "invert": False}
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    reloaded = Tokenizer.from_file(path)
    assert reloaded.pretokenizer == tok.pretokenizer and reloaded.to_str() == tok.to_str()
    assert train(reloaded.pretokenizer).to_str() == tok.to_str()
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.encode(TEXTS[0] + TEXTS[1]).ids == tok.encode(TEXTS[0] + TEXTS[1])


def test_preset_spelt_as_its_regex_is_that_preset():
    spelt = json.loads(train("cl100k").to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert train("regex:" + spelt).pretokenizer == "cl100k"
    assert train("regex:" + spelt).to_str() == train("cl100k").to_str()


def test_hf_file_with_an_unknown_split_regex_still_loads(tmp_path):
    """Loading is unchanged: a Split regex that matches no preset is used as it is."""
    from tokenizers import Regex, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(CUSTOM), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    hf.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf.save(str(tmp_path / "hf.json"))
    ours = Tokenizer.from_file(tmp_path / "hf.json")
    assert ours.pretokenizer == "regex:" + CUSTOM
    assert ours.encode(TEXTS[1]) == hf.encode(TEXTS[1]).ids


def test_the_baselines_still_refuse_any_pretokenizer():
    with pytest.raises(ValueError, match="own split"):
        train("gpt2", model="char")


# ------------------------------------------------------------------------------------- CLI


def hataori(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(TEXTS), encoding="utf-8")
    return path


def test_cli_misspelt_preset_is_one_error_line_and_writes_nothing(corpus, tmp_path):
    out = tmp_path / "tok"
    r = hataori("tokenizer", "train", str(corpus), "--vocab-size", "300", "--preset", "gtp2", "--out", str(out), "--no-progress")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown pre-tokenizer preset 'gtp2' (did you mean 'gpt2'?"), r.stderr
    assert "regex:<pattern>" in lines[0] and not out.exists() and "Traceback" not in r.stderr


def test_cli_custom_pattern_needs_the_regex_prefix(corpus, tmp_path):
    r = hataori("tokenizer", "train", str(corpus), "--vocab-size", "300", "--preset", CUSTOM, "--out", str(tmp_path / "a"), "--no-progress")
    assert r.returncode == 2 and "regex:<pattern>" in r.stderr
    r = hataori("tokenizer", "train", str(corpus), "--vocab-size", "300", "--preset", "regex:" + CUSTOM, "--out", str(tmp_path / "b"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert Tokenizer.from_file(tmp_path / "b" / "tokenizer.json").to_str() == train("regex:" + CUSTOM).to_str()


# ---------------------------------------------------------------------------- pipeline config

CONFIG = """\
name = "presets"

[[corpus.sources]]
url = "corpus.txt"

[tokenizer]
vocab_size = 300
preset = "{preset}"
"""


def test_config_preset_is_checked_when_the_config_loads(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text(CONFIG.format(preset="gtp2"), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "tokenizer.preset" in message and "did you mean 'gpt2'?" in message and "presets.toml line 8" in message
    with pytest.raises(ConfigError, match="invalid regular expression"):
        load_config(path, ['tokenizer.preset="regex:(unclosed"'])
    assert load_config(path, ['tokenizer.preset="regex:\\\\p{L}+"']).tokenizer.preset == r"regex:\p{L}+"
    assert load_config(path, ['tokenizer.preset="ja"']).tokenizer.preset == "ja"


def test_cli_status_refuses_a_misspelt_config_preset(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text(CONFIG.format(preset="cl100"), encoding="utf-8")
    r = hataori("status", str(path))
    assert r.returncode == 2 and "did you mean 'cl100k'?" in r.stderr and "Traceback" not in r.stderr, r.stderr
