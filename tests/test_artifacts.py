"""The artifact store: content-derived keys, manifests written last, damage detected, a lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.artifacts import ArtifactStore, StoreLocked


def make(store: ArtifactStore, stage: str, config: dict, upstream=()) -> dict:
    key = store.key(stage, config, list(upstream))
    d = store.path(stage, key)
    d.mkdir(parents=True, exist_ok=True)
    (d / "out.txt").write_text(f"{stage} {config}")
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "more.bin").write_bytes(b"\x00" * 100)
    return store.finalize(stage, key, config, list(upstream), {"rows": 3})


def test_keys_follow_config_and_upstream(tmp_path):
    store = ArtifactStore(tmp_path)
    corpus = make(store, "corpus", {"sources": ["a"]})
    tok = make(store, "tokenizer", {"vocab_size": 1000}, [corpus])
    assert store.key("tokenizer", {"vocab_size": 1000}, [corpus]) == tok["key"]
    assert store.key("tokenizer", {"vocab_size": 2000}, [corpus]) != tok["key"]
    other = make(store, "corpus", {"sources": ["b"]})
    assert store.key("tokenizer", {"vocab_size": 1000}, [other]) != tok["key"]  # upstream changed
    assert store.key("tokenizer", {"vocab_size": 1000}, [corpus]) == store.key("tokenizer", {"vocab_size": 1000}, [corpus])
    assert tok["upstream"] == {"corpus": corpus["key"]}
    assert sorted(f["path"] for f in tok["files"]) == ["out.txt", "sub/more.bin"]


def test_incomplete_deleted_and_corrupted_artifacts_are_not_used(tmp_path):
    store = ArtifactStore(tmp_path)
    m = make(store, "corpus", {"x": 1})
    assert store.lookup("corpus", m["key"]) == m
    d = store.path("corpus", m["key"])
    (d / "sub" / "more.bin").write_bytes(b"\x01" + b"\x00" * 99)  # same size, other bytes
    store = ArtifactStore(tmp_path)  # the next run's store: digests are remembered within one run only
    assert store.problem("corpus", m["key"]) == "sub/more.bin is corrupted (sha256 mismatch)"
    assert store.problem("corpus", m["key"], verify=False) is None  # size-only check cannot see it
    (d / "out.txt").unlink()
    assert store.problem("corpus", m["key"]) == "out.txt is missing"
    (d / "manifest.json").unlink()
    assert "incomplete" in store.problem("corpus", m["key"])
    assert store.problem("corpus", "f" * 64) == "missing"


def test_one_run_reads_each_file_once_however_often_it_verifies(tmp_path, monkeypatch):
    from pipeline import artifacts

    store = ArtifactStore(tmp_path)
    m = make(store, "shards", {"x": 1})
    hashed = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    for _ in range(3):  # the cache policy, the runner's lookup, a status check
        assert store.problem("shards", m["key"]) is None
    assert sorted(hashed) == ["more.bin", "out.txt"]
    d = store.path("shards", m["key"])
    (d / "out.txt").write_text("shards {'x': 2}")  # same size, but a newer mtime: read again
    os.utime(d / "out.txt", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert store.problem("shards", m["key"]) == "out.txt is corrupted (sha256 mismatch)"
    assert sorted(hashed) == ["more.bin", "out.txt", "out.txt"]


def test_lock_is_exclusive_across_processes(tmp_path):
    store = ArtifactStore(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from pipeline.artifacts import ArtifactStore\n"
        "with ArtifactStore(%r).lock():\n"
        "    print('held', flush=True); time.sleep(30)\n") % (str(Path(__file__).parents[1]), str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(StoreLocked, match=f"in use by pid {holder.pid}"):
            with store.lock(timeout=0.5):
                pass
        assert time.monotonic() - start >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with store.lock(timeout=5):  # released when the holder died
        pass
