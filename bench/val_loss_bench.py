"""Evaluation speed: validation-loss throughput (forward only, no gradient) of the GPT with the
chunked loss against the plain one (logits, then F.cross_entropy), same model and batches, same
run, alternating. On CUDA under bf16 autocast, as the training loop evaluates; fp32 on the CPU.
Also checks that both paths give the same loss.

    .venv/bin/python bench/val_loss_bench.py [--quick] [--preset gpt2] [--batch-size 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.config import GPTConfig  # noqa: E402
from model.gpt import GPT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None, help="default: gpt2 on CUDA, small on the CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CUDA, 8 on the CPU")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("gpt2" if device.type == "cuda" else "small")
    batch = args.batch_size or (16 if device.type == "cuda" else 8)
    cfg = GPTConfig.preset(preset, vocab_size=50257)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    torch.manual_seed(0)
    model = GPT(cfg).to(device).eval()
    g = torch.Generator(device="cpu").manual_seed(1)
    batches = [torch.randint(0, cfg.vocab_size, (batch, cfg.context_length + 1), generator=g).to(device) for _ in range(2)]
    reps = 2 if args.quick else (10 if device.type == "cuda" else 5)

    @torch.no_grad()
    def val_loss(chunked: bool, i: int) -> float:
        model.chunked_loss = chunked
        x = batches[i % len(batches)]
        with autocast():
            _, loss = model(x[:, :-1], x[:, 1:])
        return float(loss)

    losses = {name: val_loss(name == "chunked", 0) for name in ("chunked", "plain")}  # warm-up, and the check
    seconds: dict[str, list[float]] = {"chunked": [], "plain": []}
    for rep in range(reps):
        for name in (["chunked", "plain"] if rep % 2 == 0 else ["plain", "chunked"]):
            t0 = time.perf_counter()
            val_loss(name == "chunked", rep)  # float(loss) waits for the device
            seconds[name].append(time.perf_counter() - t0)
    tokens = batch * cfg.context_length
    rows = [{"preset": preset, "batch": batch, "context": cfg.context_length, "loss_path": name,
             "tokens_per_s": tokens / statistics.median(s), "loss": losses[name]} for name, s in seconds.items()]
    for r in rows:
        r["vs_plain"] = r["tokens_per_s"] / rows[1]["tokens_per_s"]
    print(f"\n## Evaluation (validation loss, no gradient): chunked vs plain loss ({device}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'})\n")
    common.print_table(["model (context, batch)", "loss path", "tokens/s", "vs plain", "loss"],
                       [[f"{preset} ({cfg.context_length}, {batch})", r["loss_path"], r["tokens_per_s"],
                         f"{r['vs_plain']:.2f}x", f"{r['loss']:.6f}"] for r in rows],
                       notes=[f"Median of {reps} alternating batches per path."])
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
