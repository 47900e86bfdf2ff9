"""Faults users meet: the disk filling up while a shard is written, and two pipeline runs started at
once on the same artifact store."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer_rs import Tokenizer

TEXT = "\n\n".join(f"Story {i}: the fox jumped over the lazy dog and ran into the woods." for i in range(800))


def _file_size_limit(limit: int):
    def apply() -> None:
        # A write past the limit fails with EFBIG (as a full disk fails with ENOSPC) instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_a_shard_gives_a_clear_error_and_no_half_artifact(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tokenizer = Tokenizer.train(iter([TEXT]), vocab_size=300, special_tokens=["<|endoftext|>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "pipeline.cli", "data", "build", str(corpus), "--tokenizer", str(tmp_path / "tokenizer.json"),
           "--out", str(out), "--shard-tokens", "20000", "--doc-split", "blank_line", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit(16_000))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "while writing" in r.stderr and ".safetensors" in r.stderr and "disk full" in r.stderr, r.stderr
    assert not (out / "manifest.json").exists()
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".safetensors")]
    assert leftovers == [], leftovers  # no temp file, no truncated shard

    # Space again: the same command now builds the whole dataset.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.json").exists()


@pytest.mark.slow
def test_two_runs_at_once_on_one_store_do_not_corrupt_it(tmp_path):
    """Both succeed: one builds every stage while the other waits on the store's lock, then finds
    everything cached. Same PREFECT_HOME too, as two cron jobs of one user would have."""
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    config = tmp_path / "pipe.toml"
    config.write_text(f"""
name = "concurrent"
artifacts = "{tmp_path / 'artifacts'}"
[corpus]
[[corpus.sources]]
url = "{tmp_path / 'corpus.txt'}"
doc_split = "blank_line"
[tokenizer]
vocab_size = 300
[dataset]
shard_tokens = 4000
val_fraction = 0.1
[pretrain]
preset = "tiny"
max_steps = 20
batch_size = 4
context_length = 32
checkpoint_interval = 10
eval_interval = 10
eval_batches = 2
sample_tokens = 0
device = "cpu"
""", encoding="utf-8")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(config), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    states = []
    for out, _ in results:
        states.append({line.split()[0]: line.split()[1] for line in out.splitlines()
                       if line.split() and line.split()[0] in ("corpus", "tokenizer", "dataset", "pretrain", "report")})
    assert sorted("/".join(sorted(set(s.values()))) for s in states) == ["built", "cached"], states
    for stage in ("corpus", "tokenizer", "dataset", "pretrain", "report"):
        built = [d for d in (tmp_path / "artifacts" / stage).iterdir() if d.is_dir()]
        assert len(built) == 1 and (built[0] / "manifest.json").is_file()
