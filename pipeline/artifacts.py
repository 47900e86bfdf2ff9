"""The content-addressed artifact store: where every stage's output lives, and how reruns know
what is done.

A stage's key is the sha256 of (stage name, its config as canonical JSON, the keys of the upstream
artifacts it read, the code version). Upstream keys are themselves content-derived, so a changed
input changes every key downstream and nothing upstream. An artifact directory is complete only
once its `manifest.json` (written last, atomically) lists every file with its size and sha256; a
deleted or corrupted file makes the artifact incomplete, so it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.files import (
    Locked,
    exclusive,
    inside,
    read_json,
    sha256_file,
    write_json_atomic,
)
from model.version import hataori_version

log = logging.getLogger("hataori")
MANIFEST = "manifest.json"
STORE_FORMAT = 1
REBUILD = ".rebuild"  # suffix of a forced stage's build directory


class StoreLocked(Locked):
    """Another process holds the artifact store."""


def code_version() -> str:
    return f"hataori-{hataori_version()}/store-{STORE_FORMAT}"


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

    def problem(self, stage: str, key: str, verify: bool = True, directory: Path | None = None) -> str | None:
        """Why the artifact is not usable, or None when it is complete (and, with `verify`, intact).
        A manifest is trusted for nothing: every file it lists must be a plain name inside the
        artifact, with the size and (with `verify`) the sha256 it records."""
        directory = directory or self.path(stage, key)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            return "missing" if not directory.exists() else "incomplete (no manifest: interrupted or never finished)"
        try:
            manifest = read_json(manifest_path, "artifact manifest")
            if manifest.get("key") != key:
                return "manifest belongs to another key"
            entries = [(inside(directory, f["path"]), f["path"], int(f["bytes"]), str(f["sha256"])) for f in manifest["files"]]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return f"corrupt manifest ({e})"
        for p, name, size, digest in entries:
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != size:
                return f"{name} has {p.stat().st_size} bytes, expected {size}"
            if verify and self._sha256(p) != digest:
                return f"{name} is corrupted (sha256 mismatch)"
        return None

    def lookup(self, stage: str, key: str, verify: bool = True) -> dict[str, Any] | None:
        if self.problem(stage, key, verify) is not None:
            return None
        return read_json(self.path(stage, key) / MANIFEST, "artifact manifest")

    def finalize(self, stage: str, key: str, config: dict[str, Any], upstream: list[dict[str, Any]],
                 stats: dict[str, Any] | None = None, directory: Path | None = None) -> dict[str, Any]:
        """Lists every file of the artifact with its digest and writes the manifest, last."""
        directory = directory or self.path(stage, key)
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

    def rebuild_path(self, stage: str, key: str) -> Path:
        """Where a forced stage builds, beside its artifact, which stays whole (and usable) until
        the new one is finished; a forced build that was killed resumes there."""
        return self.root / stage / f"{key[:16]}{REBUILD}"

    def promote(self, stage: str, key: str) -> None:
        """The finished rebuild replaces the artifact: the old one is renamed away, then deleted."""
        final, new = self.path(stage, key), self.rebuild_path(stage, key)
        retired = final.with_name(f"{final.name}.retired-{os.getpid()}")
        if final.exists():
            os.replace(final, retired)
        os.replace(new, final)
        shutil.rmtree(retired, ignore_errors=True)

    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive use of the store: a second run waits (up to `timeout` seconds) instead of
        writing the same artifacts at the same time."""
        try:
            with exclusive(self.root, "the artifact store", on_wait=lambda m: log.warning(m), timeout=timeout):
                yield
        except Locked as e:
            raise StoreLocked(str(e)) from None
