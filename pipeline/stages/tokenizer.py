"""Tokenizer: train one on the corpus documents (or take an existing tokenizer.json)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from model.config import TOKENIZER_FILE
from model.shard_format import sha256_file
from pipeline.config import TokenizerStageConfig
from pipeline.stages import corpus
from pipeline.stages.base import Stage

TOKENIZER = TOKENIZER_FILE


def run(config: TokenizerStageConfig, corpus_dir: Path, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    from tokenizer_rs import Tokenizer

    start = time.perf_counter()
    if config.file is not None:
        tok = Tokenizer.from_file(str(config.file))  # validates it
        shutil.copyfile(config.file, out_dir / TOKENIZER)
    else:
        tok = Tokenizer.train(corpus.documents(corpus_dir), config.vocab_size, min_frequency=config.min_frequency,
                              special_tokens=config.special_tokens, pretokenizer=config.preset, normalizer=config.normalizer,
                              max_token_length=config.max_token_length, show_progress=progress, model=config.model)
        tok.save(str(out_dir / TOKENIZER))
    sample = "".join(d for _, d in zip(range(200), corpus.documents(corpus_dir)))
    ids = tok.encode(sample, allowed_special="none")
    return {"vocab_size": tok.vocab_size, "model": tok.model, "pretokenizer": tok.pretokenizer,
            "seconds": round(time.perf_counter() - start, 2),
            "chars_per_token": round(len(sample) / max(1, len(ids)), 3)}


def key_config(cfg) -> dict[str, Any]:
    data = cfg.tokenizer.model_dump(mode="json")
    if cfg.tokenizer.file is not None:
        data["file_sha256"] = sha256_file(cfg.tokenizer.file)
    return data


STAGE = Stage("tokenizer", ("corpus",), key_config,
              lambda ctx, out: run(ctx.config.tokenizer, ctx.paths["corpus"], out, progress=ctx.progress))
