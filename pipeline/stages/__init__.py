"""Pipeline stages: plain functions over typed configs and paths that know nothing of Prefect.
Each module defines its `Stage`; this ordered registry is what `pipeline.runner` runs and caches
and `pipeline.flows` wraps in Prefect tasks. A new stage is one module and one entry here.

The stage modules import their heavy libraries (torch, tokenizer_rs) inside `build`, so reading
the registry (`hataori status`, config checks) stays fast."""

from __future__ import annotations

from pipeline.stages import corpus, dataset, eval, finetune, pretrain, report, tokenizer
from pipeline.stages.base import BuildContext, Stage

STAGES: tuple[Stage, ...] = (corpus.STAGE, tokenizer.STAGE, dataset.STAGE, pretrain.STAGE, finetune.STAGE, eval.STAGE,
                             report.STAGE)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
RENAMED = {"shards": "dataset"}  # old stage names still accepted by --force

__all__ = ["STAGES", "BY_NAME", "RENAMED", "Stage", "BuildContext"]
