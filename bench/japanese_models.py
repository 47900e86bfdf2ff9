"""Which Japanese tokenizer makes the better model? Equal-compute small GPTs on the Aozora works,
one per tokenizer, compared on what does not depend on the tokenizer: bits per character of
held-out works (lm-eval's rolling log-likelihood, `model.evaluation`) and JCommonsenseQA zero-shot
accuracy (evals/jcommonsenseqa, 1,119 validation items). Loss per token is shown too, to show why
it cannot answer the question (a token is a different amount of text for each tokenizer).

Tokenizers: hataori byte-level BPE with the `ja`, `ja-isolated` and `gpt2` pre-tokenizers, at
vocabulary 8,000 and 16,000 (with <|endoftext|>), trained on 270 of the Aozora works (every work with
index % 10 == 5 is held out, as in japanese_tokenizer.py; every second of the others trains).

Equal compute: the same architecture (4 layers, 4 heads, 128 wide, context 128 tokens), the same
steps, batch and learning-rate schedule, so every model sees the same number of tokens and does the
same non-embedding work per token (the head grows with the vocabulary and is counted in the
parameters column). A tokenizer that packs more characters into a token therefore shows the model
more text: that is its advantage, and it is part of the question.

Each model is trained and evaluated in its own child process with one torch thread; two children
run at a time. Steps are fixed, so the figures do not depend on how busy the machine is (only the
times do).

    .venv/bin/python bench/japanese_models.py            # 75 minutes on 2 busy cores (2026-12-02)
    .venv/bin/python bench/japanese_models.py --quick    # 60 steps, vocab 8,000 only: ~5 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

PRESETS = ("ja", "ja-isolated", "gpt2")
DEFAULT_PRESET = "ja-isolated"  # configs/ja.toml and the README's Japanese recipe (`ja` until this benchmark)
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": 128}
TRAIN = {"batch_size": 16, "lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 50}
HELDOUT_CHARS = 4_000  # scored from the opening of each of the 60 held-out works (all authors, ~240k characters)

CHILD = r"""
import json, sys, time, resource, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from model.checkpoint import load_pretrained
from model.evaluation.harness import evaluate
from model.evaluation.tasks import load_task
from model.pretrain import TrainConfig, train
from pipeline.dataset_writer import DatasetConfig, build_dataset
from tokenizer_rs import Tokenizer

spec = json.loads(sys.argv[1])
root = __import__("pathlib").Path(spec["dir"])
train_works = json.loads(open(spec["train"], encoding="utf-8").read())
heldout = json.loads(open(spec["heldout"], encoding="utf-8").read())
t0 = time.perf_counter()
lines = [l for w in train_works for l in w.splitlines(keepends=True)]
tok = Tokenizer.train(iter(lines), spec["vocab"], special_tokens=["<|endoftext|>"], pretokenizer=spec["preset"],
                      show_progress=False)
tok.save(str(root / "tokenizer.json"))
tokenizer_s = time.perf_counter() - t0
build_dataset(iter(train_works), root / "tokenizer.json", root / "data", DatasetConfig(val_fraction=0.02), progress=False)
held_ids = tok.encode_batch(heldout)
chars_per_token = sum(len(h) for h in heldout) / sum(len(i) for i in held_ids)
t0 = time.perf_counter()
summary = train(TrainConfig(data=root / "data", out=root / "run", preset="small", model=spec["model"],
                            max_steps=spec["steps"], eval_interval=spec["steps"], checkpoint_interval=spec["steps"],
                            eval_batches=20, sample_tokens=0, device="cpu", progress=False, **spec["train_args"]))
train_s = time.perf_counter() - t0
rows = [json.loads(l) for l in (root / "run" / "metrics.jsonl").read_text().splitlines()]
val_loss = [r["val_loss"] for r in rows if "val_loss" in r][-1]
model, directory = load_pretrained(root / "run")
t0 = time.perf_counter()
ev = evaluate(model.eval(), tok, tasks=[load_task(spec["task"])], texts={"heldout": heldout}, batch_size=32, progress=False)
eval_s = time.perf_counter() - t0
params = sum(p.numel() for p in model.parameters())
_report(tokenizer_s=tokenizer_s, train_s=train_s, eval_s=eval_s, val_loss=val_loss, chars_per_token=chars_per_token,
        params=params, vocab=tok.vocab_size, results=ev.results)
"""


def works() -> tuple[list[str], list[str]]:
    """Training works (every second of the 540, ~5.4 MB, spread over all eight authors: the models
    see ~1.7M characters, so more text would only slow the tokenizers down) and held-out works."""
    text = common.aozora_path().read_text(encoding="utf-8")
    all_works = text.rstrip("\n").split("\n\n")
    train = [w + "\n" for i, w in enumerate(all_works) if i % 10 != 5]
    heldout = [w + "\n" for i, w in enumerate(all_works) if i % 10 == 5]
    return train[::2], heldout


def opening(work: str, chars: int) -> str:
    """The first `chars` characters of a work, cut after a line end (whole works when shorter)."""
    if len(work) <= chars:
        return work
    cut = work.rfind("\n", 0, chars)
    return work[: cut + 1] if cut > 0 else work[:chars]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 steps, vocabulary 8,000 only, 1,000 characters per held-out work")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default 500)")
    ap.add_argument("--vocab", default=None, help="comma-separated vocabulary sizes (default 8000,16000)")
    ap.add_argument("--jobs", type=int, default=2, help="models trained at the same time (one thread each)")
    ap.add_argument("--seed", type=int, default=1337, help="seed of the weights and batches (the training default)")
    args = ap.parse_args()
    steps = args.steps or (60 if args.quick else 500)
    vocabs = [int(v) for v in (args.vocab or ("8000" if args.quick else "8000,16000")).split(",")]
    train, heldout = works()
    heldout = [opening(w, 1_000 if args.quick else HELDOUT_CHARS) for w in heldout]
    held_chars = sum(len(h) for h in heldout)
    print(f"train: {len(train)} works, {sum(len(w.encode()) for w in train) / 1e6:.1f} MB; held out: openings of {len(heldout)} works, "
          f"{held_chars:,} characters; {steps} steps x {TRAIN['batch_size']} x {MODEL['context_length']} tokens "
          f"= {steps * TRAIN['batch_size'] * MODEL['context_length'] / 1e6:.2f}M tokens per model, seed {args.seed}", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ja-models-") as tmp:
        root = Path(tmp)
        (root / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
        (root / "heldout.json").write_text(json.dumps(heldout, ensure_ascii=False), encoding="utf-8")
        specs = []
        for vocab in vocabs:
            for preset in PRESETS:
                d = root / f"{preset}-{vocab}"
                d.mkdir()
                specs.append({"dir": str(d), "train": str(root / "train.json"), "heldout": str(root / "heldout.json"),
                              "preset": preset, "vocab": vocab, "steps": steps, "model": MODEL,
                              "train_args": {**TRAIN, "seed": args.seed},
                              "task": str(common.REPO / "evals" / "jcommonsenseqa" / "jcommonsenseqa.yaml")})

        def run(spec):
            res = common.run_child(CHILD, [json.dumps(spec)], env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            print(f"  {spec['preset']:<12} {spec['vocab']:>6,}: done in {res['wall_s']:.0f} s (tokenizer {res['tokenizer_s']:.0f} s, "
                  f"training {res['train_s']:.0f} s, evaluation {res['eval_s']:.0f} s)", flush=True)
            return spec, res

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            done = list(pool.map(run, specs))
    rows = []
    for spec, res in done:
        t = res["results"]["tasks"]["jcommonsenseqa"]
        b = res["results"]["bpb"]["heldout"]
        rows.append({"preset": spec["preset"], "vocab": spec["vocab"], "params": res["params"], "cpt": res["chars_per_token"],
                     "val_loss": res["val_loss"], "bpc": b["bits_per_char"], "bpb": b["bits_per_byte"], "acc": t["acc"],
                     "acc_se": t["acc_stderr"], "acc_norm": t["acc_norm"], "train_s": res["train_s"]})
    rows.sort(key=lambda r: r["bpc"])
    print(f"\nall models: {time.perf_counter() - t_start:.0f} s. Sorted by held-out bits per character (lower is better); "
          "JCommonsenseQA chance = 0.20.\n")
    print("| pre-tokenizer | vocab | params | held-out chars/token | val loss / token (not comparable) | "
          "held-out bits/char | bits/byte | JCQA acc (± se) | JCQA acc_norm | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = f"**{r['preset']}**" if r["preset"] == DEFAULT_PRESET else r["preset"]
        print(f"| {name} | {r['vocab']:,} | {r['params'] / 1e6:.2f}M | {r['cpt']:.2f} | {r['val_loss']:.3f} | "
              f"{r['bpc']:.3f} | {r['bpb']:.4f} | {r['acc']:.3f} ± {r['acc_se']:.3f} | {r['acc_norm']:.3f} | {r['train_s']:.0f} |")
    best = rows[0]
    print(f"\nbest by bits per character: {best['preset']} at vocabulary {best['vocab']:,} ({best['bpc']:.3f}); "
          f"today's default for Japanese: {DEFAULT_PRESET}")
    for vocab in vocabs:
        at = sorted((r for r in rows if r["vocab"] == vocab), key=lambda r: r["bpc"])
        print(f"  vocabulary {vocab:,}: " + " < ".join(f"{r['preset']} {r['bpc']:.3f}" for r in at))
    return 0


if __name__ == "__main__":
    sys.exit(main())
