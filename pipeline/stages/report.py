"""Report: one markdown page with every stage's figures, the loss curve, a sample and where each
artifact lives (`report.md`; the flow also publishes it as a Prefect markdown artifact)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def sample(run_dir: Path, prompt: str, tokens: int = 48, seed: int = 0) -> str:
    from model.checkpoint import latest_valid, load_model
    from model.generate import generate
    from tokenizer_rs import Tokenizer

    ckpt = latest_valid(run_dir / "checkpoints")
    if ckpt is None:
        return "(no checkpoint)"
    model = load_model(ckpt).eval()
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    ids = tok.encode(prompt) if prompt else [eot]
    out = list(generate(model, ids, tokens, temperature=0.8, top_k=50, seed=seed, stop_id=eot))
    return tok.decode(out)


def run(manifests: dict[str, dict[str, Any]], paths: dict[str, Path], out_dir: Path, *, prompt: str) -> tuple[dict[str, Any], str]:
    lines = ["# hataori run report", ""]
    for stage, m in manifests.items():
        lines += [f"## {stage}", "", f"- artifact: `{paths[stage]}` (key `{m['key'][:16]}`, built {m['created_at']})"]
        lines += [f"- {k}: {v}" for k, v in m.get("stats", {}).items()]
        lines.append("")
    run_dir = paths["pretrain"] / "run"
    if (run_dir / "loss.png").exists():
        shutil.copyfile(run_dir / "loss.png", out_dir / "loss.png")
        lines += ["## Loss curve", "", "![loss](loss.png)", ""]
    text = sample(run_dir, prompt)
    lines += ["## Sample", "", f"Prompt: `{prompt or '<|endoftext|>'}`", "", "```", (prompt + text).strip(), "```", ""]
    markdown = "\n".join(lines)
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    return {"report": str(out_dir / "report.md"), "sample": text}, markdown
