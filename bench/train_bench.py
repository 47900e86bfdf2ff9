"""GPT training throughput: hataori's training step against a plain eager fp32 baseline, same run.

On CUDA, hataori's step is bf16 autocast + TF32 + fused AdamW (+ torch.compile with --compile);
the baseline is the same model in fp32 eager with the default AdamW. On the CPU both are fp32 and
the comparison shows the cost of hataori's loop (data loader, clipping, accumulation) against a
bare loop. Reports tokens/s, MFU (against the device's bf16 peak) and peak GPU memory.

    .venv/bin/python bench/train_bench.py [--quick] [--preset gpt2] [--batch-size 16] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.config import GPTConfig  # noqa: E402
from model.dataset import RandomWindowLoader, TokenDataset  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.loop import autocast_for  # noqa: E402
from model.pretrain import make_optimizer, peak_flops, TrainConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_bench import synthetic_dataset  # noqa: E402


def measure(step, steps: int, tokens_per_step: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens_per_step * steps / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None, help="default: gpt2 on CUDA, small on the CPU")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("gpt2" if device.type == "cuda" else "small")
    cfg = GPTConfig.preset(preset, vocab_size=50257)
    ctx = cfg.context_length
    batch = args.batch_size or (16 if device.type == "cuda" else 4)
    steps = 5 if args.quick else (30 if device.type == "cuda" else 10)
    tokens = batch * ctx
    peak = peak_flops(device)
    print(f"\n## GPT training throughput: {preset} ({GPT(cfg).num_parameters() / 1e6:.1f}M), context {ctx}, batch {batch}, {device}\n")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    with tempfile.TemporaryDirectory(prefix="hataori-train-bench-") as tmp:
        synthetic_dataset(Path(tmp) / "ds", 4_000_000, shard_tokens=4_000_000)
        ds = TokenDataset(Path(tmp) / "ds")
        rows = []

        # Baseline: plain eager fp32, default AdamW, random ids made on the device.
        torch.manual_seed(0)
        base = GPT(cfg).to(device)
        base_opt = torch.optim.AdamW(base.parameters(), lr=1e-4)

        def baseline_step():
            x = torch.randint(0, cfg.vocab_size, (batch, ctx), device=device)
            _, loss = base(x, torch.roll(x, -1, 1))
            loss.backward()
            base_opt.step()
            base_opt.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tps = measure(baseline_step, steps, tokens, device)
        mem = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
        rows.append(["eager fp32 baseline", tps, tps * GPT.flops_per_token(base, ctx) / peak if peak else None, mem])
        del base, base_opt
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # hataori: the loop's settings (bf16 autocast on CUDA, fused AdamW, loader, clipping).
        torch.manual_seed(0)
        model = GPT(cfg).to(device)
        train_model = torch.compile(model) if args.compile else model
        loop_cfg = TrainConfig(data=Path(tmp), out=Path(tmp))  # the defaults `hataori train` uses
        opt = make_optimizer(model, loop_cfg, device)
        loader = iter(RandomWindowLoader(ds, batch, ctx, device=device, prefetch=2))
        autocast = autocast_for(loop_cfg, device)

        def hataori_step():
            x, y = next(loader)
            with autocast():
                _, loss = train_model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tps = measure(hataori_step, steps, tokens, device)
        mem = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
        label = ("hataori (bf16 autocast, TF32, fused AdamW" if device.type == "cuda" else "hataori loop (fp32") \
            + (", compile)" if args.compile else ")")
        rows.append([label, tps, tps * model.flops_per_token(ctx) / peak if peak else None, mem])

    base_tps = rows[0][1]
    common.print_table(["step", "tokens/s", "vs baseline", "MFU", "peak GPU GB"],
                       [[r[0], r[1], f"{r[1] / base_tps:.2f}x", f"{r[2] * 100:.1f}%" if r[2] else "n/a", r[3] if r[3] else "n/a"] for r in rows],
                       notes=[f"MFU against {peak / 1e12:.0f} TFLOP/s bf16" if peak else "MFU: no peak known for this device (CPU)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
