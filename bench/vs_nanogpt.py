"""hataori's pretraining against unmodified nanoGPT (karpathy/nanoGPT, kept outside this repository),
side by side: the same tokens, the same model shape, the same batch, fp32 on the CPU, alternating runs.

Tokens: tinyshakespeare ($HATAORI_DATA_DIR/tinyshakespeare.txt) in GPT-2's vocabulary, built once
by hataori into a dataset; its train and validation splits are also written as nanoGPT's raw
uint16 `train.bin` / `val.bin`, so both read the same token streams. Shapes: `tiny` (2 layers, 2
heads, 64 wide, context 64) and `small` (4 layers, 4 heads, 256 wide, context 256), bias on, no
dropout, batch 8, AdamW, clipping 1.0, no compilation. nanoGPT runs its own train.py (device cpu,
dtype float32, compile off, the vocabulary padded to 50,304 as its default for a dataset without
meta.pkl); hataori runs `python -m pipeline.cli pretrain`. Step time: nanoGPT's own per-iteration
log ("time ...ms"), hataori's metrics.jsonl (tokens_per_s), the median over each run's steps after
the first five; the runs alternate (nanoGPT, hataori, hataori, nanoGPT, ...), and the figure is the
median over runs (and the best runs' ratio). Both get the same number of threads (OMP_NUM_THREADS, default: all cores).

    .venv/bin/python bench/vs_nanogpt.py --nanogpt /path/to/nanoGPT [--quick] [--shapes tiny,small] [--runs 3]

Without a nanoGPT checkout (--nanogpt or $NANOGPT_DIR) the script says so and exits 0: nanoGPT is a
peer to measure against, not a dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

SHAPES = {"tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
          "small": dict(n_layer=4, n_head=4, n_embd=256, block_size=256)}
NANO_ITER = re.compile(r"^iter (\d+): loss ([0-9.]+), time ([0-9.]+)ms")
SKIP = 5  # first steps of every run left out (allocation, warm-up)


def build_tokens(work: Path) -> tuple[Path, Path]:
    """(hataori dataset directory, nanoGPT data directory) holding the same tinyshakespeare tokens."""
    from model.dataset import TokenDataset
    from pipeline.dataset_writer import DatasetConfig, build_dataset

    text_file = common.data_dir() / "tinyshakespeare.txt"
    tokenizer = common.gpt2_files()[2]
    ds = work / "hataori-data"
    text = text_file.read_text(encoding="utf-8")
    build_dataset(iter(text.split("\n\n")), tokenizer, ds, DatasetConfig(val_fraction=0.1), progress=False)
    nano = work / "nanogpt" / "data" / "hataori_shakespeare"
    nano.mkdir(parents=True)
    for split in ("train", "val"):
        d = TokenDataset(ds, split)
        d.tokens(0, len(d)).astype(np.uint16).tofile(nano / f"{split}.bin")
    return ds, nano


def run_nanogpt(nanogpt: Path, work: Path, shape: dict, batch: int, steps: int, env: dict) -> list[tuple[float, float]]:
    """(loss, seconds) of each of nanoGPT's iterations."""
    args = [f"--{k}={v}" for k, v in {
        "dataset": "hataori_shakespeare", "device": "cpu", "compile": False, "dtype": "float32", "bias": True,
        "dropout": 0.0, "batch_size": batch, "gradient_accumulation_steps": 1, "max_iters": steps, "lr_decay_iters": steps,
        "warmup_iters": 10, "eval_interval": 1_000_000, "eval_iters": 1, "log_interval": 1, "always_save_checkpoint": False,
        "out_dir": str(work / "nano-out"), **shape}.items()]
    p = subprocess.run([common.PYTHON, str(nanogpt / "train.py"), *args], cwd=work / "nanogpt", env=env,
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"nanoGPT failed:\n{p.stderr[-3000:]}")
    out = [(float(m.group(2)), float(m.group(3)) / 1000) for m in map(NANO_ITER.match, p.stdout.splitlines()) if m]
    if len(out) < SKIP + 2:
        raise RuntimeError(f"nanoGPT logged {len(out)} iterations:\n{p.stdout[-2000:]}")
    return out


def run_hataori(ds: Path, work: Path, shape: dict, batch: int, steps: int, env: dict) -> list[tuple[float, float]]:
    run = work / "hataori-run"
    shutil.rmtree(run, ignore_errors=True)
    sets = {"model.n_layer": shape["n_layer"], "model.n_head": shape["n_head"], "model.n_embd": shape["n_embd"],
            "model.context_length": shape["block_size"], "model.dropout": 0.0, "model.bias": "true", "dtype": '"float32"',
            "warmup_steps": 10, "eval_interval": 1_000_000, "checkpoint_interval": 1_000_000, "sample_tokens": 0}
    cmd = [common.PYTHON, "-m", "pipeline.cli", "pretrain", "--data", str(ds), "--out", str(run), "--preset", "tiny",
           "--batch-size", str(batch), "--context-length", str(shape["block_size"]), "--device", "cpu", "--no-progress",
           "--max-steps", str(steps)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    p = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"hataori failed:\n{p.stderr[-3000:]}")
    tokens = batch * shape["block_size"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["loss"], tokens / r["tokens_per_s"]) for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, default=os.environ.get("NANOGPT_DIR"), help="a nanoGPT checkout (train.py, model.py)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", default="tiny,small")
    ap.add_argument("--runs", type=int, default=None, help="runs of each per shape (default 4, 1 with --quick)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    print("\n## Pretraining step: hataori vs unmodified nanoGPT (CPU, fp32, same tokens and shapes)\n")
    if not args.nanogpt or not (Path(args.nanogpt) / "train.py").is_file():
        print("skipped: no nanoGPT checkout (pass --nanogpt DIR or set NANOGPT_DIR to a clone of karpathy/nanoGPT)")
        return 0
    nanogpt = Path(args.nanogpt).resolve()
    runs = args.runs or (1 if args.quick else 4)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(common.REPO)}
    commit = subprocess.run(["git", "-C", str(nanogpt), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows, report = [], []
    with tempfile.TemporaryDirectory(prefix="hataori-vs-nanogpt-") as tmp:
        work = Path(tmp)
        ds, _ = build_tokens(work)
        for name in ("train.py", "model.py", "configurator.py"):  # nanoGPT reads these from its working directory
            shutil.copy(nanogpt / name, work / "nanogpt" / name)
        for shape_name in args.shapes.split(","):
            shape = SHAPES[shape_name]
            steps = (20 if args.quick else 60) if shape_name == "tiny" else (10 if args.quick else 25)
            times: dict[str, list[float]] = {"nanoGPT": [], "hataori": []}
            last_losses: dict[str, list[float]] = {"nanoGPT": [], "hataori": []}
            order = [("nanoGPT", "hataori"), ("hataori", "nanoGPT")]
            for r in range(runs):
                for who in order[r % 2]:
                    log = run_nanogpt(nanogpt, work, shape, args.batch_size, steps, env) if who == "nanoGPT" \
                        else run_hataori(ds, work, shape, args.batch_size, steps, env)
                    times[who].append(statistics.median(s for _, s in log[SKIP:]))
                    last_losses[who].append(statistics.mean(loss for loss, _ in log[-5:]))
            nano_s, ours_s = statistics.median(times["nanoGPT"]), statistics.median(times["hataori"])
            tokens = args.batch_size * shape["block_size"]
            for who, s in (("nanoGPT (train.py, unmodified)", nano_s), ("hataori pretrain", ours_s)):
                key = "nanoGPT" if who.startswith("nano") else "hataori"
                best = min(times["nanoGPT"]) / min(times[key])
                rows.append([f"{shape_name} ({shape['n_layer']}x{shape['n_embd']}, ctx {shape['block_size']}, batch {args.batch_size})",
                             who, s * 1000, tokens / s, f"{nano_s / s:.2f}x", f"{best:.2f}x", f"{statistics.mean(last_losses[key]):.3f}",
                             ", ".join(f"{t * 1000:.0f}" for t in times[key])])
                report.append({"shape": shape_name, "who": key, "step_ms": s * 1000, "tokens_per_s": tokens / s,
                               "speed_vs_nanogpt": nano_s / s, "best_run_vs_nanogpt_best": best, "runs_ms": [t * 1000 for t in times[key]],
                               "loss_last_steps": statistics.mean(last_losses[key]), "steps": steps})
    common.print_table(["shape", "trainer", "ms per step", "tokens/s", "speed vs nanoGPT", "best run vs best run",
                        "loss (last 5 steps)", "each run's median ms"],
                       rows, notes=[f"nanoGPT at {commit or '?'}; {args.threads} threads each; median over the steps after the "
                                    f"first {SKIP} of each run, then over {runs} alternating runs each (on a shared machine the "
                                    "fastest runs are the least disturbed: the best-run ratio). Losses: different initial "
                                    "weights and batch orders, so equal only roughly (same model, same data)."])
    if args.json:
        args.json.write_text(json.dumps({"nanogpt_commit": commit, "threads": args.threads, "rows": report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
