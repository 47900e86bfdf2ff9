"""Running the pipeline's stages against the artifact store: compute each stage's key, reuse what
is done, build what is not, and say which. Plain Python over the stage registry
(`pipeline.stages.STAGES`); `pipeline.flows` wraps it for Prefect."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from model.files import remove_stale_temps
from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.download import local_path
from pipeline.stages import BY_NAME, RENAMED, STAGES, BuildContext

log = logging.getLogger("hataori")


class StageError(RuntimeError):
    """A stage failed; the message names the stage and what went wrong."""


def active_stages(cfg: PipelineConfig) -> list[str]:
    """The stages this config runs, in order (fine-tuning only with a [finetune] section, ...)."""
    return [s.name for s in STAGES if s.enabled(cfg)]


def upstream_of(cfg: PipelineConfig, stage: str) -> list[str]:
    active = active_stages(cfg)
    return [u for u in BY_NAME[stage].upstream if u in active]


def downstream_of(stage: str) -> list[str]:
    """`stage` and every stage that reads it, directly or not."""
    out = [stage]
    for s in STAGES:
        if any(u in out for u in s.upstream) and s.name not in out:
            out.append(s.name)
    return out


def stage_config(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """What a stage's key covers: its config section, plus content digests of local inputs."""
    return BY_NAME[stage].key_config(cfg)


def check_force(cfg: PipelineConfig, force: str | None) -> str | None:
    """The stage `--force` names (old names accepted), or ValueError listing the config's stages."""
    if force is None:
        return None
    force = RENAMED.get(force, force)
    if force not in active_stages(cfg):
        raise ValueError(f"--force {force!r}: not a stage of this config (stages: {', '.join(active_stages(cfg))})")
    return force


def preflight(cfg: PipelineConfig, force: str | None = None) -> None:
    """What can be known wrong before any stage runs: a --force that names no stage, and local
    files the config names that are not there. Raises ValueError naming the field."""
    check_force(cfg, force)
    named = [(f"corpus.sources.{i}.url", s.url) for i, s in enumerate(cfg.corpus.sources) if s.url]
    if cfg.finetune is not None:
        named += [(f"finetune.{f}", getattr(cfg.finetune, f)) for f in ("data", "val_data", "test_data") if getattr(cfg.finetune, f)]
    if cfg.tokenizer.file is not None:
        named.append(("tokenizer.file", str(cfg.tokenizer.file)))
    for field, location in named:
        path = local_path(location)
        if path is not None and not path.exists():
            raise ValueError(f"{field}: {location}: no such file or directory")
    store = Path(cfg.artifacts)
    existing = next((p for p in (store, *store.absolute().parents) if p.exists()), None)
    if store.exists() and not store.is_dir():
        raise ValueError(f"artifacts: {store} is a file, not a directory")
    if existing is not None and not os.access(existing, os.W_OK):
        raise ValueError(f"artifacts: {existing} is not writable")
    if cfg.eval is not None:  # a broken task file should not wait for hours of pretraining to be found
        from pipeline.stages.eval import check_tasks

        check_tasks(cfg.eval)


class Runner:
    def __init__(self, cfg: PipelineConfig, force: str | None = None, progress: bool = True):
        force = check_force(cfg, force)
        self.cfg, self.progress = cfg, progress
        self.store = ArtifactStore(cfg.artifacts)
        self.forced = set(downstream_of(force)) if force else set()
        self.manifests: dict[str, dict[str, Any]] = {}
        self.cached: dict[str, bool] = {}
        self.on_step = None  # training progress, (done, total, metrics) -> None, for a UI to follow

    def key(self, stage: str) -> str:
        return self.store.key(stage, stage_config(self.cfg, stage), [self.manifests[u] for u in upstream_of(self.cfg, stage)])

    def path(self, stage: str) -> Path:
        return self.store.path(stage, self.manifests[stage]["key"])

    def run_stage(self, stage: str) -> dict[str, Any]:
        key = self.key(stage)
        forced = stage in self.forced
        if not forced:
            found = self.store.lookup(stage, key)
            if found is not None:
                log.info("%s: cached (%s)", stage, self.store.path(stage, key))
                self.manifests[stage], self.cached[stage] = found, True
                return found
            log.info("%s: building (%s)", stage, self.store.problem(stage, key))
            out = self.store.path(stage, key)
        else:  # built beside the artifact it replaces, which stays whole until the new one is done
            log.info("%s: building (forced)", stage)
            out = self.store.rebuild_path(stage, key)
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out, recursive=True)
        start = time.perf_counter()
        context = BuildContext(self.cfg, {s: self.path(s) for s in self.manifests}, dict(self.manifests),
                               self.store.root / "downloads", self.progress, log.info, self.on_step)
        try:
            stats = BY_NAME[stage].build(context, out)
        except Exception as e:
            raise StageError(f"stage {stage} failed: {e}") from e
        stats["seconds"] = round(time.perf_counter() - start, 2)
        upstream = [self.manifests[u] for u in upstream_of(self.cfg, stage)]
        manifest = self.store.finalize(stage, key, stage_config(self.cfg, stage), upstream, stats, directory=out)
        if forced:
            self.store.promote(stage, key)
        self.manifests[stage], self.cached[stage] = manifest, False
        log.info("%s: done in %.1f s (%s)", stage, stats["seconds"], self.store.path(stage, key))
        return manifest


def status(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Each stage: done (key, size, age), missing, incomplete or damaged; plus stale artifacts of
    the stage (built from other settings) still on disk, and for a stage that is not done, how its
    settings differ from the nearest of them. Keys of later stages assume the earlier ones as
    configured."""
    store = ArtifactStore(cfg.artifacts)
    rows, upstream = [], {}
    for stage in active_stages(cfg):
        config = stage_config(cfg, stage)
        key = store.key(stage, config, [upstream[u] for u in upstream_of(cfg, stage)])
        upstream[stage] = {"stage": stage, "key": key}
        path = store.path(stage, key)
        problem = store.problem(stage, key, verify=False)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
        age = time.time() - (path / "manifest.json").stat().st_mtime if problem is None else None
        others = [p for p in (store.root / stage).iterdir()
                  if p.is_dir() and p.name != key[:16] and "." not in p.name] if (store.root / stage).is_dir() else []
        rows.append({"stage": stage, "key": key, "state": "done" if problem is None else problem, "path": str(path),
                     "bytes": size, "age_s": age, "stale": [p.name for p in others],
                     "differs": None if problem is None else nearest_difference(stage, config, others)})
    return rows


def nearest_difference(stage: str, config: dict[str, Any], others: list[Path]) -> str | None:
    """How `config` differs from the stage's closest artifact on disk: the fields (with both
    values) of the one that differs in the fewest, or that its upstream stages differ."""
    from model.files import read_json

    best: tuple[int, str] | None = None
    ours = _flat(config, stage)
    for directory in others:
        try:
            manifest = read_json(directory / "manifest.json", "artifact manifest")
            theirs = _flat(manifest["config"], stage)
        except (ValueError, KeyError, TypeError):
            continue
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        text = (", ".join(f"{k} {_short(theirs.get(k))} -> {_short(ours.get(k))}" for k in changed[:4])
                + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")) if changed else \
            "its settings; an earlier stage was built from other settings or inputs"
        if best is None or len(changed) < best[0]:
            best = (len(changed), f"differs from {directory.name} in {text}")
    return best[1] if best else None


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
