"""The content-addressed artifact store: where every stage's output lives, and how reruns know
what is done.

A stage's key is the sha256 of (stage name, its config as canonical JSON, the keys of the upstream
artifacts it read, the code version). Upstream keys are themselves content-derived, so a changed
input changes every key downstream and nothing upstream. An artifact directory is complete only
once its `manifest.json` (written last, atomically) lists every file with its size and sha256; a
deleted or corrupted file makes the artifact incomplete, so it is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.shard_format import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
STORE_FORMAT = 1


class StoreLocked(RuntimeError):
    """Another process holds the artifact store."""


def code_version() -> str:
    try:
        from importlib.metadata import version

        return f"hataori-{version('hataori')}/store-{STORE_FORMAT}"
    except Exception:
        return f"hataori-unknown/store-{STORE_FORMAT}"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        # Digests verified through this store, by (path, size, mtime): within one flow run, Prefect's
        # cache policy and the runner both verify an artifact, and gigabytes of shards should be read
        # once. Each run makes its own store, so damage done between runs is always seen.
        self._digests: dict[tuple[str, int, int], str] = {}

    def _sha256(self, p: Path) -> str:
        st = p.stat()
        known = (str(p), st.st_size, st.st_mtime_ns)
        if known not in self._digests:
            self._digests[known] = sha256_file(p)
        return self._digests[known]

    def key(self, stage: str, config: dict[str, Any], upstream: list[dict[str, Any]] = ()) -> str:
        material = canonical([stage, config, sorted((m["stage"], m["key"]) for m in upstream), code_version()])
        return hashlib.sha256(material.encode()).hexdigest()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:16]

    def problem(self, stage: str, key: str, verify: bool = True) -> str | None:
        """Why the artifact is not usable, or None when it is complete (and, with `verify`, intact)."""
        directory = self.path(stage, key)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            return "missing" if not directory.exists() else "incomplete (no manifest: interrupted or never finished)"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return "corrupt manifest"
        if manifest.get("key") != key:
            return "manifest belongs to another key"
        for f in manifest["files"]:
            p = directory / f["path"]
            if not p.is_file():
                return f"{f['path']} is missing"
            if p.stat().st_size != f["bytes"]:
                return f"{f['path']} has {p.stat().st_size} bytes, expected {f['bytes']}"
            if verify and self._sha256(p) != f["sha256"]:
                return f"{f['path']} is corrupted (sha256 mismatch)"
        return None

    def lookup(self, stage: str, key: str, verify: bool = True) -> dict[str, Any] | None:
        if self.problem(stage, key, verify) is not None:
            return None
        return json.loads((self.path(stage, key) / MANIFEST).read_text(encoding="utf-8"))

    def finalize(self, stage: str, key: str, config: dict[str, Any], upstream: list[dict[str, Any]],
                 stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """Lists every file of the artifact with its digest and writes the manifest, last."""
        directory = self.path(stage, key)
        files = []
        for p in sorted(q for q in directory.rglob("*") if q.is_file() and q.name != MANIFEST and ".tmp" not in q.name):
            files.append({"path": p.relative_to(directory).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)})
        manifest = {
            "stage": stage,
            "key": key,
            "config": json.loads(canonical(config)),
            "upstream": {m["stage"]: m["key"] for m in upstream},
            "files": files,
            "stats": stats or {},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": code_version(),
        }
        write_json_atomic(directory / MANIFEST, manifest)
        return manifest

    def invalidate(self, stage: str, key: str) -> None:
        """Marks the artifact for rebuilding (its manifest goes; files stay for resumable stages)."""
        (self.path(stage, key) / MANIFEST).unlink(missing_ok=True)

    def remove(self, stage: str, key: str) -> None:
        shutil.rmtree(self.path(stage, key), ignore_errors=True)

    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive use of the store: a second run waits (up to `timeout` seconds) instead of
        writing the same artifacts at the same time."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        holder = path.read_text().strip() or "another process"
                        raise StoreLocked(f"{self.root}: in use by {holder}; wait for it to finish or use another artifacts directory") from None
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
