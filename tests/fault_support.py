"""Helpers for the fault-injection tests: a tiny dataset, a CLI runner that goes through `main`
(the one-line error handler), hostile edits of manifests and headers."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from pipeline.dataset_writer import DatasetConfig, build_dataset
from tokenizer_rs import Tokenizer

DOCS = [f"Story {i}: the fox ran over the hill and the dog slept by the fire number {i % 13}." for i in range(400)]


def tiny_dataset(root: Path, docs: list[str] = DOCS, val_fraction: float = 0.1, vocab: int = 300) -> Path:
    """A dataset of small uint16 shards in `root/ds`, with its tokenizer in `root/tokenizer.json`."""
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = root / "tokenizer.json"
    if not tokenizer.exists():
        Tokenizer.train(iter(docs), vocab, show_progress=False).save(str(tokenizer))
    out = root / "ds"
    build_dataset(iter(docs), tokenizer, out, DatasetConfig(shard_tokens=3000, val_fraction=val_fraction), progress=False)
    return out


def hataori(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`hataori ARGS` in a child process (what a user runs), one torch thread."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A failed command: non-zero exit, no traceback, exactly one `error:` line holding `fragments`."""
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def pretrain_args(data: Path, out: Path, *extra: str, steps: int = 6) -> list[str]:
    return ["pretrain", "--data", str(data), "--out", str(out), "--preset", "tiny", "--max-steps", str(steps),
            "--batch-size", "2", "--context-length", "16", "--device", "cpu", "--no-progress",
            "--set", "checkpoint_interval=2", "--set", "eval_interval=3", "--set", "eval_batches=1",
            "--set", "sample_tokens=0", "--set", "keep_checkpoints=2", "--set", "warmup_steps=1", *extra]


def edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def rewrite_header(shard: Path, edit) -> None:
    """Applies `edit` to a shard's safetensors header and writes it back (data bytes unchanged)."""
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    shard.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
