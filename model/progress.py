"""How a training run shows itself: a progress bar on a terminal; elsewhere (a log file, a
scheduled flow, `--no-progress`) one line through Python logging every `every_seconds` and at each
evaluation, so a log read later (or Prefect, which captures the `hataori` logger) tells the story.
A callback (`on_step`) lets the caller follow along, e.g. the pipeline's progress in the Prefect
UI; nothing here knows of Prefect."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hataori.train")
OnStep = Callable[[int, int, dict[str, Any]], None]  # (steps done, total steps, the step's metrics record)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class TrainingProgress:
    def __init__(self, *, total: int, start: int, show: bool, bar: bool, every_seconds: float = 30.0,
                 on_step: OnStep | None = None, what: str = "train"):
        self.total, self.start, self.show, self.what = total, start, show, what
        self.every_seconds, self.on_step = every_seconds, on_step
        self.began = self.last_line = time.monotonic()
        self.bar = None
        if show and bar and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=what, unit="step", dynamic_ncols=True)

    def step(self, done: int, record: dict[str, Any]) -> None:
        if self.show:
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.1e}", tok_s=f"{record['tokens_per_s']:,.0f}")
                self.bar.update(1)
            elif done == self.total or done == self.start + 1 or time.monotonic() - self.last_line >= self.every_seconds:
                self.last_line = time.monotonic()
                log.info(self.line(done, record))
        if self.on_step is not None:
            self.on_step(done, self.total, record)

    def line(self, done: int, record: dict[str, Any]) -> str:
        elapsed = time.monotonic() - self.began
        eta = elapsed / max(done - self.start, 1) * (self.total - done)
        mfu = f" | MFU {record['mfu'] * 100:.1f}%" if record.get("mfu") else ""
        return (f"{self.what} step {done:,}/{self.total:,} ({done / self.total:.0%}) | loss {record['loss']:.4f} | "
                f"lr {record['lr']:.2e} | {record['tokens_per_s']:,.0f} tok/s{mfu} | ETA {duration(eta)}")

    def evaluated(self, done: int, record: dict[str, Any]) -> None:
        """One line per evaluation (validation figures), and the sampled text when there is one."""
        if not self.show:
            return
        figures = [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_") and isinstance(v, (int, float))
                   and math.isfinite(v)]
        lines = [f"{self.what} eval at step {done:,}: " + (", ".join(figures) or "no validation data")]
        if record.get("sample"):
            lines.append(f"{self.what} sample at step {done:,}: {' '.join(str(record['sample']).split())[:300]}")
        for text in lines:
            self.bar.write(text) if self.bar is not None else log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.show:
            log.info(f"{self.what} done: {self.total:,} steps in {duration(time.monotonic() - self.began)}")
