"""A training run's directory: one writer at a time, its metrics log, and where a rerun resumes.

    RUN/
        .lock               held by the process that trains (a second one waits, and says so)
        checkpoints/        step-NNNNNN/ (see model.checkpoint), damaged ones kept as *.damaged
        metrics.jsonl       one JSON record per step, appended; rewritten only atomically
        loss.png
        verified.json       what this run has checked of its dataset (digests, token ids)

Nothing here is deleted that cannot be rebuilt: when no checkpoint can be used although the run
made some, training refuses to start over unless told to (`restart`), and then keeps the old
metrics as `metrics.jsonl.before-restart`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model import checkpoint as ckpt
from model.files import exclusive, remove_stale_temps, set_aside, write_bytes_atomic
from model.hf import CheckpointError

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


@contextlib.contextmanager
def owned(out: Path, main: bool = True) -> Iterator[None]:
    """Exclusive use of the run directory `out` for the main process, with the temp files and
    half-written checkpoints of killed runs cleaned away first (only our own names)."""
    if not main:
        yield
        return
    with exclusive(out, "the run directory", on_wait=lambda message: print(message, file=sys.stderr, flush=True)):
        remove_stale_temps(out)
        remove_stale_temps(out / CHECKPOINTS)
        yield


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log. A torn last line (a process killed mid-write) is left out;
    any other line that is not a record is an error naming the file and line."""
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no step")
        except ValueError:
            if number == len(lines):  # the last line, without its newline: a write cut short
                warnings.warn(f"{path}: line {number} was cut short by an interrupted write; left out", stacklevel=2)
                continue
            raise CheckpointError(f"{path}: line {number} is not a metrics record ({line[:60]!r})") from None
        rows.append(row)
    return rows


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    write_bytes_atomic(path, ["".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()])


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


class RunMismatch(ValueError):
    """The run directory holds checkpoints of another model: not damage, a different run."""


ARCHITECTURE = ("vocab_size", "context_length", "n_layer", "n_head", "n_embd", "bias", "labels", "lora")


def check_same_model(directory: Path, config: Any) -> None:
    """Refuses to resume a model of another shape than the checkpoint's (a changed --preset or
    model setting): that is another run, which must not be mistaken for a damaged checkpoint."""
    saved = ckpt.read_config(directory)
    changed = [f"{name} {getattr(saved, name)!r} -> {getattr(config, name)!r}" for name in ARCHITECTURE
               if getattr(saved, name) != getattr(config, name)]
    if changed:
        raise RunMismatch(f"{directory.parent.parent} holds checkpoints of another model ({', '.join(changed)}): "
                          "use another run directory, or --restart to train this model there from step 0")


def resume(out: Path, restore, checkpoint_interval: int, restart: bool, main: bool) -> tuple[int, Path | None]:
    """(step to start from, checkpoint restored or None). `restore(dir)` loads one checkpoint into
    the live objects; the newest that verifies *and* restores wins, the damaged newer ones are set
    aside (by the main process). Raises CheckpointError rather than silently starting over."""
    root = out / CHECKPOINTS
    damaged: list[tuple[Path, str]] = []
    chosen, start = None, 0
    for directory in reversed(ckpt.list_checkpoints(root)):
        try:
            ckpt.verify(directory)
            start = restore(directory)
            chosen = directory
            break
        except CheckpointError as e:
            damaged.append((directory, str(e)))
    if main:
        for directory, problem in damaged:
            kept = set_aside(directory, ckpt.DAMAGED)
            warnings.warn(f"damaged checkpoint: {problem}; kept as {kept.name}", stacklevel=2)
    if chosen is not None:
        if main:
            write_metrics(out / METRICS, [r for r in read_metrics(out / METRICS) if r["step"] < start])
        return start, chosen
    _refuse_to_start_over(out, checkpoint_interval, restart, damaged)
    if main and (out / METRICS).is_file():
        if restart:
            set_aside(out / METRICS, "before-restart")
        else:  # killed before its first checkpoint: those steps are simply run again
            (out / METRICS).unlink()
    return 0, None


def _refuse_to_start_over(out: Path, checkpoint_interval: int, restart: bool, damaged: list[tuple[Path, str]]) -> None:
    """A run that made checkpoints and lost them all does not begin again from step 0 unasked."""
    if restart:
        return
    kept_aside = ckpt.set_aside_damaged(out / CHECKPOINTS)
    logged = read_metrics(out / METRICS)
    steps = max((r["step"] + 1 for r in logged), default=0)
    if damaged or kept_aside:
        failures = "; ".join(problem for _, problem in damaged) or ", ".join(p.name for p in kept_aside)
        raise CheckpointError(f"{out}: no usable checkpoint (damaged: {failures}); the damaged ones are kept as "
                              f"*.{ckpt.DAMAGED}. Pass --restart (restart=true) to train again from step 0")
    if steps >= checkpoint_interval:
        raise CheckpointError(f"{out / METRICS} records {steps} steps but {out / CHECKPOINTS} holds no checkpoint; "
                              "pass --restart (restart=true) to train again from step 0 (the old metrics are kept)")
