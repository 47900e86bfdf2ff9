"""Pipeline configuration: TOML + --set overrides; errors name the field and the file line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

TOML = """\
name = "demo"

[corpus]
dedupe = true

[[corpus.sources]]
url = "https://www.gutenberg.org/cache/epub/1342/pg1342.txt"
doc_split = "blank_line"

[[corpus.sources]]
url = "../shared/data/aozora/rashomon_aozora_raw.txt"
aozora = true

[tokenizer]
vocab_size = 4000
preset = "ja"

[pretrain]
preset = "tiny"
max_steps = 200
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "demo.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_loads_with_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, TOML), ["tokenizer.vocab_size=8000", "pretrain.model.dropout=0.1",
                                              "corpus.sources.1.url=/data/raw.txt", "dataset.val_fraction=0.05"])
    assert cfg.tokenizer.vocab_size == 8000 and cfg.tokenizer.preset == "ja"
    assert cfg.pretrain.model == {"dropout": 0.1} and cfg.pretrain.max_steps == 200 and cfg.pretrain.nproc == 1
    assert cfg.corpus.sources[1].url == "/data/raw.txt" and cfg.corpus.sources[1].aozora
    assert cfg.dataset.val_fraction == 0.05 and cfg.dataset.shard_tokens == 100_000_000


def test_errors_name_field_and_line(tmp_path):
    bad = TOML.replace('doc_split = "blank_line"', 'doc_split = "paragraph"').replace("max_steps = 200", "max_stesp = 200")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad))
    message = str(e.value)
    assert "corpus.sources.0.doc_split: Input should be 'file', 'blank_line' or 'line' (demo.toml line 8)" in message
    assert "pretrain.max_stesp: Extra inputs are not permitted (demo.toml line 20)" in message
    with pytest.raises(ConfigError, match=r"corpus\.sources\.1: give exactly one of url or hf_dataset \(demo\.toml line 10\)"):
        load_config(write(tmp_path, TOML.replace('url = "../shared', 'hf_dataset = "x"\nurl = "../shared')))
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "name = \n"))
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(write(tmp_path, TOML), ["tokenizer.vocab_size"])
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_config(tmp_path / "nowhere.toml")


@pytest.mark.parametrize("name", ["demo.toml", "ja.toml", "gpt2-124m.toml"])
def test_shipped_configs_validate(name):
    cfg = load_config(Path(__file__).parents[1] / "configs" / name)
    assert cfg.name == name.removesuffix(".toml") and cfg.corpus.sources


def test_reading_a_config_does_not_import_torch():
    # `hataori status` and every config error should answer in well under a second; torch alone costs ~3 s.
    code = ("import sys; from pipeline.config import load_config; load_config('configs/demo.toml'); "
            "print(sorted(m for m in ('torch', 'prefect') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_old_shards_section_still_works(tmp_path):
    old = TOML + "\n[shards]\nval_fraction = 0.2\n"
    with pytest.warns(FutureWarning, match=r"\[shards\] is now called \[dataset\]"):
        cfg = load_config(write(tmp_path, old), ["shards.shard_tokens=5000"])
    assert cfg.dataset.val_fraction == 0.2 and cfg.dataset.shard_tokens == 5000
