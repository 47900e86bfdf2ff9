"""Running the pipeline's stages against the artifact store: compute each stage's key, reuse what
is done, build what is not, and say which. Plain Python; `pipeline.flows` wraps it for Prefect."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig

STAGES = ("corpus", "tokenizer", "shards", "pretrain", "finetune", "report")
UPSTREAM = {"corpus": (), "tokenizer": ("corpus",), "shards": ("corpus", "tokenizer"), "pretrain": ("shards",),
            "finetune": ("tokenizer", "pretrain"), "report": ("corpus", "tokenizer", "shards", "pretrain", "finetune")}
RESUMABLE = ("pretrain", "finetune")  # their artifacts hold run directories that a rerun continues
log = logging.getLogger("hataori")


class StageError(RuntimeError):
    """A stage failed; the message names the stage and what went wrong."""


def active_stages(cfg: PipelineConfig) -> list[str]:
    """The stages this config runs: fine-tuning only when it has a [finetune] section."""
    return [s for s in STAGES if s != "finetune" or cfg.finetune is not None]


def upstream_of(cfg: PipelineConfig, stage: str) -> list[str]:
    return [u for u in UPSTREAM[stage] if u in active_stages(cfg)]


def downstream_of(stage: str) -> list[str]:
    """`stage` and every stage that reads it, directly or not."""
    out = [stage]
    for s in STAGES:
        if any(u in out for u in UPSTREAM[s]) and s not in out:
            out.append(s)
    return out


def stage_config(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """What a stage's key covers: its config section, plus content digests of local sources."""
    from pipeline.stages.corpus import local_digest

    if stage == "corpus":
        data = cfg.corpus.model_dump(mode="json")
        for source, raw in zip(cfg.corpus.sources, data["sources"]):
            raw["content_sha256"] = local_digest(source)
        return data
    if stage == "tokenizer":
        data = cfg.tokenizer.model_dump(mode="json")
        if cfg.tokenizer.file is not None:
            from model.shard_format import sha256_file

            data["file_sha256"] = sha256_file(cfg.tokenizer.file)
        return data
    if stage == "shards":
        return cfg.shards.model_dump(mode="json", exclude={"batch_bytes"})
    if stage == "pretrain":
        return cfg.pretrain.model_dump(mode="json", exclude={"progress", "prefetch"})
    if stage == "finetune":
        from pipeline.config import SourceConfig

        data = cfg.finetune.model_dump(mode="json", exclude={"progress"})
        for name in ("data", "val_data", "test_data"):
            if data[name]:
                data[f"{name}_content_sha256"] = local_digest(SourceConfig(url=data[name]))
        return data
    return {"name": cfg.name}


class Runner:
    def __init__(self, cfg: PipelineConfig, force: str | None = None, progress: bool = True):
        if force is not None and force not in active_stages(cfg):
            raise ValueError(f"--force {force!r}: not a stage of this config (stages: {', '.join(active_stages(cfg))})")
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
            if stage in RESUMABLE:
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
        try:
            stats = self._build(stage, out)
        except Exception as e:
            raise StageError(f"stage {stage} failed: {e}") from e
        stats["seconds"] = round(time.perf_counter() - start, 2)
        manifest = self.store.finalize(stage, key, stage_config(self.cfg, stage), [self.manifests[u] for u in upstream_of(self.cfg, stage)], stats)
        self.manifests[stage], self.cached[stage] = manifest, False
        log.info("%s: done in %.1f s (%s)", stage, stats["seconds"], out)
        return manifest

    def _build(self, stage: str, out: Path) -> dict[str, Any]:
        from pipeline.stages import corpus, dataset, finetune, pretrain, report, tokenizer

        if stage == "corpus":
            return corpus.run(self.cfg.corpus, [], out, downloads=self.store.root / "downloads", progress=self.progress)
        if stage == "tokenizer":
            return tokenizer.run(self.cfg.tokenizer, self.path("corpus"), out, progress=self.progress)
        if stage == "shards":
            return dataset.run(self.cfg.shards, self.path("corpus"), self.path("tokenizer"), out, progress=self.progress)
        if stage == "pretrain":
            cfg = self.cfg.pretrain.model_copy(update={"progress": self.progress})
            return pretrain.run(cfg, self.path("shards") / dataset.DATASET, out, log=log.info)
        if stage == "finetune":
            return finetune.run(self.cfg.finetune, self.path("tokenizer") / tokenizer.TOKENIZER,
                                self.path("pretrain") / pretrain.RUN, out, downloads=self.store.root / "downloads",
                                progress=self.progress)
        upstream = upstream_of(self.cfg, "report")
        stats, self.report_markdown = report.run({s: self.manifests[s] for s in upstream},
                                                 {s: self.path(s) for s in upstream}, out, prompt="")
        return stats


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
