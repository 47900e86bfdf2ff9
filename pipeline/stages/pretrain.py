"""Pretrain: the GPT on the dataset, in this process or under torchrun when nproc > 1. Rerunning a
killed stage resumes from its last checkpoint (the run directory lives in the artifact)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.stages.base import BuildContext, Stage

RUN = "run"


def train_args(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.model_dump(mode="json").items() if k != "nproc"}


def set_options(args: dict[str, Any], prefix: str = "") -> list[str]:
    """`--set key=value` pairs (TOML values; nested dicts as dotted keys) for `hataori train`."""
    out: list[str] = []
    for k, v in args.items():
        if isinstance(v, dict):
            out += set_options(v, f"{prefix}{k}.")
        elif v is not None:
            out += ["--set", f"{prefix}{k}={json.dumps(v)}"]  # JSON scalars and arrays are valid TOML
    return out


def run(config: Any, dataset_dir: Path, out_dir: Path, *, log=print, on_step=None) -> dict[str, Any]:
    from model.pretrain import TrainConfig, train  # torch: only when the stage builds
    from model.run_dir import METRICS, read_metrics

    run_dir = out_dir / RUN
    if config.nproc <= 1:
        summary = train(TrainConfig(data=dataset_dir, out=run_dir, **train_args(config)), on_step)
    else:
        sets = set_options(train_args(config))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.nproc}",
               "-m", "pipeline.cli", "pretrain", "--data", str(dataset_dir), "--out", str(run_dir), "--no-progress", *sets]
        log(f"launching: {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        cause = None
        try:
            for line in proc.stdout:  # stream torchrun's output into the run log
                log(line.rstrip())
                if line.startswith("error: "):  # a rank's one-line failure is the stage's
                    cause = line.removeprefix("error: ").strip()
            proc.wait()
        finally:
            if proc.poll() is None:  # the flow was cancelled: never leave training running behind it
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if proc.returncode != 0:
            raise RuntimeError(cause or f"torchrun exited with status {proc.returncode} (its output is in the log above)")
        summary = {}
    rows = read_metrics(run_dir / METRICS)
    evals = [r for r in rows if "val_loss" in r]
    return {**summary, "steps": rows[-1]["step"] + 1 if rows else 0, "final_loss": rows[-1]["loss"] if rows else None,
            "val_loss": evals[-1]["val_loss"] if evals else None, "val_ppl": evals[-1]["val_ppl"] if evals else None}


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from pipeline.stages.dataset import DATASET

    config = ctx.config.pretrain.model_copy(update={"progress": ctx.progress})
    return run(config, ctx.paths["dataset"] / DATASET, out, log=ctx.log, on_step=ctx.on_step)


STAGE = Stage("pretrain", ("dataset",), lambda cfg: cfg.pretrain.model_dump(mode="json", exclude={"progress", "prefetch", "restart", "log_seconds"}),
              build, resumable=True)
