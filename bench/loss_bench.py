"""The language-model loss step alone (head + cross-entropy, forward and backward): time and peak
memory of hataori's chunked path (model/chunked_loss.py) against the plain path (logits over the
real vocabulary, then F.cross_entropy) and a nanoGPT-style one (the head over the padded vocabulary,
cross-entropy on the contiguous logits), with GPT-2's vocabulary (50,257, padded to 50,304).

Sizes: the tokens of one batch of 8 at the `tiny` (64 wide, context 64) and `small` (256 wide,
context 256) presets; `--sizes gpt2` is GPT-2 124M's batch of 16 x 1024 (for GPUs).

Time: the contenders alternate in one process; the median step is reported. Memory on the CPU:
each contender runs one step in a fresh child process, and the figure is how far its resident set
rose above what it held before the step (VmHWM reset through /proc/self/clear_refs), i.e. what the
step allocates: logits, their gradient, the weight's gradient. On CUDA: max_memory_allocated over
the step, less what was allocated before it. `--sweep` also times chunk sizes.

    .venv/bin/python bench/loss_bench.py [--quick] [--sizes tiny,small] [--sweep] [--json out.json]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.chunked_loss import default_chunk_rows, linear_cross_entropy  # noqa: E402

VOCAB, PADDED = 50257, 50304
SIZES = {"tiny": (8 * 64, 64), "small": (8 * 256, 256), "gpt2": (16 * 1024, 768)}  # (tokens, width)
CONTENDERS = ("nanoGPT-style", "plain", "chunked")


def loss_fn(name: str, chunk_rows: int | None = None):
    if name == "nanoGPT-style":
        return lambda h, w, y: F.cross_entropy(F.linear(h, w).view(-1, PADDED), y.view(-1), ignore_index=-1)
    if name == "plain":
        return lambda h, w, y: F.cross_entropy(F.linear(h, w[:VOCAB]).float(), y, ignore_index=-100)
    return lambda h, w, y: linear_cross_entropy(h, w, y, VOCAB, chunk_rows)


def make_inputs(tokens: int, width: int, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(0)
    w = (torch.randn(PADDED, width, generator=g) * 0.02).to(device).requires_grad_()
    h = torch.randn(tokens, width, generator=g).to(device).requires_grad_()
    y = torch.randint(0, VOCAB, (tokens,), generator=g).to(device)
    return h, w, y


def one_step(fn, h, w, y, autocast) -> None:
    with autocast():
        loss = fn(h, w, y)
    loss.backward()
    h.grad = w.grad = None


def time_contenders(size: str, device: torch.device, reps: int, autocast, chunk_rows: list[int | None]) -> list[dict]:
    tokens, width = SIZES[size]
    h, w, y = make_inputs(tokens, width, device)
    fns = {name: loss_fn(name) for name in CONTENDERS}
    for rows in chunk_rows:
        if rows is not None:
            fns[f"chunked, {rows} rows"] = loss_fn("chunked", rows)
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        one_step(fn, h, w, y, autocast)  # warm-up
    for rep in range(reps):
        for name in (list(fns) if rep % 2 == 0 else list(fns)[::-1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            one_step(fns[name], h, w, y, autocast)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    base = statistics.median(seconds["nanoGPT-style"])
    return [{"size": size, "tokens": tokens, "width": width, "contender": name, "ms": statistics.median(s) * 1e3,
             "speed_vs_nanogpt_style": base / statistics.median(s)} for name, s in seconds.items()]


_CHILD = r"""
import gc, sys, torch
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
import loss_bench as lb
torch.set_num_threads({threads})
h, w, y = lb.make_inputs({tokens}, {width}, torch.device("cpu"))
small = lb.make_inputs(64, {width}, torch.device("cpu"))
for name in lb.CONTENDERS:  # initialise the kernels' libraries outside the measured step
    lb.one_step(lb.loss_fn(name), *small, __import__("contextlib").nullcontext)
del small
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident set
before = _rss_now_mb()
lb.one_step(lb.loss_fn({name!r}), h, w, y, __import__("contextlib").nullcontext)
_report(step_mb=_peak_rss_mb() - before, inputs_mb=(h.numel() + w.numel()) * 4 / 1048576)
"""


def memory_cpu(size: str, name: str) -> float:
    tokens, width = SIZES[size]
    code = _CHILD.format(repo=str(common.REPO), bench=str(common.BENCH), threads=torch.get_num_threads(),
                         tokens=tokens, width=width, name=name)
    # A fixed mmap threshold: every large block is mapped when allocated and unmapped when freed, so
    # the resident set follows what the step holds (glibc's adaptive threshold would keep freed
    # blocks of the warm-up in the heap, hiding part of the step's allocations).
    return common.run_child(code, env={"MALLOC_MMAP_THRESHOLD_": "131072"}, timeout=600)["step_mb"]


def memory_cuda(size: str, name: str, device: torch.device, autocast) -> float:
    tokens, width = SIZES[size]
    h, w, y = make_inputs(tokens, width, device)
    one_step(loss_fn(name), h, w, y, autocast)  # warm-up
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    one_step(loss_fn(name), h, w, y, autocast)
    torch.cuda.synchronize()
    mb = (torch.cuda.max_memory_allocated() - before) / 1048576
    del h, w, y
    torch.cuda.empty_cache()
    return mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None, help="comma-separated from tiny, small, gpt2 (default: tiny,small; gpt2 on CUDA)")
    ap.add_argument("--sweep", action="store_true", help="also time chunk sizes of 64 to 1024 rows")
    ap.add_argument("--device", default=None)
    ap.add_argument("--bf16", action="store_true", help="under bf16 autocast (the CUDA default of the training loop)")
    ap.add_argument("--no-memory", action="store_true", help="time only (no child processes)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = (args.sizes or ("gpt2" if device.type == "cuda" else "tiny,small")).split(",")
    bf16 = args.bf16 or device.type == "cuda"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    reps = 3 if args.quick else (10 if device.type == "cuda" else 7)
    sweep = [64, 128, 256, 512, 1024] if args.sweep else []
    print(f"\n## LM loss step (head + cross-entropy, forward + backward), vocab {VOCAB:,} ({device}, "
          f"{torch.get_num_threads()} threads, {'bf16 autocast' if bf16 else 'fp32'})\n")
    rows = []
    for size in sizes:
        timed = time_contenders(size, device, reps, autocast, sweep)
        for r in timed:
            if r["contender"] in CONTENDERS and not args.no_memory:
                r["step_mb"] = memory_cuda(size, r["contender"], device, autocast) if device.type == "cuda" \
                    else memory_cpu(size, r["contender"])
            r["logits_mb"] = r["tokens"] * VOCAB * 4 / 1048576
            r["default_chunk_rows"] = default_chunk_rows(PADDED, r["width"], device)
        rows += timed
    common.print_table(
        ["size (tokens x width)", "contender", "ms per step", "speed vs nanoGPT-style", "step memory MB", "fp32 logits MB"],
        [[f"{r['size']} ({r['tokens']:,} x {r['width']})", r["contender"], r["ms"], f"{r['speed_vs_nanogpt_style']:.2f}x",
          r.get("step_mb", float("nan")), r["logits_mb"]] for r in rows],
        notes=[f"Median of {reps} alternating steps. Step memory: "
               + ("max_memory_allocated over the step less what was allocated before it."
                  if device.type == "cuda" else "rise of the resident set over one step in a fresh process (VmHWM).")
               + " Chunked default rows per chunk: " + ", ".join(f"{s} {default_chunk_rows(PADDED, SIZES[s][1], device)}" for s in sizes)
               + " (split evenly: at most that many)."])
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__, "bf16": bf16, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
