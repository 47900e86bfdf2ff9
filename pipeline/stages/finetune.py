"""Fine-tune: instruction tuning or classification of the pretrained model, on records fetched like
corpus sources. Rerunning a killed stage resumes from its last checkpoint (the run directory lives in
the artifact). The prompt of the config is answered (or classified) for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import EOT, TOKENIZER_FILE
from pipeline.download import fetch
from pipeline.stages.base import BuildContext, Stage

RUN = "run"


def run(config: Any, tokenizer_json: Path, pretrain_run: Path, out_dir: Path, *, downloads: Path,
        progress: bool = True, on_step=None) -> dict[str, Any]:
    from pipeline.config import finetune_config

    files = {name: fetch(getattr(config, name), downloads, sha256=config.data_sha256 if name == "data" else None,
                         progress=progress)
             for name in ("data", "val_data", "test_data") if getattr(config, name)}
    cfg = finetune_config(config, base=pretrain_run, tokenizer=tokenizer_json, out=out_dir / RUN, **files)
    cfg = cfg.model_copy(update={"progress": progress})
    if config.task == "instruct":
        from model.finetune.instruct import finetune_instruct

        summary = finetune_instruct(cfg, on_step)
        stats = {"steps": summary["steps"], "final_loss": summary["final_loss"], "val_loss": summary.get("val_loss"),
                 "examples": summary["examples"], "test_exact_match": summary["test"]["exact_match"],
                 "test_rouge_l": summary["test"]["rouge_l"], "test_scored": summary["test"]["n"]}
        if config.prompt:
            stats.update(prompt=config.prompt, answer=answer(out_dir / RUN, config.prompt, cfg))
        return stats
    from model.finetune.classify import finetune_classify

    summary = finetune_classify(cfg, on_step)
    test = summary["scores"]["test"]
    stats = {"steps": summary["steps"], "final_loss": summary["final_loss"], "examples": summary["examples"],
             "labels": summary["labels"], "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
             "test_majority_baseline": test["majority_baseline"], "val_accuracy": summary["scores"]["val"]["accuracy"]}
    if config.prompt:
        stats.update(prompt=config.prompt, answer=classify(out_dir / RUN, config.prompt))
    return stats


def answer(run_dir: Path, instruction: str, cfg: Any) -> str:
    from model.checkpoint import load_pretrained
    from model.finetune.instruct import generate_responses
    from model.lora import merge_lora
    from tokenizer_rs import Tokenizer

    model, directory = load_pretrained(run_dir)
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    example = {"instruction": instruction, "input": "", "output": ""}
    return generate_responses(merge_lora(model).eval(), tokenizer, [example], cfg, tokenizer.token_to_id(EOT))[0]


def classify(run_dir: Path, text: str) -> str:
    from model.checkpoint import load_pretrained
    from model.finetune.classify import encode_texts, predict
    from tokenizer_rs import Tokenizer

    model, directory = load_pretrained(run_dir)
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    ids, _ = encode_texts(tokenizer, [text], model.config.context_length)
    probs = predict(model, ids)[0]
    best = int(probs.argmax())
    return f"{model.config.labels[best]} ({float(probs[best]):.3f})"


def key_config(cfg) -> dict[str, Any]:
    """The [finetune] section, plus the content digest of its local data files."""
    from pipeline.config import SourceConfig
    from pipeline.stages.corpus import local_digest

    data = cfg.finetune.model_dump(mode="json", exclude={"progress", "restart", "log_seconds"})
    for name in ("data", "val_data", "test_data"):
        if data[name]:
            data[f"{name}_content_sha256"] = local_digest(SourceConfig(url=data[name]))
    return data


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from pipeline.stages.pretrain import RUN as PRETRAIN_RUN
    from pipeline.stages.tokenizer import TOKENIZER

    return run(ctx.config.finetune, ctx.paths["tokenizer"] / TOKENIZER, ctx.paths["pretrain"] / PRETRAIN_RUN, out,
               downloads=ctx.downloads, progress=ctx.progress, on_step=ctx.on_step)


STAGE = Stage("finetune", ("tokenizer", "pretrain"), key_config, build,
              enabled=lambda cfg: cfg.finetune is not None, resumable=True)
