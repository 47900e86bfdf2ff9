"""Runs every benchmark and prints all tables (markdown) to stdout.

    .venv/bin/python bench/run_all.py [--quick] [--morph] [--soak 300]

Exits non-zero only when a benchmark fails to run (or a correctness check inside it crashes);
slower-than-peer results are reported, not treated as errors.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCHMARKS = ["tokenizer_train.py", "tokenizer_encode.py", "japanese_tokenizer.py", "data_bench.py", "train_bench.py",
              "loss_bench.py", "val_loss_bench.py", "generate_bench.py", "vs_nanogpt.py",  # vs_nanogpt: NANOGPT_DIR
              "finetune_bench.py", "api_bench.py", "eval_bench.py", "japanese_models.py"]


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs busy (with anything) over a short window, from /proc/stat."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return 1 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run all benchmarks.")
    ap.add_argument("--quick", action="store_true", help="small inputs and one or two repetitions")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for other processes to leave the CPUs (< 15%% busy)")
    ap.add_argument("--morph", action="store_true",
                    help="japanese_tokenizer.py also trains on fugashi morphemes (needs fugashi + unidic-lite)")
    ap.add_argument("--soak", type=float, default=0, metavar="S",
                    help="api_bench.py also runs its soak for S seconds (the issue's: 300)")
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.wait_idle
    while time.monotonic() < deadline and cpu_busy_fraction(2.0) > 0.15:
        time.sleep(3)

    print("# hataori benchmarks" + (" (quick)" if args.quick else ""))
    print("\n```\n" + common.machine_description())
    busy = cpu_busy_fraction()
    print(f"CPU busy before start (other processes): {busy * 100:.0f}%")
    print("```", flush=True)
    if busy > 0.2:
        print(f"\nWARNING: the machine was {busy * 100:.0f}% busy before the benchmarks started; "
              "absolute numbers and multi-thread scaling will suffer (ratios less so).", flush=True)

    failed = []
    t0 = time.perf_counter()
    for script in BENCHMARKS:
        cmd = [common.PYTHON, str(common.BENCH / script)] + (["--quick"] if args.quick else [])
        if args.morph and script == "japanese_tokenizer.py":
            cmd.append("--morph")
        if args.soak and script == "api_bench.py":
            cmd += ["--soak", str(args.soak)]
        print(f"\n---\n\n$ {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}\n", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"\n({script}: {time.perf_counter() - t:.0f} s, exit {rc})", flush=True)
        if rc != 0:
            failed.append(script)
    busy = cpu_busy_fraction(1.0)
    print(f"\nTotal: {time.perf_counter() - t0:.0f} s. CPU busy after the run (other processes): {busy * 100:.0f}%")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
