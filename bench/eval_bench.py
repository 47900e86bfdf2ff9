"""hataori eval against lm-evaluation-harness's `hf` backend, side by side in one run: the same model
(exported as a transformers GPT-2 directory, fp32), the same task file, the same batch size, the
same device (the CPU here), each tool in its own fresh process. Goal: hataori >= 2x faster.

The model is the `small` preset (4 layers, 256 wide, context 256) over a Japanese byte-level BPE
(`ja` pre-tokenizer, vocabulary 8,000, trained on the Aozora works), randomly initialised with a
fixed seed: speed does not depend on the weights, and both tools must still agree on every figure
(the table shows both tools' acc and acc_norm; the script exits 1 when they differ).

Two timings per tool and task:
- evaluation: inside the process, after imports and model loading: task loading, request
  building, scoring and metrics (lm-eval: `simple_evaluate` with an `HFLM` built beforehand;
  hataori: `load_task` + `evaluate`);
- command: the whole `lm_eval ...` / `hataori eval ...` command line, start-up included, wall time.

Tasks: evals/jcommonsenseqa/jcommonsenseqa.yaml zero-shot (short contexts, 5 choices) and 3-shot
(contexts ~4x longer, where scoring the shared context once matters most).

(Not to be confused with val_loss_bench.py, the speed of the validation loss during training.)

    .venv/bin/python bench/eval_bench.py [--quick] [--batch-size 16] [--limit 500] [--repeat 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

TASK = common.REPO / "evals" / "jcommonsenseqa" / "jcommonsenseqa.yaml"
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 256, "context_length": 256}

LM_EVAL_CHILD = r"""
import os, sys, time, logging, warnings
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
export, task_dir, batch, limit, shots = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
os.chdir(task_dir)  # lm-eval (datasets) resolves relative data_files against the working directory
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
lm = HFLM(pretrained=export, dtype="float32", batch_size=batch, device="cpu")
manager = TaskManager(include_path=task_dir)
t0 = time.perf_counter()
out = simple_evaluate(model=lm, tasks=["jcommonsenseqa"], task_manager=manager, limit=limit, num_fewshot=shots,
                      log_samples=False, verbosity="ERROR")
seconds = time.perf_counter() - t0
r = out["results"]["jcommonsenseqa"]
_report(seconds=seconds, acc=r["acc,none"], acc_norm=r["acc_norm,none"], threads=torch.get_num_threads())
"""

HATAORI_CHILD = r"""
import sys, time, warnings
warnings.simplefilter("ignore")
export, task, batch, limit, shots = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import torch
from model.checkpoint import load_pretrained
from model.evaluation.harness import evaluate
from model.evaluation.tasks import load_task
from tokenizer_rs import Tokenizer
model, directory = load_pretrained(export)
tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
t0 = time.perf_counter()
ev = evaluate(model.eval(), tok, tasks=[load_task(task)], limit=limit, num_fewshot=shots, batch_size=batch, progress=False)
seconds = time.perf_counter() - t0
r = ev.results["tasks"]["jcommonsenseqa"]
_report(seconds=seconds, acc=r["acc"], acc_norm=r["acc_norm"], threads=torch.get_num_threads())
"""


def make_model(root: Path, quick: bool) -> Path:
    import torch

    from model.config import GPTConfig
    from model.gpt import GPT
    from model.hf import export_hf_gpt2
    from tokenizer_rs import Tokenizer

    text = common.aozora_path().read_text(encoding="utf-8")
    if quick:
        text = common.utf8_prefix(text, 2_000_000)
    tok = Tokenizer.train(iter(text.splitlines(keepends=True)), 8000, special_tokens=[common.EOT], pretokenizer="ja",
                          show_progress=False)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **MODEL))
    return export_hf_gpt2(model, root / "export", root / "tokenizer.json")


def command_seconds(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 items, one repetition, no command timing")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="items per task (default 500; quick 100)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions, interleaved (default 2; quick 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of both tools (default 1: on a shared 2-core machine two OpenMP threads "
                         "that wait on each other make every small op many times slower, for both tools alike)")
    args = ap.parse_args()
    limit = args.limit or (100 if args.quick else 500)
    repeat = args.repeat or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        root = Path(tmp)
        env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"),
               "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(args.threads),
               "MKL_NUM_THREADS": str(args.threads)}
        os.environ.update(env)
        t0 = time.perf_counter()
        export = make_model(root, args.quick)
        print(f"model: small preset {MODEL}, ja BPE vocab 8,000, random init (seed 0); built in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        task_dir = str(TASK.parent)
        # Untimed: lets `datasets` build its cache of the JSON files, so no timed run pays for it.
        common.run_child(LM_EVAL_CHILD, [str(export), task_dir, "16", "5", "0"], env=env)

        rows = []
        for shots in (0, 3):
            runs: dict[str, list[dict]] = {"lm-eval (hf)": [], "hataori": []}
            for _ in range(repeat):
                for name, code, where in (("lm-eval (hf)", LM_EVAL_CHILD, task_dir), ("hataori", HATAORI_CHILD, str(TASK))):
                    runs[name].append(common.run_child(code, [str(export), where, str(args.batch_size), str(limit), str(shots)],
                                                       env=env))
            best = {name: min(r["seconds"] for r in rs) for name, rs in runs.items()}
            figures = {name: (rs[0]["acc"], rs[0]["acc_norm"]) for name, rs in runs.items()}
            row = {"task": f"jcommonsenseqa {shots}-shot", "items": limit, "conts": limit * 5,
                   "lm_eval_s": best["lm-eval (hf)"], "hataori_s": best["hataori"],
                   "ratio": best["lm-eval (hf)"] / best["hataori"], "same_figures": figures["lm-eval (hf)"] == figures["hataori"],
                   "acc": figures["hataori"], "threads": runs["hataori"][0]["threads"]}
            if not args.quick:
                lm_cmd = [str(Path(common.PYTHON).with_name("lm_eval")), "--model", "hf", "--model_args",
                          f"pretrained={export},dtype=float32", "--tasks", "jcommonsenseqa", "--include_path", task_dir,
                          "--device", "cpu", "--batch_size", str(args.batch_size), "--limit", str(limit),
                          "--num_fewshot", str(shots)]
                ours_cmd = [str(Path(common.PYTHON).with_name("hataori")), "eval", "--checkpoint", str(export), "--task",
                            str(TASK), "--batch-size", str(args.batch_size), "--limit", str(limit), "--num-fewshot",
                            str(shots), "--no-progress"]
                full_env = {**os.environ, **env}
                row["lm_eval_cmd_s"] = command_seconds(lm_cmd, Path(task_dir), full_env)
                row["hataori_cmd_s"] = command_seconds(ours_cmd, Path(task_dir), full_env)
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\nbatch size {args.batch_size}, CPU, fp32, torch threads {rows[0]['threads']}; best of {repeat} "
          f"interleaved runs per tool, each a fresh process\n")
    header = "| task | items (continuations) | lm-eval hf s | hataori s | speedup | acc / acc_norm (both tools) | same figures |"
    if not args.quick:
        header += " lm_eval command s | hataori eval command s | command speedup |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        line = (f"| {r['task']} | {r['items']} ({r['conts']}) | {r['lm_eval_s']:.2f} | {r['hataori_s']:.2f} | "
                f"**{r['ratio']:.2f}x** | {r['acc'][0]:.4f} / {r['acc'][1]:.4f} | {'yes' if r['same_figures'] else 'NO'} |")
        if not args.quick:
            line += f" {r['lm_eval_cmd_s']:.1f} | {r['hataori_cmd_s']:.1f} | {r['lm_eval_cmd_s'] / r['hataori_cmd_s']:.2f}x |"
        print(line)
    worst = min(r["ratio"] for r in rows)
    print(f"\ngoal: hataori eval >= 2x faster than lm-eval's hf backend: {'met' if worst >= 2 else 'NOT met'} "
          f"(lowest ratio {worst:.2f}x)")
    return 0 if all(r["same_figures"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
