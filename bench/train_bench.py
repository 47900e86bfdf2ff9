"""GPT training throughput: hataori's training step against a nanoGPT-style step, same model, same run.

The baseline computes its step the way nanoGPT does: the head over the padded vocabulary (all
50,304 rows of the tied weight at GPT-2's vocabulary, so nanoGPT scores the padding too) and
F.cross_entropy on the contiguous (tokens x 50,304) logits, AdamW with weight decay on matrices
(fused on CUDA only, as nanoGPT does), clipping at 1.0, random ids made on the device, and the
same autocast and (with --compile) torch.compile as hataori's step. hataori's step is the loop's: its loader, its AdamW,
clipping, autocast, and the loss path `LoopConfig.loss` selects (`--loss chunked`, the default,
`plain`, or `both`). On the CPU the contenders alternate in rounds (the machine is shared); on
CUDA each runs alone, so its peak GPU memory is its own. Reports tokens/s, the ratio to the
baseline, MFU (against the GPU's bf16 peak) and peak GPU memory; --json writes them.

    .venv/bin/python bench/train_bench.py [--quick] [--preset tiny,small] [--batch-size 8] [--compile]
                                          [--loss chunked|plain|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from data_bench import synthetic_dataset  # noqa: E402

from model.config import GPTConfig  # noqa: E402
from model.dataset import RandomWindowLoader, TokenDataset  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.loop import autocast_for, make_optimizer, peak_flops  # noqa: E402
from model.settings import TrainConfig  # noqa: E402

BASELINE = "nanoGPT-style step (padded head, CE on contiguous logits)"


def nanogpt_style_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The head over every row of the tied weight, padding included, then cross-entropy on the
    contiguous (tokens x padded vocabulary) logits: how nanoGPT scores."""
    h, _ = model.hidden_states(x)
    logits = F.linear(h, model.transformer.wte.weight)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)


class Contender:
    """One training step to time: its own model, optimizer and batches."""

    def __init__(self, label: str, cfg: GPTConfig, batch: int, device: torch.device, compile_model: bool,
                 loss: str | None, dataset: TokenDataset, loop_cfg: TrainConfig):
        self.label, self.loss_path = label, loss
        torch.manual_seed(0)
        self.model = GPT(cfg).to(device)
        self.train_model = torch.compile(self.model) if compile_model and loss is not None else self.model
        if loss is None:  # nanoGPT's AdamW: weight decay on matrices, fused on CUDA only
            matrices = [p for p in self.model.parameters() if p.dim() >= 2]
            others = [p for p in self.model.parameters() if p.dim() < 2]
            self.opt = torch.optim.AdamW([{"params": matrices, "weight_decay": loop_cfg.weight_decay},
                                          {"params": others, "weight_decay": 0.0}],
                                         lr=loop_cfg.lr, betas=loop_cfg.betas, fused=device.type == "cuda")
        else:
            self.opt = make_optimizer(self.model, loop_cfg, device)
        autocast = autocast_for(loop_cfg, device)
        ctx = cfg.context_length
        if loss is None:  # the baseline
            loss_fn = torch.compile(nanogpt_style_loss) if compile_model else nanogpt_style_loss

            def step():
                x = torch.randint(0, cfg.vocab_size, (batch, ctx), device=device)
                with autocast():
                    loss_value = loss_fn(self.model, x, torch.roll(x, -1, 1))
                loss_value.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                return float(loss_value.detach())
        else:
            self.model.chunked_loss = loss == "chunked"
            loader = iter(RandomWindowLoader(dataset, batch, ctx, device=device, prefetch=2))

            def step():
                x, y = next(loader)
                with autocast():
                    _, loss_value = self.train_model(x, y)
                loss_value.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), loop_cfg.grad_clip)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                return float(loss_value.detach())
        self.step: Callable[[], float] = step
        self.seconds: list[float] = []  # per timed step, over all rounds
        self.peak_gb: float | None = None
        self.per_round = 0

    def run(self, steps: int, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append((time.perf_counter() - t0) / steps)


def rows_of(contenders: list[Contender], preset: str, cfg: GPTConfig, batch: int, device: torch.device) -> list[dict]:
    tokens = batch * cfg.context_length
    peak = peak_flops(device)
    flops_token = GPT(cfg).flops_per_token(cfg.context_length)
    base = next((c for c in contenders if c.loss_path is None), None)
    base_tps = tokens / statistics.median(base.seconds) if base else None
    rows = []
    for c in contenders:
        tps = tokens / statistics.median(c.seconds)
        rows.append({"preset": preset, "params_m": round(GPT(cfg).num_parameters() / 1e6, 1), "context": cfg.context_length,
                     "batch": batch, "step": c.label, "loss_path": c.loss_path or "nanogpt-style", "tokens_per_s": tps,
                     "vs_baseline": tps / base_tps if base_tps else None, "mfu": tps * flops_token / peak if peak else None,
                     "peak_gpu_gb": c.peak_gb, "rounds": len(c.seconds), "steps_per_round": c.per_round})
    return rows


def bench_preset(preset: str, batch: int, args, device: torch.device, dataset: TokenDataset, loop_cfg: TrainConfig,
                 report: Callable[[list[dict]], None]) -> list[dict]:
    """Times the contenders at one preset; `report` gets the rows so far after each one on CUDA
    (a GPU check cut short by its time limit still keeps what was measured)."""
    cfg = GPTConfig.preset(preset, vocab_size=50257)
    losses = ["chunked", "plain"] if args.loss == "both" else [args.loss]
    specs = [(BASELINE, None)] + [(f"hataori loop, {loss} loss", loss) for loss in losses]
    suffix = (", bf16 autocast" if device.type == "cuda" else ", fp32") + (", compile" if args.compile else "")
    rounds = 2 if args.quick else (4 if device.type == "cuda" else 5)
    per_round = 2 if args.quick else 10  # on the CPU: rounds of about 2 s, from the warm-up steps' time
    contenders: list[Contender] = []
    if device.type == "cuda":  # alone, one after the other: clean peak memory; hataori's default first
        for label, loss in specs[1:2] + specs[:1] + specs[2:]:
            c = Contender(label + suffix, cfg, batch, device, args.compile, loss, dataset, loop_cfg)
            torch.cuda.reset_peak_memory_stats()
            for _ in range(3):  # warm-up (and compilation)
                c.step()
            for _ in range(rounds):
                c.run(per_round, device)
            c.peak_gb = torch.cuda.max_memory_allocated() / 1e9
            c.per_round = per_round
            contenders.append(c)
            del c.model, c.train_model, c.opt, c.step
            torch.cuda.empty_cache()
            report(rows_of(contenders, preset, cfg, batch, device))
    else:  # shared CPUs: alternate rounds so that drift hits every contender alike
        contenders = [Contender(label + suffix, cfg, batch, device, args.compile, loss, dataset, loop_cfg) for label, loss in specs]
        t0 = time.perf_counter()
        for c in contenders:
            for _ in range(2):
                c.step()
        if not args.quick:
            per_round = max(1, min(10, round(2.0 / ((time.perf_counter() - t0) / (2 * len(contenders))))))
        for r in range(rounds):
            for c in (contenders if r % 2 == 0 else contenders[::-1]):
                c.run(per_round, device)
        for c in contenders:
            c.per_round = per_round
    return rows_of(contenders, preset, cfg, batch, device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None, help="comma-separated; default: gpt2 on CUDA, tiny,small on the CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CUDA, 8 on the CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile both contenders' models")
    ap.add_argument("--loss", choices=["chunked", "plain", "both"], default="both")
    ap.add_argument("--device", default=None, help="default: cuda when there is one")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    presets = (args.preset or ("gpt2" if device.type == "cuda" else "tiny,small")).split(",")
    batch = args.batch_size or (16 if device.type == "cuda" else 8)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print(f"\n## GPT training step: hataori vs a nanoGPT-style step ({device}, {torch.get_num_threads()} threads, "
          f"batch {batch}{', compile' if args.compile else ''})\n")
    rows: list[dict] = []

    def write_json(more: list[dict]) -> None:
        if args.json:
            args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                             "compile": args.compile, "rows": rows + more}, indent=2))

    with tempfile.TemporaryDirectory(prefix="hataori-train-bench-") as tmp:
        synthetic_dataset(Path(tmp) / "ds", 4_000_000, shard_tokens=4_000_000)
        dataset = TokenDataset(Path(tmp) / "ds")
        loop_cfg = TrainConfig(data=Path(tmp), out=Path(tmp), compile=args.compile)  # the defaults `hataori train` uses
        for preset in presets:
            rows += bench_preset(preset.strip(), batch, args, device, dataset, loop_cfg, write_json)
            write_json([])
    peak = peak_flops(device)
    common.print_table(
        ["preset (context, batch)", "step", "tokens/s", "vs nanoGPT-style", "MFU", "peak GPU GB"],
        [[f"{r['preset']}, {r['params_m']}M ({r['context']}, {r['batch']})", r["step"], r["tokens_per_s"],
          f"{r['vs_baseline']:.2f}x" if r["vs_baseline"] else "n/a", f"{r['mfu'] * 100:.1f}%" if r["mfu"] else "n/a",
          r["peak_gpu_gb"] if r["peak_gpu_gb"] is not None else "n/a"] for r in rows],
        notes=[f"Median of {rows[0]['rounds']} rounds per contender"
               + (" (alternating)" if device.type == "cpu" else "") + "; "
               + (f"MFU against {peak / 1e12:.0f} TFLOP/s bf16." if peak else "MFU: no peak known for this device.")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
