"""The Prefect flow: one task per stage, each a thin wrapper around `Runner.run_stage`.

Caching uses our artifact keys, not Prefect's INPUTS policy (which hashes a Path by its name, so a
changed file would return a stale result): a task's cache key is its stage's artifact key plus the
digest of the artifact's manifest, and there is no key at all when the artifact is missing,
incomplete or damaged, or the stage is forced. With nothing configured, flows run on Prefect's
ephemeral server under a project-local PREFECT_HOME, with telemetry off.
"""

from __future__ import annotations

import hashlib
import logging
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
    # hataori's own loggers (training progress, evaluations, stage lines) reach the run's log in the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "hataori")


prefect_environment()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import CachePolicy  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline import flow_ui as ui  # noqa: E402
from pipeline.runner import Runner, StageError, active_stages  # noqa: E402
from pipeline.stages import BY_NAME  # noqa: E402
from pipeline.watchdog import stop_with_parent  # noqa: E402


class _FailuresOnceOnTheConsole(logging.Filter):
    """Prefect tells a failed task or flow three times (failed with state, finished in state, the
    flow's end), once with an empty traceback. On the console, hataori says it once: the flow's own
    `error` record (or `hataori run`'s error line, which then hides that record too). The records
    still reach the Prefect server and its UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR and record.name.startswith(("prefect.task_runs", "prefect.flow_runs")):
            if getattr(record, "hataori_failure", False):
                return os.environ.get("HATAORI_RUN_CLI") != "1"
            return False
        return not (record.name.startswith("prefect.") and " in state Failed(" in message)


def _quiet_console() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(_FailuresOnceOnTheConsole())
    # Our loggers now reach Prefect (its API handler, and the console through the root logger):
    # the command line's own stderr handler would print every line twice.
    ours = logging.getLogger("hataori")
    ours.setLevel(logging.INFO)
    ours.handlers = [h for h in ours.handlers if type(h).__name__ != "_CliLogHandler"]


_quiet_console()


def _ephemeral_server_dies_with_us() -> None:
    """Prefect's temporary server (what `hataori run` uses without a configured server) is a child
    that would outlive a SIGKILLed run; a watchdog ends it then."""
    from prefect.server.api import server

    start = server.SubprocessASGIServer._run_uvicorn_command
    if getattr(start, "hataori_watched", False):
        return

    def watched(self):
        process = start(self)
        stop_with_parent(process.pid, "prefect.server.api.server:create_app")
        return process

    watched.hataori_watched = True
    server.SubprocessASGIServer._run_uvicorn_command = watched


_ephemeral_server_dies_with_us()


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


# No retries: a stage that fails on bad data fails the same way again; the network, which can
# fail once and not twice, is retried where it is used (pipeline.download).
@task(cache_policy=ArtifactCachePolicy(), persist_result=True)
def stage_task(runner: Runner, stage: str) -> dict[str, Any] | State:
    """The stage's manifest; a failure is a Failed state with a one-line message (the cause, named
    by the stage), not an exception whose traceback would bury it in the log. A training stage
    shows its progress in the UI while it runs, and its metrics as a table when it is done."""
    try:
        runner.on_step = ui.progress(runner.cfg.name, stage) if BY_NAME[stage].resumable else None
        manifest = runner.run_stage(stage)
        if BY_NAME[stage].resumable and not runner.cached.get(stage):
            ui.metrics_table(runner.cfg.name, stage, runner.path(stage))
        return manifest
    except Exception as e:
        if os.environ.get("HATAORI_DEBUG") == "1":
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        return Failed(message=message if isinstance(e, StageError) else f"stage {stage} failed: {message}")


@flow(name="hataori", log_prints=True, flow_run_name=ui.run_name)
def pipeline_flow(config_path: str, sets: list[str] | None = None, force: str | None = None,
                  progress: bool = False) -> dict[str, Any] | State:
    """corpus -> tokenizer -> shards -> pretrain -> finetune (if configured) -> report, reusing every finished stage."""
    logger = get_run_logger()
    cfg = load_config(config_path, sets or [])
    runner = Runner(cfg, force=force, progress=progress)
    with runner.store.lock():
        for stage in active_stages(cfg):
            state = stage_task.with_options(task_run_name=stage)(runner, stage, return_state=True)
            if not state.is_completed():
                message = state.message or f"stage {stage}: {state.name}"
                logger.error("error: %s", message, extra={"hataori_failure": True})
                return Failed(message=message)
            manifest = state.result()
            said = runner.cached.get(stage, False)  # the runner has logged "cached" from inside the task
            cached = state.name == "Cached" or said
            runner.manifests[stage], runner.cached[stage] = manifest, cached
            if not said:
                logger.info("%s: %s (%s)", stage, "cached" if cached else "built", runner.path(stage))
    report = runner.path("report") / "report.md"
    if not all(runner.cached.values()):  # a run that found everything cached has nothing new to publish
        ui.publish_report(cfg.name, report)
    return {"stages": {s: {"key": m["key"], "cached": runner.cached[s], "path": str(runner.path(s))} for s, m in runner.manifests.items()},
            "report": str(report), "sample": runner.manifests["report"]["stats"].get("sample", ""),
            "finetune": runner.manifests["finetune"]["stats"] if "finetune" in runner.manifests else None,
            "eval": runner.manifests["eval"]["stats"] if "eval" in runner.manifests else None}
