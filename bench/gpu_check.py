"""The prepared GPU check: everything hataori wants measured on a CUDA machine, in one run of about
8 minutes, ending in one JSON and one markdown table for BENCHMARKS.md.

Steps, most important first, each in its own process with its own time limit (a step that fails or
runs out of time is recorded, and the rest still run):

1. training: bench/train_bench.py --compile on GPT-2 124M (context 1024, batch 16, bf16 autocast):
   hataori's step with the chunked and with the plain loss against a nanoGPT-style step; tokens/s,
   MFU, peak GPU memory; goal >= 450k tokens/s on one H100-class GPU (stretch 550k).
2. cuda tests: pytest -m cuda (tests/test_cuda_device.py, tests/test_cuda_paths.py).
3. loss step: bench/loss_bench.py at GPT-2's batch (16 x 1024 tokens, bf16): time and peak memory.
4. generation: bench/generate_bench.py, GPT-2 124M in bf16, hataori vs transformers greedy.
5. evaluation: bench/val_loss_bench.py, validation-loss tokens/s, chunked vs plain loss.

`--dry-run` runs the same steps on the CPU at tiny sizes (and only collects the CUDA tests), so a
CPU test keeps this script working until a GPU is lent. Output: OUT/gpu_check.json (every figure),
OUT/gpu_check.md (the tables for BENCHMARKS.md) and OUT/gpu_check.log (every step's output); OUT
is --out, else $OUT, else bench/results/gpu-check. Exit status 1 when a step failed, else 0;
missed goals are reported, not failures.

    .venv/bin/python bench/gpu_check.py [--dry-run] [--out DIR] [--budget 480]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GOAL_TOKENS_PER_S, STRETCH_TOKENS_PER_S = 450_000, 550_000

# (name, command after the python executable, seconds allowed): on a GPU, then in the dry run.
GPU_STEPS = [
    ("training", ["bench/train_bench.py", "--compile", "--preset", "gpt2", "--batch-size", "16", "--loss", "both"], 330),
    ("cuda_tests", ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda_device.py",
                    "tests/test_cuda_paths.py"], 180),
    ("loss_step", ["bench/loss_bench.py", "--sizes", "gpt2"], 90),
    ("generation", ["bench/generate_bench.py", "--device", "cuda", "--presets", "gpt2"], 120),
    ("evaluation", ["bench/val_loss_bench.py"], 60),
]
DRY_STEPS = [
    ("training", ["bench/train_bench.py", "--device", "cpu", "--preset", "tiny", "--batch-size", "2", "--quick",
                  "--loss", "both"], 300),
    ("cuda_tests", ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--collect-only",
                    "tests/test_cuda_device.py", "tests/test_cuda_paths.py"], 180),
    ("loss_step", ["bench/loss_bench.py", "--device", "cpu", "--sizes", "tiny", "--quick", "--no-memory"], 300),
    ("generation", ["bench/generate_bench.py", "--device", "cpu", "--presets", "tiny", "--quick", "--new-tokens", "8"], 300),
    ("evaluation", ["bench/val_loss_bench.py", "--device", "cpu", "--preset", "tiny", "--batch-size", "2", "--quick"], 300),
]
BENCH_JSON = {"training", "loss_step", "generation", "evaluation"}  # steps whose script takes --json


def environment() -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(), "torch": torch.__version__,
           "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported(), gpu_count=torch.cuda.device_count())
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def run_step(name: str, args: list[str], seconds: float, work: Path, combined_log: Path) -> dict:
    cmd = [sys.executable, *args]
    result_file = work / f"{name}.json"
    if name in BENCH_JSON:
        cmd += ["--json", str(result_file)]
    log = work / f"{name}.log"
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=seconds, env=env).returncode
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        rc, status = None, f"out of time ({seconds:.0f} s)"
    record = {"status": status, "seconds": round(time.perf_counter() - t0, 1), "command": " ".join(args)}
    text = log.read_text(errors="replace")
    with open(combined_log, "a") as f:  # one log for all steps: the device returns few files
        f.write(f"\n===== {name}: {' '.join(args)} -> {status}\n{text}")
    if status != "ok":
        record["log_tail"] = text[-3000:]
    if result_file.exists():
        record["result"] = json.loads(result_file.read_text())
    if name == "cuda_tests":
        record["summary"] = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    return record


def goals(steps: dict, dry_run: bool) -> dict:
    rows = steps.get("training", {}).get("result", {}).get("rows", [])
    ours = [r for r in rows if r["loss_path"] != "nanogpt-style"]
    best = max(ours, key=lambda r: r["tokens_per_s"], default=None)
    out = {"training_tokens_per_s": best["tokens_per_s"] if best else None,
           "training_best_loss_path": best["loss_path"] if best else None,
           "goal_tokens_per_s": GOAL_TOKENS_PER_S, "stretch_tokens_per_s": STRETCH_TOKENS_PER_S}
    if not dry_run and best:
        out["goal_met"] = best["tokens_per_s"] >= GOAL_TOKENS_PER_S
        out["stretch_met"] = best["tokens_per_s"] >= STRETCH_TOKENS_PER_S
    gen = steps.get("generation", {}).get("result", {}).get("rows", [])
    if gen:
        out["generation_vs_transformers"] = gen[0]["ratio"]
    return out


def _fmt(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    env, steps = report["environment"], report["steps"]
    where = env.get("gpu") or f"CPU ({env['cpu_count']} cores), dry run"
    lines = [f"### GPU check (`make gpu-check`{', --dry-run' if report['dry_run'] else ''}), {env['date']}, {where}", "",
             f"torch {env['torch']}" + (f", CUDA {env.get('cuda')}" if env.get("cuda") else "")
             + f", transformers {env.get('transformers')}, Python {env['python']}.", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {s['status']}{' (' + s['summary'] + ')' if s.get('summary') else ''} | {s['seconds']} |"
              for name, s in steps.items()]
    training = steps.get("training", {}).get("result", {}).get("rows", [])
    if training:
        lines += ["", "| model (context, batch) | step | tokens/s | vs nanoGPT-style | MFU | peak GPU GB |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['preset']} ({r['context']}, {r['batch']}) | {r['step']} | {_fmt(r['tokens_per_s'])} | "
                  f"{_fmt(r['vs_baseline'], '.2f')}{'x' if r['vs_baseline'] else ''} | {_fmt(r['mfu'] and r['mfu'] * 100, '.1f')}{'%' if r['mfu'] else ''} | "
                  f"{_fmt(r['peak_gpu_gb'], '.1f')} |"
                  for r in training]
    loss = steps.get("loss_step", {}).get("result", {}).get("rows", [])
    if loss:
        lines += ["", "| loss step (tokens x width) | contender | ms | vs nanoGPT-style | step memory MB |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['size']} ({r['tokens']:,} x {r['width']}) | {r['contender']} | {r['ms']:.1f} | "
                  f"{r['speed_vs_nanogpt_style']:.2f}x | {_fmt(r.get('step_mb'))} |" for r in loss]
    gen = steps.get("generation", {}).get("result", {}).get("rows", [])
    if gen:
        lines += ["", "| generation | hataori tokens/s | transformers tokens/s | ratio | same tokens |", "|---|---:|---:|---:|---|"]
        lines += [f"| {r['preset']} ({r['dtype']}), {r['prompt_tokens']} + {r['new_tokens']} | {r['ours_tokens_per_s']:.1f} | "
                  f"{r['transformers_tokens_per_s']:.1f} | {r['ratio']:.2f}x | {'yes' if r['identical'] else 'no'} |" for r in gen]
    ev = steps.get("evaluation", {}).get("result", {}).get("rows", [])
    if ev:
        lines += ["", "| evaluation | loss path | tokens/s | vs plain |", "|---|---|---:|---:|"]
        lines += [f"| {r['preset']} ({r['context']}, {r['batch']}) | {r['loss_path']} | {_fmt(r['tokens_per_s'])} | "
                  f"{r['vs_plain']:.2f}x |" for r in ev]
    g = report["goals"]
    if g.get("training_tokens_per_s") is not None and not report["dry_run"]:
        lines += ["", f"Goal >= {GOAL_TOKENS_PER_S:,} tokens/s: {'met' if g.get('goal_met') else 'NOT met'} "
                  f"({_fmt(g['training_tokens_per_s'])} with the {g['training_best_loss_path']} loss; stretch "
                  f"{STRETCH_TOKENS_PER_S:,}: {'met' if g.get('stretch_met') else 'not met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the CPU rehearsal: tiny sizes, CUDA tests only collected")
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT, else bench/results/gpu-check")
    ap.add_argument("--budget", type=float, default=480, help="seconds for all steps; steps left when it is spent are skipped")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device: run `bench/gpu_check.py --dry-run` on the CPU", file=sys.stderr)
        return 2
    out = args.out or Path(os.environ.get("OUT") or REPO / "bench" / "results" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    deadline = time.monotonic() + args.budget
    steps: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="hataori-gpu-check-"))
    combined_log = out / "gpu_check.log"
    combined_log.write_text("")
    for name, cmd, seconds in (DRY_STEPS if args.dry_run else GPU_STEPS):
        left = deadline - time.monotonic()
        if left < 20:
            steps[name] = {"status": "skipped (budget spent)", "seconds": 0, "command": " ".join(cmd)}
            continue
        print(f"[gpu-check] {name}: {' '.join(cmd)}", flush=True)
        steps[name] = run_step(name, cmd, min(seconds, left), work, combined_log)
        print(f"[gpu-check] {name}: {steps[name]['status']} in {steps[name]['seconds']} s", flush=True)
    report = {"dry_run": args.dry_run, "environment": env, "steps": steps, "goals": goals(steps, args.dry_run)}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "gpu_check.md").write_text(table)
    print("\n" + table + f"\nwrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'} and {combined_log}")
    return 0 if all(s["status"] == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
