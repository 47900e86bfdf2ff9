"""Report: one markdown page with every stage's figures, the loss curve, a sample and where each
artifact lives (`report.md`; the flow also publishes it as a Prefect markdown artifact)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from model.config import EOT, TOKENIZER_FILE
from pipeline.stages.base import BuildContext, Stage


def sample(run_dir: Path, prompt: str, tokens: int = 48, seed: int = 0) -> str:
    from model.checkpoint import latest_valid, load_model
    from model.generate import generate
    from tokenizer_rs import Tokenizer

    ckpt = latest_valid(run_dir / "checkpoints")
    if ckpt is None:
        return "(no checkpoint)"
    model = load_model(ckpt).eval()
    tok = Tokenizer.from_file(str(ckpt / TOKENIZER_FILE))
    eot = tok.token_to_id(EOT)
    ids = tok.encode(prompt) if prompt else [eot]
    out = list(generate(model, ids, tokens, temperature=0.8, top_k=50, seed=seed, stop_id=eot))
    return tok.decode(out)


def finetune_section(stats: dict[str, Any], run_dir: Path) -> list[str]:
    """The fine-tuned model at work: the configured prompt's answer, then a few scored test responses
    (instruction tuning) or the test confusion matrix (classification)."""
    lines = ["## Fine-tuned model", ""]
    if stats.get("prompt"):
        lines += [f"Prompt: `{stats['prompt']}`", "", "```", str(stats.get("answer", "")).strip(), "```", ""]
    responses = run_dir / "eval" / "test_responses.jsonl"
    if responses.is_file():
        rows = [json.loads(line) for line in responses.read_text(encoding="utf-8").splitlines()[:3]]
        lines += [f"Test responses (all in `{responses}`):", ""]
        for r in rows:
            lines += [f"- **{r['instruction']}** {r['input']}".rstrip(), f"  - reference: {r['output']}",
                      f"  - model: {r['response']} (ROUGE-L {r['rouge_l']:.2f})"]
        lines.append("")
    scores = run_dir / "eval" / "scores.json"
    if "labels" in stats and scores.is_file():
        from model.finetune.metrics import format_confusion

        test = json.loads(scores.read_text())["test"]
        lines += ["Test confusion matrix:", "", "```", format_confusion(test), "```", ""]
    return lines


def human(value: Any) -> str:
    """A figure for people: thousands separators, 4 significant digits, lists and maps spelled out."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k} {human(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value)
    return " ".join(str(value).split())


def stats_table(stats: dict[str, Any]) -> list[str]:
    """A stage's figures as a two-column markdown table."""
    if not stats:
        return []
    rows = ["| figure | value |", "|---|---|"]
    bar = "|"
    rows += [f"| {k.replace('_', ' ')} | {human(v).replace(bar, '&#124;')} |" for k, v in stats.items()]
    return rows + [""]


def run(manifests: dict[str, dict[str, Any]], paths: dict[str, Path], out_dir: Path, *, prompt: str,
        store_root: Path = Path("artifacts"), name: str = "run") -> tuple[dict[str, Any], str]:
    lines = [f"# hataori run report: {name}", ""]
    for stage, m in manifests.items():
        lines += [f"## {stage}", "", f"Artifact `{paths[stage]}` (key `{m['key'][:16]}`, built {m['created_at']})", ""]
        lines += stats_table(m.get("stats", {}))
    run_dir = paths["pretrain"] / "run"
    if (run_dir / "loss.png").exists():
        shutil.copyfile(run_dir / "loss.png", out_dir / "loss.png")
        lines += ["## Loss curve", "", "![loss](loss.png)", ""]
    text = sample(run_dir, prompt)
    lines += ["## Sample", "", f"Prompt: `{prompt or '<|endoftext|>'}`", "", "```", (prompt + text).strip(), "```", ""]
    if "finetune" in paths:
        lines += finetune_section(manifests["finetune"]["stats"], paths["finetune"] / "run")
        if (paths["finetune"] / "run" / "loss.png").exists():
            shutil.copyfile(paths["finetune"] / "run" / "loss.png", out_dir / "finetune-loss.png")
            lines += ["Fine-tuning loss:", "", "![fine-tuning loss](finetune-loss.png)", ""]
    if "eval" in paths:
        from pipeline.stages.eval import report_section

        lines += report_section(manifests["eval"], paths["eval"], store_root, name)
    markdown = "\n".join(lines)
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    return {"report": str(out_dir / "report.md"), "sample": text}, markdown


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    upstream = [s for s in STAGE.upstream if s in ctx.paths]
    stats, _ = run({s: ctx.manifests[s] for s in upstream}, {s: ctx.paths[s] for s in upstream}, out, prompt="",
                   store_root=ctx.config.artifacts, name=ctx.config.name)
    return stats


STAGE = Stage("report", ("corpus", "tokenizer", "dataset", "pretrain", "finetune", "eval"), lambda cfg: {"name": cfg.name},
              build)
