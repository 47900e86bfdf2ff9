"""Running the pipeline's stages against the artifact store: compute each stage's key, reuse what
is done, build what is not, and say which. Plain Python over the stage registry
(`pipeline.stages.STAGES`); `pipeline.flows` wraps it for Prefect."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
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


class Runner:
    def __init__(self, cfg: PipelineConfig, force: str | None = None, progress: bool = True):
        force = check_force(cfg, force)
        self.cfg, self.progress = cfg, progress
        self.store = ArtifactStore(cfg.artifacts)
        self.forced = set(downstream_of(force)) if force else set()
        self.manifests: dict[str, dict[str, Any]] = {}
        self.cached: dict[str, bool] = {}

    def key(self, stage: str) -> str:
        return self.store.key(stage, stage_config(self.cfg, stage), [self.manifests[u] for u in upstream_of(self.cfg, stage)])

    def path(self, stage: str) -> Path:
        return self.store.path(stage, self.manifests[stage]["key"])

    def run_stage(self, stage: str) -> dict[str, Any]:
        key = self.key(stage)
        if stage in self.forced:
            if BY_NAME[stage].resumable:
                self.store.remove(stage, key)  # start training over, not resume
            else:
                self.store.invalidate(stage, key)
        found = self.store.lookup(stage, key)
        if found is not None:
            log.info("%s: cached (%s)", stage, self.store.path(stage, key))
            self.manifests[stage], self.cached[stage] = found, True
            return found
        problem = self.store.problem(stage, key)
        log.info("%s: building (%s)", stage, problem)
        out = self.store.path(stage, key)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        context = BuildContext(self.cfg, {s: self.path(s) for s in self.manifests}, dict(self.manifests),
                               self.store.root / "downloads", self.progress, log.info)
        try:
            stats = BY_NAME[stage].build(context, out)
        except Exception as e:
            raise StageError(f"stage {stage} failed: {e}") from e
        stats["seconds"] = round(time.perf_counter() - start, 2)
        manifest = self.store.finalize(stage, key, stage_config(self.cfg, stage), [self.manifests[u] for u in upstream_of(self.cfg, stage)], stats)
        self.manifests[stage], self.cached[stage] = manifest, False
        log.info("%s: done in %.1f s (%s)", stage, stats["seconds"], out)
        return manifest


def status(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Each stage: done (key, size, age), missing, incomplete or damaged; plus stale artifacts of
    the stage (built from other settings) still on disk. Keys of later stages assume the earlier
    ones as configured."""
    store = ArtifactStore(cfg.artifacts)
    rows, upstream = [], {}
    for stage in active_stages(cfg):
        key = store.key(stage, stage_config(cfg, stage), [upstream[u] for u in upstream_of(cfg, stage)])
        upstream[stage] = {"stage": stage, "key": key}
        path = store.path(stage, key)
        problem = store.problem(stage, key, verify=False)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
        age = time.time() - (path / "manifest.json").stat().st_mtime if problem is None else None
        others = [p.name for p in (store.root / stage).iterdir() if p.is_dir() and p.name != key[:16]] if (store.root / stage).is_dir() else []
        rows.append({"stage": stage, "key": key, "state": "done" if problem is None else problem, "path": str(path),
                     "bytes": size, "age_s": age, "stale": others})
    return rows
