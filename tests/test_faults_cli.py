"""Bad input on the command line and in configs: every failure is one `error:` line naming the
argument, field or file, with a non-zero exit; a traceback only when asked for (--debug)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fault_support import assert_one_error_line, hataori, tiny_dataset

CONFIG = """
name = "cli-faults"
artifacts = "{artifacts}"
[corpus]
[[corpus.sources]]
url = "{source}"
[pretrain]
preset = "tiny"
"""


@pytest.fixture
def config(tmp_path) -> Path:
    (tmp_path / "corpus.txt").write_text("some text\n")
    path = tmp_path / "pipe.toml"
    path.write_text(CONFIG.format(artifacts=tmp_path / "artifacts", source=tmp_path / "corpus.txt"))
    return path


@pytest.mark.parametrize("override, fragments", [
    ("corpus.sources.7.url=a", ["corpus.sources.7.url=a", "corpus.sources is a list of 1 item(s)"]),
    ("name.x=1", ["name.x=1", "name is a single value"]),
    ("pretrain.preset=gtp2", ["unknown model preset 'gtp2'", "did you mean 'gpt2'"]),
    ("pretrain.model.n_embdd=8", ["pretrain", "model.n_embdd: Extra inputs are not permitted"]),
    ("a..b=1", ["empty name"]),
    ("novalue", ["expected section.key=value"]),
])
def test_bad_overrides_are_one_line(config, override, fragments):
    assert_one_error_line(hataori("status", config, "--set", override), *fragments)


def test_a_config_that_is_not_utf8_or_not_there(tmp_path, config):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert_one_error_line(hataori("status", bad), "latin1.toml", "not UTF-8", "byte offset 11")
    assert_one_error_line(hataori("run", tmp_path / "nowhere.toml"), "nowhere.toml")
    assert_one_error_line(hataori("run", tmp_path), str(tmp_path))


def test_run_refuses_before_prefect_starts(config, tmp_path):
    r = hataori("run", config, "--force", "pretrian")
    assert_one_error_line(r, "--force 'pretrian'", "stages: corpus, tokenizer, dataset, pretrain, report")
    assert "temporary server" not in r.stderr
    (tmp_path / "corpus.txt").unlink()
    r = hataori("run", config)
    assert_one_error_line(r, "corpus.sources.0.url", "corpus.txt: no such file or directory")
    assert "temporary server" not in r.stderr


def test_bad_option_values_and_commands_are_one_line(tmp_path):
    assert_one_error_line(hataori("pretrain", "--data", tmp_path, "--out", tmp_path, "--max-steps", "many"),
                          "--max-steps", "see hataori pretrain --help" if False else "--help")
    assert_one_error_line(hataori("pretrian"), "No such command 'pretrian'")


def test_an_unexpected_error_is_one_line_unless_debugging(config, monkeypatch, capsys):
    from pipeline import cli, runner

    def boom(cfg):
        raise RuntimeError("something nobody expected\nwith a second line")

    monkeypatch.setattr(runner, "status", boom)
    monkeypatch.setattr(sys, "argv", ["hataori", "status", str(config)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert err.strip() == ("error: something nobody expected with a second line "
                           "(an unexpected error: run again with --debug for the traceback)")
    monkeypatch.setattr(sys, "argv", ["hataori", "--debug", "status", str(config)])
    with pytest.raises(RuntimeError, match="something nobody expected"):
        cli.main()


def test_import_bin_then_info_then_export(tmp_path):
    ds = tiny_dataset(tmp_path / "src")
    tokens = np.arange(0, 290, dtype="<u2").repeat(20)
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    (tmp_path / "web_train_000001.bin").write_bytes(header.tobytes() + tokens.tobytes())
    (tmp_path / "web_val_000000.bin").write_bytes(header.tobytes() + tokens.tobytes())
    r = hataori("dataset", "import-bin", tmp_path / "web_train_000001.bin", tmp_path / "web_val_000000.bin",
                "--tokenizer", ds.parent / "tokenizer.json", "--out", tmp_path / "imported")
    assert r.returncode == 0, r.stderr
    assert "imported   from web_train_000001.bin, web_val_000000.bin" in r.stdout
    info = hataori("dataset", "info", tmp_path / "imported")
    assert info.returncode == 0 and f"{len(tokens):,} tokens" in info.stdout, info.stderr
    again = hataori("dataset", "import-bin", tmp_path / "web_train_000001.bin", "--tokenizer", ds.parent / "tokenizer.json",
                    "--out", tmp_path / "imported")
    assert_one_error_line(again, "already holds a dataset", "--overwrite")

    # nanoGPT's files have no header: exported so, they hold exactly the tokens.
    r = hataori("dataset", "export-bin", tmp_path / "imported", "--out", tmp_path / "nano", "--format", "nanogpt")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.fromfile(tmp_path / "nano" / "train.bin", dtype="<u2"), tokens)
    back = hataori("dataset", "import-bin", tmp_path / "nano" / "train.bin", "--format", "nanogpt",
                   "--tokenizer", ds.parent / "tokenizer.json", "--out", tmp_path / "back")
    assert back.returncode == 0, back.stderr
    wrong = hataori("dataset", "import-bin", tmp_path / "web_train_000001.bin", "--format", "nanogpt",
                    "--tokenizer", ds.parent / "tokenizer.json", "--out", tmp_path / "wrong")
    assert_one_error_line(wrong, "starts with an llm.c header", "--format llmc")


def test_a_dataset_with_no_validation_text_says_how_to_fix_it(tmp_path):
    (tmp_path / "one.txt").write_text("a single document of text. " * 200)
    ds = tiny_dataset(tmp_path / "t")
    r = hataori("dataset", "build", tmp_path / "one.txt", "--tokenizer", ds.parent / "tokenizer.json", "--out",
                tmp_path / "ds", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "validation split is empty" in r.stderr and "--doc-split" in r.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["shards"] == []
