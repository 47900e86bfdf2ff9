"""Fine-tuning end to end on the CPU: hataori pretrains small GPTs itself, then fine-tunes them as
classifiers, in one run. Nothing is downloaded and no outside weights are used.

1. English: a byte-level BPE (``tokenizer_rs``, vocabulary 8,192 with ``<|endoftext|>``) trained on
   the shared English books, a sharded dataset (``pipeline.dataset_writer.build_dataset``), and a small GPT
   pretrained with ``model.pretrain.train`` for a fixed number of steps.
2. SMS Spam Collection, the book's setup (classes balanced by undersampling, 70/10/20 split), with
   ``model.finetune.classify.finetune_classify``: (a) full fine-tuning, (b) the default (last block
   + final LayerNorm + head), (c) LoRA adapters (+ final LayerNorm + head), and (d) a control: full
   fine-tuning of the same architecture from random weights (no pretraining). Target: test
   accuracy >= 96% with full fine-tuning. ``--seeds 1337,1,2,3`` repeats the fine-tunes on other
   seeds (each seed is another balanced subsample and split) and adds a table of the spread.
3. JNLI (JGLUE v1.3): a small Japanese GPT pretrained the same way on Aozora Bunko (pre-tokenizer
   ``ja``), fully fine-tuned on jnli-v1.3-valid (sentence1 + sentence2, 90% train / 10% val) and
   scored on jnli-v1.3-test, against the majority-class baseline.

Every training run (each pretraining and each fine-tune) is its own fresh ``python -c`` child, so
its wall time, CPU time (user + sys over all its threads) and peak RSS (VmHWM) belong to it alone.
Pretraining runs a fixed number of steps, so the models (and the accuracies) do not depend on how
busy the machine is; only the times do.

    .venv/bin/python bench/finetune_bench.py            # about 13-15 minutes on 2 idle cores
    .venv/bin/python bench/finetune_bench.py --quick    # tiny model, few steps: about 3 minutes
    .venv/bin/python bench/finetune_bench.py --skip-ja --seeds 1337,1,2,3   # SMS over 4 splits
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.finetune.classify import ClassifyConfig, balanced, load_labeled  # noqa: E402
from model.finetune.common import split_records  # noqa: E402
from model.finetune.records import read_records, split_indices  # noqa: E402
from model.pretrain import TrainConfig  # noqa: E402
from pipeline.dataset_writer import DatasetConfig, build_dataset, iter_documents  # noqa: E402
from tokenizer_rs import Tokenizer  # noqa: E402

EOT = common.EOT

# `model` overrides the `small` preset (4 layers, 4 heads, 256 wide): 128 wide and context 128 is
# what pretrains in ~5 minutes on 2 cores (~4k tokens/s). SMS messages are <= 128 tokens but for 4
# of 1,046 training texts. Fine-tuning settings were chosen on validation accuracy over 4 seeds.
FULL: dict[str, Any] = {
    "en_vocab": 8192,
    "ja_vocab": 8000,
    "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": 128},
    "pretrain": {"max_steps": 600, "batch_size": 16, "lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 50},
    "ja_pretrain": {"max_steps": 600, "batch_size": 16, "lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 50},
    "sms": {"epochs": 5, "batch_size": 16, "warmup_steps": 10},
    "sms_lr": {"full": 1e-3, "default": 2e-3, "lora": 2e-3, "scratch": 1e-3},
    "lora": {"rank": 8, "alpha": 16},
    "jnli": {"epochs": 3, "batch_size": 16, "lr": 5e-4, "warmup_steps": 10},
    "ja_slice_bytes": None,
}
QUICK: dict[str, Any] = {
    **FULL,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 128},
    "pretrain": {**FULL["pretrain"], "max_steps": 60, "warmup_steps": 10},
    "ja_pretrain": {**FULL["ja_pretrain"], "max_steps": 40, "warmup_steps": 10},
    "sms": {**FULL["sms"], "epochs": 2},
    "jnli": {**FULL["jnli"], "epochs": 1},
    "ja_slice_bytes": 2_000_000,
}

_CHILD_COMMON = r"""
import sys, time, resource, warnings
sys.path.insert(0, sys.argv[1])
def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return r.ru_utime + r.ru_stime
"""

PRETRAIN_CHILD = _CHILD_COMMON + r"""
warnings.simplefilter("ignore")
import torch
from model.pretrain import TrainConfig, train
cfg = TrainConfig.model_validate_json(sys.argv[2])
rss0 = _rss_now_mb()
c0, t0 = _cpu_s(), time.perf_counter()
summary = train(cfg)
_report(seconds=time.perf_counter() - t0, cpu_s=_cpu_s() - c0, rss_before_mb=rss0, summary=summary,
        threads=torch.get_num_threads())
"""

FINETUNE_CHILD = _CHILD_COMMON + r"""
import torch
from model.checkpoint import latest_valid, load_model
from model.finetune.classify import ClassifyConfig, finetune_classify
cfg = ClassifyConfig.model_validate_json(sys.argv[2])
rss0 = _rss_now_mb()
c0, t0 = _cpu_s(), time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    summary = finetune_classify(cfg)
seconds, cpu_s = time.perf_counter() - t0, _cpu_s() - c0
# Trainable parameters: exactly the tensors AdamW kept state for (the final checkpoint's optimizer.pt).
ckpt = latest_valid(cfg.out / "checkpoints")
state = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu")["state"]
trainable = sum(s["exp_avg"].numel() for s in state.values())
total = sum(p.numel() for p in load_model(ckpt).parameters())
_report(seconds=seconds, cpu_s=cpu_s, rss_before_mb=rss0, steps=summary["steps"], examples=summary["examples"],
        scores=summary["scores"], trainable=trainable, total=total, threads=torch.get_num_threads(),
        peak_gpu_gb=summary.get("peak_memory_gb"), warnings=sorted({str(w.message) for w in caught}))
"""


def train_tokenizer(source: Any, vocab: int, out: Path, **kw: Any) -> float:
    """Trains and saves a byte-level BPE; returns the seconds of the training call."""
    t0 = time.perf_counter()
    tok = Tokenizer.train(source, vocab, special_tokens=[EOT], show_progress=False, **kw)
    seconds = time.perf_counter() - t0
    tok.save(str(out))
    return seconds


def build(docs, tokenizer_json: Path, out: Path) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    manifest = build_dataset(docs, tokenizer_json, out, DatasetConfig(val_fraction=0.02), progress=False)
    return manifest, time.perf_counter() - t0


def pretrain(dataset: Path, out: Path, model: dict[str, Any], p: dict[str, Any], device: str) -> dict[str, Any]:
    """model.pretrain.train in a fresh child: the `small` preset with `model` overrides."""
    steps = p["max_steps"]
    cfg = TrainConfig(data=dataset, out=out, preset="small", model=model, context_length=model["context_length"],
                      eval_interval=max(1, steps // 4), checkpoint_interval=steps, keep_checkpoints=1, eval_batches=20,
                      sample_tokens=0, progress=False, device=device, **p)
    res = common.run_child(PRETRAIN_CHILD, [str(common.REPO), cfg.model_dump_json()])
    res["config"] = cfg
    return res


def random_init(base: Path, out: Path, seed: int) -> Path:
    """A run directory holding `base`'s architecture and tokenizer with fresh GPT-2 initial weights."""
    import torch

    from model.checkpoint import load_model, resolve_checkpoint, save_checkpoint
    from model.gpt import GPT

    src = resolve_checkpoint(base)
    torch.manual_seed(seed)
    fresh = GPT(load_model(src).config)
    save_checkpoint(out / "checkpoints", 0, fresh, torch.optim.AdamW(fresh.parameters()), {}, src / "tokenizer.json", 1)
    return out


def finetune(cfg: ClassifyConfig) -> dict[str, Any]:
    res = common.run_child(FINETUNE_CHILD, [str(common.REPO), cfg.model_dump_json()])
    res["config"] = cfg
    return res


def state_mb(res: dict[str, Any]) -> float:
    """fp32 weights (all) + gradients and AdamW's two moments (trainable only): 4N + 12T bytes."""
    return (4 * res["total"] + 12 * res["trainable"]) / 1e6


def params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pretrain_row(name: str, tok_s: float, manifest: dict[str, Any], build_s: float, res: dict[str, Any]) -> list[Any]:
    cfg = res["config"]
    m = cfg.model
    tokens = cfg.max_steps * cfg.batch_size * cfg.context_length
    train_tokens = manifest["splits"]["train"]["tokens"]
    return [name, manifest["tokenizer"]["vocab_size"], tok_s, f"{train_tokens / 1e6:.2f}M", build_s,
            f"{m['n_layer']}x{m['n_embd']}, ctx {cfg.context_length}", cfg.max_steps,
            f"{tokens / 1e6:.2f}M ({tokens / train_tokens:.2f} ep)", res["seconds"], res["cpu_s"],
            tokens / res["seconds"], res["summary"].get("val_loss", float("nan")), res["peak_rss_mb"]]


FT_HEADERS = ["variant", "trainable / total", "trainable %", "lr", "steps", "weights+grads+AdamW MB", "peak RSS MB",
              "RSS growth MB", "wall s", "CPU s", "val acc", "test acc", "test macro-F1"]


def finetune_row(name: str, res: dict[str, Any], gpu: bool) -> list[Any]:
    s = res["scores"]
    row = [name, f"{params(res['trainable'])} / {params(res['total'])}", f"{100 * res['trainable'] / res['total']:.1f}%",
           f"{res['config'].lr:g}", res["steps"], state_mb(res), res["peak_rss_mb"], res["peak_rss_mb"] - res["rss_before_mb"],
           res["seconds"], res["cpu_s"], pct(s["val"]["accuracy"]), pct(s["test"]["accuracy"]), f"{s['test']['macro_f1']:.4f}"]
    return row + ([res["peak_gpu_gb"] or float("nan")] if gpu else [])


def sms_overlap(cfg: ClassifyConfig) -> str:
    """How many val/test messages occur verbatim in the training split (the collection has duplicates)."""
    splits = split_records(cfg, lambda p: balanced(load_labeled(p, cfg), cfg.seed))
    train = {t for t, _, _ in splits["train"]}
    parts = []
    for name in ("val", "test"):
        dup = [label for t, label, _ in splits[name] if t in train]
        parts.append(f"{len(dup)} of {len(splits[name])} {name} messages ({dup.count('spam')} spam)")
    return "Exact duplicates: " + " and ".join(parts) + " also occur verbatim in the training split."


def jnli_overlap(cfg: ClassifyConfig) -> str:
    """JNLI holds each caption pair in both orders: a random val split sees the reversed pair in train."""
    records = read_records(cfg.data)
    parts = split_indices(len(records), cfg.val_fraction, 0.0, cfg.seed)
    train = {(records[i]["sentence1"], records[i]["sentence2"]) for i in parts["train"]}
    val = [records[i] for i in parts["val"]]
    reversed_in_train = sum((r["sentence2"], r["sentence1"]) in train for r in val)
    test = read_records(cfg.test_data)
    test_in_train = sum((r["sentence1"], r["sentence2"]) in train or (r["sentence2"], r["sentence1"]) in train for r in test)
    return (f"Leak: {reversed_in_train} of {len(val)} val pairs have the same two sentences in reverse order in the "
            f"training split ({test_in_train} of {len(test)} test pairs do), so val accuracy overstates what the "
            "model learned; test accuracy is the figure to read.")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, few steps (about 3 minutes)")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="English pretraining steps (default 600, quick 60)")
    ap.add_argument("--ja-pretrain-steps", type=int, default=None, help="Japanese pretraining steps (default 600, quick 40)")
    ap.add_argument("--sms-epochs", type=float, default=None, help="default 5, quick 2")
    ap.add_argument("--jnli-epochs", type=float, default=None, help="default 3, quick 1")
    ap.add_argument("--seeds", default="1337", help="comma-separated fine-tuning seeds (each: another subsample and split)")
    ap.add_argument("--skip-ja", action="store_true", help="English only (no Aozora pretraining, no JNLI)")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-random-weights control")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--keep", type=Path, default=None, help="empty work directory to keep (default: a temp dir, deleted)")
    return ap.parse_args()


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The QUICK or FULL settings with the command line's overrides."""
    s = copy.deepcopy(QUICK if args.quick else FULL)
    for key, value in (("pretrain", args.pretrain_steps), ("ja_pretrain", args.ja_pretrain_steps)):
        if value:
            s[key]["max_steps"] = value
    if args.sms_epochs:
        s["sms"]["epochs"] = args.sms_epochs
    if args.jnli_epochs:
        s["jnli"]["epochs"] = args.jnli_epochs
    return s


def data_files() -> dict[str, Any]:
    data = common.data_dir()
    files = {"en": common.gutenberg_paths() + [data / "tinyshakespeare.txt"], "sms": data / "SMSSpamCollection.tsv",
             "jnli_train": data / "jglue" / "jnli-v1.3-valid.json", "jnli_test": data / "jglue" / "jnli-v1.3-test.json"}
    for f in (files["sms"], files["jnli_train"], files["jnli_test"], common.aozora_path(), *files["en"]):
        if not f.is_file():
            raise SystemExit(f"{f}: missing (see {data / 'SOURCES.md'})")
    return files


def english(work: Path, s: dict[str, Any], files: dict[str, Any], device: str) -> list[Any]:
    """Tokenizer, dataset (blank-line paragraphs) and pretraining on the English books; the table row."""
    print("\n[1/3] English: tokenizer, dataset, pretraining ...", flush=True)
    en = work / "en"
    en.mkdir()
    en_files = files["en"]
    tok_s = train_tokenizer([str(p) for p in en_files], s["en_vocab"], en / "tokenizer.json")
    manifest, build_s = build(iter_documents(en_files, DatasetConfig(doc_split="blank_line")), en / "tokenizer.json", en / "data")
    pre = pretrain(en / "data", en / "pretrain", s["model"], s["pretrain"], device)
    mb = sum(p.stat().st_size for p in en_files) / 1e6
    print(f"  {pre['seconds']:.0f} s, val loss {pre['summary'].get('val_loss', float('nan')):.3f}", flush=True)
    return pretrain_row(f"English ({len(en_files)} books, {mb:.1f} MB)", tok_s, manifest, build_s, pre)


def sms_variants(s: dict[str, Any], scratch: bool) -> list[tuple[str, str, dict[str, Any]]]:
    variants = [("(a) full fine-tuning", "full", {"trainable_blocks": "all"}),
                ("(b) default: last block + ln_f + head", "default", {}),
                (f"(c) LoRA r={s['lora']['rank']} alpha={s['lora']['alpha']:g} + ln_f + head", "lora", {"lora": s["lora"]})]
    if scratch:
        variants.append(("(d) control: full, random init", "scratch", {"trainable_blocks": "all"}))
    return variants


def sms(work: Path, s: dict[str, Any], files: dict[str, Any], seeds: list[int], variants, device: str):
    """Each variant (and seed) fine-tuned in a fresh child: results by (variant, seed), warnings seen."""
    print("\n[2/3] SMS spam fine-tuning ...", flush=True)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    warnings_seen: list[str] = []
    for seed in seeds:
        for label, key, extra in variants:
            base = random_init(work / "en" / "pretrain", work / f"init-{seed}", seed) if key == "scratch" else work / "en" / "pretrain"
            cfg = ClassifyConfig(base=base, data=files["sms"], columns=["label", "text"], balance=True,
                                 val_fraction=0.1, test_fraction=0.2, out=work / f"sms-{key}-{seed}", seed=seed,
                                 lr=s["sms_lr"][key], eval_interval=100_000, checkpoint_interval=100_000,
                                 keep_checkpoints=1, progress=False, device=device, **s["sms"], **extra)
            res = finetune(cfg)
            results[key, seed] = res
            warnings_seen += [w for w in res["warnings"] if w not in warnings_seen]
            print(f"  seed {seed} {label}: test accuracy {pct(res['scores']['test']['accuracy'])} "
                  f"({res['seconds']:.0f} s)", flush=True)
    return results, warnings_seen


def japanese(work: Path, s: dict[str, Any], files: dict[str, Any], device: str) -> tuple[list[Any], dict[str, Any]]:
    """Tokenizer, dataset (Aozora works cut into ~4 KB documents), pretraining, JNLI: the table row and JNLI's result."""
    print("\n[3/3] Japanese: tokenizer, dataset, pretraining, JNLI ...", flush=True)
    ja = work / "ja"
    ja.mkdir()
    text = common.aozora_path().read_text(encoding="utf-8")
    if s["ja_slice_bytes"]:
        text = common.utf8_prefix(text, s["ja_slice_bytes"])
    works = [w for w in text.split("\n\n") if w.strip()]
    docs = [d for w in works for d in common.chunk_lines(w)]
    tok_s = train_tokenizer(iter(works), s["ja_vocab"], ja / "tokenizer.json", pretokenizer="ja")
    manifest, build_s = build(iter(docs), ja / "tokenizer.json", ja / "data")
    pre = pretrain(ja / "data", ja / "pretrain", s["model"], s["ja_pretrain"], device)
    row = pretrain_row(f"Japanese (Aozora, {len(works)} works, {common.nbytes(text) / 1e6:.1f} MB)", tok_s, manifest, build_s, pre)
    print(f"  {pre['seconds']:.0f} s, val loss {pre['summary'].get('val_loss', float('nan')):.3f}", flush=True)
    cfg = ClassifyConfig(base=ja / "pretrain", data=files["jnli_train"], test_data=files["jnli_test"], text_field="sentence1",
                         text_pair_field="sentence2", label_field="label", val_fraction=0.1,
                         trainable_blocks="all", out=work / "jnli", eval_interval=100_000,
                         checkpoint_interval=100_000, keep_checkpoints=1, progress=False, device=device, **s["jnli"])
    jnli = finetune(cfg)
    print(f"  JNLI: test accuracy {pct(jnli['scores']['test']['accuracy'])} (majority "
          f"{pct(jnli['scores']['test']['majority_baseline'])}), {jnli['seconds']:.0f} s", flush=True)
    return row, jnli


def print_pretraining(pre_rows: list[list[Any]], s: dict[str, Any], skip_ja: bool) -> None:
    common.print_table(
        ["corpus", "vocab", "tokenizer s", "train tokens", "dataset s", "model", "steps", "tokens seen", "wall s",
         "CPU s", "tokens/s", "val loss", "peak RSS MB"],
        pre_rows, title="Pretraining (model.pretrain.train, each run in a fresh child process)",
        notes=[f"Model: the `small` preset with {s['model']}. English {s['pretrain']}"
               + ("" if skip_ja else f"; Japanese {s['ja_pretrain']}") + ". Byte-level BPE with <|endoftext|>: "
               "GPT-2 pre-tokenizer (English), `ja` (Japanese). Documents: blank-line paragraphs (English), "
               "~4 KB pieces of each work (Japanese); 2% validation. CPU s = user + sys of all threads."])


def print_sms(results, variants, seeds: list[int], s: dict[str, Any], warnings_seen: list[str], gpu: bool) -> None:
    first = seeds[0]
    ref = results["full", first]
    ex = ref["examples"]
    notes = [
        f"Seed {first}. Each row is finetune_classify in a fresh child: {s['sms']['epochs']:g} epochs, batch "
        f"{s['sms']['batch_size']}, warmup {s['sms']['warmup_steps']} steps, cosine decay to 1e-5, AdamW (betas 0.9, "
        f"0.95; weight decay 0.1 on 2-D tensors), the last real token's state feeds the head. Majority baseline "
        f"(test): {pct(ref['scores']['test']['majority_baseline'])}. Target: test accuracy >= 96% with full fine-tuning.",
        "weights+grads+AdamW MB = 4 B x all parameters + 12 B x trainable ones (fp32 weights; gradients and two "
        "Adam moments for what trains); activations not included. Trainable = the tensors AdamW kept state for. "
        "Peak RSS = the child's VmHWM (Python, torch, tokenizer and data included); RSS growth = peak minus the "
        "RSS just before finetune_classify. wall s / CPU s: the finetune_classify call (data, training, scoring).",
        sms_overlap(ref["config"]),
        *[f"Library warning: {w}" for w in warnings_seen],
    ]
    common.print_table(FT_HEADERS + (["peak GPU GB"] if gpu else []),
                       [finetune_row(label, results[key, first], gpu) for label, key, _ in variants],
                       title=f"SMS Spam Collection, balanced: train {ex['train']} / val {ex['val']} / test {ex['test']}",
                       notes=notes)
    if len(seeds) > 1:
        rows = []
        for label, key, _ in variants:
            tests = [results[key, sd]["scores"]["test"]["accuracy"] for sd in seeds]
            vals = [results[key, sd]["scores"]["val"]["accuracy"] for sd in seeds]
            rows.append([label, *[pct(t) for t in tests], pct(statistics.mean(tests)), pct(min(tests)),
                         pct(statistics.mean(vals)), sum(t >= 0.96 for t in tests)])
        common.print_table(["variant", *[f"test, seed {sd}" for sd in seeds], "test mean", "test min", "val mean",
                            "runs >= 96%"], rows,
                           title=f"SMS test accuracy over {len(seeds)} seeds (each a different subsample and split)")


def print_jnli(jnli: dict[str, Any], s: dict[str, Any]) -> None:
    sc, ex = jnli["scores"], jnli["examples"]
    common.print_table(
        ["task", "train / val / test", "trainable / total", "lr", "steps", "wall s", "CPU s", "peak RSS MB",
         "val acc", "test acc", "test macro-F1", "majority (test)", "vs majority"],
        [["JNLI, 3 labels, full fine-tuning", f"{ex['train']} / {ex['val']} / {ex['test']}",
          f"{params(jnli['trainable'])} / {params(jnli['total'])}", f"{jnli['config'].lr:g}", jnli["steps"],
          jnli["seconds"], jnli["cpu_s"], jnli["peak_rss_mb"], pct(sc["val"]["accuracy"]),
          pct(sc["test"]["accuracy"]), f"{sc['test']['macro_f1']:.4f}",
          f"{pct(sc['test']['majority_baseline'])} ({sc['majority_label']})",
          f"{100 * (sc['test']['accuracy'] - sc['test']['majority_baseline']):+.2f} pt"]],
        title="JNLI (JGLUE v1.3): train/val = jnli-v1.3-valid (90/10), test = jnli-v1.3-test",
        notes=[f"{s['jnli']['epochs']:g} epochs, batch {s['jnli']['batch_size']}. Input: sentence1 + '\\n' + "
               f"sentence2. Test confusion (rows actual, columns predicted; {', '.join(sc['test']['labels'])}): "
               f"{sc['test']['confusion']}.", jnli_overlap(jnli["config"])])


def main() -> int:
    args = parse_args()
    s = settings(args)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    files = data_files()
    print(f"\n## Fine-tuning: pretrain small GPTs with hataori, then classify{' (quick)' if args.quick else ''}\n")
    import torch

    from run_all import cpu_busy_fraction

    busy = cpu_busy_fraction(1.0)
    print("```\n" + common.machine_description())
    print(f"torch: {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"CPU busy before start (other processes): {busy * 100:.0f}%\n```", flush=True)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            raise SystemExit(f"{args.keep}: not empty (runs there would resume instead of starting fresh)")
    work_ctx = tempfile.TemporaryDirectory(prefix="hataori-ft-bench-") if args.keep is None else None
    work = Path(work_ctx.name) if work_ctx else args.keep
    t_all = time.perf_counter()
    try:
        pre_rows = [english(work, s, files, args.device)]
        variants = sms_variants(s, not args.no_scratch)
        sms_results, warnings_seen = sms(work, s, files, seeds, variants, args.device)
        jnli = None
        if not args.skip_ja:
            ja_row, jnli = japanese(work, s, files, args.device)
            pre_rows.append(ja_row)
        total_s = time.perf_counter() - t_all
        print_pretraining(pre_rows, s, args.skip_ja)
        print_sms(sms_results, variants, seeds, s, warnings_seen, args.device != "cpu")
        if jnli is not None:
            print_jnli(jnli, s)
        print(f"\nTotal: {total_s:.0f} s. CPU busy now (other processes): {cpu_busy_fraction(1.0) * 100:.0f}%. "
              f"Work directory: {work if args.keep else '(temporary, deleted)'}")
        if busy > 0.2:
            print(f"WARNING: the machine was {busy * 100:.0f}% busy before the start; times are inflated (the "
                  "accuracies are not: every run has a fixed number of steps).")
        below = [sd for sd in seeds if sms_results["full", sd]["scores"]["test"]["accuracy"] < 0.96]
        if below:
            print(f"NOTE: full fine-tuning stayed below 96% test accuracy with seed(s) {', '.join(map(str, below))}.")
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
