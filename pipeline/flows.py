"""The Prefect flow: one task per stage, each a thin wrapper around `Runner.run_stage`.

Caching uses our artifact keys, not Prefect's INPUTS policy (which hashes a Path by its name, so a
changed file would return a stale result): a task's cache key is its stage's artifact key plus the
digest of the artifact's manifest, and there is no key at all when the artifact is missing,
incomplete or damaged, or the stage is forced. With nothing configured, flows run on Prefect's
ephemeral server under a project-local PREFECT_HOME, with telemetry off.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def prefect_environment(home: Path | None = None) -> None:
    """Project-local Prefect state and no telemetry, unless the user configured otherwise."""
    os.environ.setdefault("PREFECT_HOME", str((home or Path.cwd()) / ".prefect"))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME migrates its database on first start; 20 s is not enough on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


prefect_environment()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import CachePolicy  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.runner import Runner, active_stages  # noqa: E402


@dataclass
class ArtifactCachePolicy(CachePolicy):
    """Prefect cache key = artifact key + manifest digest, or none when the artifact is not usable."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        runner: Runner = inputs["runner"]
        stage: str = inputs["stage"]
        if stage in runner.forced:
            return None
        key = runner.key(stage)
        if runner.store.problem(stage, key, verify=True) is not None:
            return None
        manifest = runner.store.path(stage, key) / "manifest.json"
        return f"hataori-{stage}-{key}-{hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]}"


@task(cache_policy=ArtifactCachePolicy(), persist_result=True, retries=1, retry_delay_seconds=5)
def stage_task(runner: Runner, stage: str) -> dict[str, Any]:
    return runner.run_stage(stage)


@flow(name="hataori", log_prints=True)
def pipeline_flow(config_path: str, sets: list[str] | None = None, force: str | None = None, progress: bool = False) -> dict[str, Any]:
    """corpus -> tokenizer -> shards -> pretrain -> finetune (if configured) -> report, reusing every finished stage."""
    logger = get_run_logger()
    cfg = load_config(config_path, sets or [])
    runner = Runner(cfg, force=force, progress=progress)
    with runner.store.lock():
        for stage in active_stages(cfg):
            state = stage_task.with_options(task_run_name=stage)(runner, stage, return_state=True)
            manifest = state.result()
            cached = state.name == "Cached" or runner.cached.get(stage, False)
            runner.manifests[stage], runner.cached[stage] = manifest, cached
            logger.info("%s: %s (%s)", stage, "cached" if cached else "built", runner.path(stage))
    report = runner.path("report") / "report.md"
    create_markdown_artifact(markdown=report.read_text(encoding="utf-8"), key="hataori-report", description=cfg.name)
    return {"stages": {s: {"key": m["key"], "cached": runner.cached[s], "path": str(runner.path(s))} for s, m in runner.manifests.items()},
            "report": str(report), "sample": runner.manifests["report"]["stats"].get("sample", ""),
            "finetune": runner.manifests["finetune"]["stats"] if "finetune" in runner.manifests else None}
