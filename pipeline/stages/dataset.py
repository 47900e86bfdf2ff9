"""Dataset: encode the corpus documents into a sharded token dataset (`dataset/` in the artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.dataset_writer import DatasetConfig, build_dataset
from pipeline.stages import corpus
from pipeline.stages.base import Stage
from pipeline.stages.tokenizer import TOKENIZER

DATASET = "dataset"


def run(config: DatasetConfig, corpus_dir: Path, tokenizer_dir: Path, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    m = build_dataset(corpus.documents(corpus_dir), tokenizer_dir / TOKENIZER, out_dir / DATASET, config,
                      source_key=str(corpus_dir), progress=progress)
    return {split: {"tokens": s["tokens"], "documents": s["documents"], "shards": len(s["shards"])} for split, s in m["splits"].items()}


STAGE = Stage("dataset", ("corpus", "tokenizer"), lambda cfg: cfg.dataset.model_dump(mode="json", exclude={"batch_bytes"}),
              lambda ctx, out: run(ctx.config.dataset, ctx.paths["corpus"], ctx.paths["tokenizer"], out, progress=ctx.progress))
