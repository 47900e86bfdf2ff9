"""Fine-tuning end to end on the CPU: hataori pretrains a small GPT itself, then fine-tunes it as a
classifier, in one run. Nothing is downloaded and no outside weights are used.

1. English: a byte-level BPE (``tokenizer_rs``, with ``<|endoftext|>``) trained on the shared
   English books, a sharded dataset (``pipeline.shards.build_dataset``), and a small GPT pretrained
   with ``model.train.train`` for a fixed number of steps.
2. SMS Spam Collection, the book's setup (classes balanced by undersampling, 70/10/20 split), with
   ``model.finetune.classify.finetune_classify`` three ways: (a) full fine-tuning, (b) the default
   (last block + final LayerNorm + head), (c) LoRA adapters (+ final LayerNorm + head); plus (d) a
   control, full fine-tuning of the same architecture from random weights (no pretraining).
   Target: test accuracy >= 96% with full fine-tuning.
3. JNLI (JGLUE): a small Japanese GPT pretrained the same way on Aozora Bunko (tokenizer
   pre-tokenizer ``ja``), fine-tuned on jnli-v1.3-valid (sentence1 + sentence2) and scored on
   jnli-v1.3-test, against the majority-class baseline.

Every training run (pretraining and each fine-tune) is its own fresh ``python -c`` child, so its
wall time, CPU time (user + sys of all its threads) and peak RSS (VmHWM) are its own.

    .venv/bin/python bench/finetune_bench.py            # full run, about 15-20 minutes on 2 idle cores
    .venv/bin/python bench/finetune_bench.py --quick    # tiny settings, about 3 minutes
    .venv/bin/python bench/finetune_bench.py --skip-ja --keep /tmp/ftbench   # English only, keep runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.finetune.classify import ClassifyConfig  # noqa: E402
from model.train import TrainConfig  # noqa: E402
from pipeline.shards import ShardsConfig, build_dataset, iter_documents  # noqa: E402
from tokenizer_rs import Tokenizer  # noqa: E402

EOT = common.EOT

# Settings. `model` overrides the `small` preset (4 layers, 4 heads); see the report for what was tried.
FULL: dict[str, Any] = {
    "en_vocab": 8192,
    "ja_vocab": 8000,
    "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": 128},
    "pretrain": {"max_steps": 600, "batch_size": 16, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 50},
    "ja_pretrain": {"max_steps": 600, "batch_size": 16, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 50},
    "sms": {"epochs": 3, "batch_size": 16, "warmup_steps": 10},
    "sms_lr": {"full": 5e-4, "default": 1e-3, "lora": 2e-3, "scratch": 5e-4},
    "lora": {"rank": 8, "alpha": 16},
    "jnli": {"epochs": 3, "batch_size": 16, "lr": 5e-4, "warmup_steps": 10},
    "ja_slice_bytes": None,
}
QUICK: dict[str, Any] = {
    **FULL,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 128},
    "pretrain": {**FULL["pretrain"], "max_steps": 60, "warmup_steps": 10},
    "ja_pretrain": {**FULL["ja_pretrain"], "max_steps": 40, "warmup_steps": 10},
    "sms": {**FULL["sms"], "epochs": 1},
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
from model.train import TrainConfig, train
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
from_scratch = sys.argv[3] == "1"
if from_scratch:
    # The control: the base's architecture and tokenizer with freshly initialized weights.
    from model.checkpoint import resolve_checkpoint, save_checkpoint
    from model.gpt import GPT
    src = resolve_checkpoint(cfg.base)
    torch.manual_seed(cfg.seed)
    fresh = GPT(load_model(src).config)
    opt = torch.optim.AdamW(fresh.parameters())
    save_checkpoint(cfg.out.parent / (cfg.out.name + "-init") / "checkpoints", 0, fresh, opt, {}, src / "tokenizer.json", 1)
    cfg = cfg.model_copy(update={"base": cfg.out.parent / (cfg.out.name + "-init")})
    del fresh, opt
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


def train_tokenizer(files: list[Path] | list[str], vocab: int, out: Path, **kw: Any) -> tuple[Tokenizer, float]:
    t0 = time.perf_counter()
    tok = Tokenizer.train(files, vocab, special_tokens=[EOT], show_progress=False, **kw)
    seconds = time.perf_counter() - t0
    tok.save(str(out))
    return tok, seconds


def build(docs, tokenizer_json: Path, out: Path) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    manifest = build_dataset(docs, tokenizer_json, out, ShardsConfig(val_fraction=0.02, doc_split="blank_line"),
                             progress=False)
    return manifest, time.perf_counter() - t0


def pretrain(dataset: Path, out: Path, model: dict[str, Any], p: dict[str, Any], device: str) -> dict[str, Any]:
    """model.train.train in a fresh child: the `small` preset with `model` overrides, for p["max_steps"] steps."""
    steps = p["max_steps"]
    cfg = TrainConfig(data=dataset, out=out, preset="small", model=model,
                      context_length=model["context_length"], eval_interval=max(1, steps // 4),
                      checkpoint_interval=steps, keep_checkpoints=1, eval_batches=20, sample_tokens=0,
                      progress=False, device=device, **p)
    res = common.run_child(PRETRAIN_CHILD, [str(common.REPO), cfg.model_dump_json()])
    res["config"] = cfg
    return res


def finetune(cfg: ClassifyConfig, from_scratch: bool = False) -> dict[str, Any]:
    res = common.run_child(FINETUNE_CHILD, [str(common.REPO), cfg.model_dump_json(), "1" if from_scratch else "0"])
    res["config"] = cfg
    return res


def state_mb(res: dict[str, Any]) -> float:
    """fp32 weights (all) + gradients and AdamW's two moments (trainable only): 4N + 12T bytes."""
    return (4 * res["total"] + 12 * res["trainable"]) / 1e6


def params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def pretrain_row(name: str, tok_s: float, manifest: dict[str, Any], build_s: float, res: dict[str, Any]) -> list[Any]:
    cfg = res["config"]
    m = cfg.model
    tokens = cfg.max_steps * cfg.batch_size * cfg.context_length
    train_tokens = manifest["splits"]["train"]["tokens"]
    return [name, manifest["tokenizer"]["vocab_size"], round(tok_s, 2), f"{train_tokens / 1e6:.2f}M", round(build_s, 2),
            f"{m['n_layer']}x{m['n_embd']}, ctx {cfg.context_length}", cfg.max_steps,
            f"{tokens / 1e6:.2f}M ({tokens / train_tokens:.2f} ep)", res["seconds"], res["cpu_s"],
            tokens / res["seconds"], res["summary"].get("val_loss", float("nan")), res["peak_rss_mb"]]


def finetune_row(name: str, res: dict[str, Any]) -> list[Any]:
    s = res["scores"]
    return [name, f"{params(res['trainable'])} / {params(res['total'])}", f"{100 * res['trainable'] / res['total']:.1f}%",
            f"{res['config'].lr:g}", res["steps"], state_mb(res), res["peak_rss_mb"], res["peak_rss_mb"] - res["rss_before_mb"],
            res["seconds"], res["cpu_s"], f"{100 * s['val']['accuracy']:.2f}%", f"{100 * s['test']['accuracy']:.2f}%",
            f"{s['test']['macro_f1']:.4f}"]


FT_HEADERS = ["variant", "trainable / total", "trainable %", "lr", "steps", "weights+grads+AdamW MB", "peak RSS MB",
              "RSS growth MB", "wall s", "CPU s", "val acc", "test acc", "test macro-F1"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, few steps, one epoch (about 3 minutes)")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="English pretraining steps")
    ap.add_argument("--ja-pretrain-steps", type=int, default=None, help="Japanese pretraining steps")
    ap.add_argument("--sms-epochs", type=float, default=None)
    ap.add_argument("--jnli-epochs", type=float, default=None)
    ap.add_argument("--skip-ja", action="store_true", help="English only (no Aozora pretraining, no JNLI)")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-random-weights control")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a deleted temp dir)")
    args = ap.parse_args()

    s = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.pretrain_steps:
        s["pretrain"]["max_steps"] = args.pretrain_steps
    if args.ja_pretrain_steps:
        s["ja_pretrain"]["max_steps"] = args.ja_pretrain_steps
    if args.sms_epochs:
        s["sms"]["epochs"] = args.sms_epochs
    if args.jnli_epochs:
        s["jnli"]["epochs"] = args.jnli_epochs

    data = common.data_dir()
    en_files = common.gutenberg_paths() + [data / "tinyshakespeare.txt"]
    sms = data / "SMSSpamCollection.tsv"
    jnli_train, jnli_test = data / "jglue" / "jnli-v1.3-valid.json", data / "jglue" / "jnli-v1.3-test.json"

    print(f"\n## Fine-tuning benchmark{' (quick)' if args.quick else ''}: pretrain small GPTs, then classify\n")
    print("```\n" + common.machine_description())
    import torch

    print(f"torch: {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n```", flush=True)
    t_all = time.perf_counter()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            raise SystemExit(f"{args.keep}: not empty (runs there would resume instead of starting fresh)")
    work_ctx = tempfile.TemporaryDirectory(prefix="hataori-ft-bench-") if args.keep is None else None
    work = Path(work_ctx.name) if work_ctx else args.keep
    try:
        pre_rows, ft_rows, notes = [], [], []

        # 1. English tokenizer, dataset, pretraining.
        print("\n[1/3] English: tokenizer, dataset, pretraining ...", flush=True)
        en = work / "en"
        en.mkdir()
        _, en_tok_s = train_tokenizer([str(p) for p in en_files], s["en_vocab"], en / "tokenizer.json")
        en_manifest, en_build_s = build(iter_documents(en_files, ShardsConfig(doc_split="blank_line")), en / "tokenizer.json",
                                        en / "data")
        en_pre = pretrain(en / "data", en / "pretrain", s["model"], s["pretrain"], args.device)
        pre_rows.append(pretrain_row(f"English ({sum(p.stat().st_size for p in en_files) / 1e6:.1f} MB: "
                                     f"{len(en_files)} books)", en_tok_s, en_manifest, en_build_s, en_pre))
        print(f"  pretraining: {en_pre['seconds']:.0f} s, val loss {en_pre['summary'].get('val_loss', float('nan')):.3f}",
              flush=True)

        # 2. SMS spam: the three fine-tuning variants (+ the control), each in a fresh child.
        print("\n[2/3] SMS spam fine-tuning ...", flush=True)
        variants = [("(a) full fine-tuning", "full", {"trainable_blocks": "all"}),
                    ("(b) default: last block + ln_f + head", "default", {}),
                    (f"(c) LoRA r={s['lora']['rank']} alpha={s['lora']['alpha']:g} (+ ln_f + head)", "lora",
                     {"lora": s["lora"]})]
        if not args.no_scratch:
            variants.append(("(d) control: full, random init (no pretraining)", "scratch", {"trainable_blocks": "all"}))
        sms_results = {}
        for label, key, extra in variants:
            cfg = ClassifyConfig(base=en / "pretrain", data=sms, columns=["label", "text"], balance=True,
                                 val_fraction=0.1, test_fraction=0.2, out=work / f"sms-{key}", lr=s["sms_lr"][key],
                                 eval_interval=10_000, checkpoint_interval=10_000, keep_checkpoints=1,
                                 progress=False, device=args.device, **s["sms"], **extra)
            res = finetune(cfg, from_scratch=key == "scratch")
            sms_results[key] = res
            ft_rows.append(finetune_row(label, res))
            print(f"  {label}: test accuracy {100 * res['scores']['test']['accuracy']:.2f}% in {res['seconds']:.0f} s",
                  flush=True)
            notes += [f"{label}: {w}" for w in res["warnings"] if "truncated" in w]

        # 3. Japanese: tokenizer, dataset, pretraining, JNLI.
        jnli = None
        if not args.skip_ja:
            print("\n[3/3] Japanese: tokenizer, dataset, pretraining, JNLI ...", flush=True)
            ja = work / "ja"
            ja.mkdir()
            text = common.aozora_path().read_text(encoding="utf-8")
            if s["ja_slice_bytes"]:
                text = common.utf8_prefix(text, s["ja_slice_bytes"])
            works = [w for w in text.split("\n\n") if w.strip()]
            _, ja_tok_s = train_tokenizer(iter(works), s["ja_vocab"], ja / "tokenizer.json", pretokenizer="ja")
            ja_manifest, ja_build_s = build(iter(works), ja / "tokenizer.json", ja / "data")
            ja_pre = pretrain(ja / "data", ja / "pretrain", s["model"], s["ja_pretrain"], args.device)
            pre_rows.append(pretrain_row(f"Japanese (Aozora, {common.nbytes(text) / 1e6:.1f} MB: {len(works)} works)",
                                         ja_tok_s, ja_manifest, ja_build_s, ja_pre))
            print(f"  pretraining: {ja_pre['seconds']:.0f} s, val loss {ja_pre['summary'].get('val_loss', float('nan')):.3f}",
                  flush=True)
            cfg = ClassifyConfig(base=ja / "pretrain", data=jnli_train, test_data=jnli_test, text_field="sentence1",
                                 text_pair_field="sentence2", label_field="label", val_fraction=0.1,
                                 trainable_blocks="all", out=work / "jnli", eval_interval=10_000,
                                 checkpoint_interval=10_000, keep_checkpoints=1, progress=False, device=args.device,
                                 **s["jnli"])
            jnli = finetune(cfg)
            print(f"  JNLI: test accuracy {100 * jnli['scores']['test']['accuracy']:.2f}% "
                  f"(majority {100 * jnli['scores']['test']['majority_baseline']:.2f}%) in {jnli['seconds']:.0f} s", flush=True)

        total_s = time.perf_counter() - t_all

        # Tables.
        common.print_table(
            ["corpus", "vocab", "tokenizer s", "train tokens", "dataset s", "model", "steps", "tokens seen", "wall s",
             "CPU s", "tokens/s", "val loss", "peak RSS MB"],
            pre_rows, title="Pretraining (each run a fresh child process)",
            notes=[f"Model: the `small` preset with overrides {s['model']}; pretraining {s['pretrain']}"
                   + ("" if args.skip_ja else f"; Japanese {s['ja_pretrain']}") + ". Tokenizers: byte-level BPE with "
                   "<|endoftext|>, GPT-2 pre-tokenizer (English) and `ja` (Japanese). Datasets: blank-line documents, "
                   "2% validation."])
        split = sms_results["full"]["examples"]
        common.print_table(
            FT_HEADERS, ft_rows,
            title=f"SMS Spam Collection, balanced (train {split['train']} / val {split['val']} / test {split['test']})",
            notes=[f"Each row: finetune_classify in a fresh child, {s['sms']['epochs']:g} epochs, batch "
                   f"{s['sms']['batch_size']}, warmup {s['sms']['warmup_steps']}, cosine to min_lr 1e-5, weight decay "
                   f"0.1 (2-D tensors), AdamW betas (0.9, 0.95). Majority baseline on test: "
                   f"{100 * sms_results['full']['scores']['test']['majority_baseline']:.2f}%. Target: test accuracy "
                   ">= 96% with full fine-tuning.",
                   "weights+grads+AdamW MB = 4 B x all parameters + 12 B x trainable ones (fp32 weights, gradients, "
                   "two Adam moments), activations not included. Peak RSS = the child's VmHWM (torch, the tokenizer "
                   "and the data included); RSS growth = peak minus the RSS just before finetune_classify. wall s / "
                   "CPU s: the finetune_classify call (data loading, training, scoring val and test).",
                   *notes])
        if jnli is not None:
            sc = jnli["scores"]
            ex = jnli["examples"]
            common.print_table(
                ["task", "train / val / test", "trainable / total", "steps", "wall s", "CPU s", "peak RSS MB",
                 "val acc", "test acc", "test macro-F1", "majority baseline (test)", "vs majority"],
                [["JNLI (3 labels)", f"{ex['train']} / {ex['val']} / {ex['test']}",
                  f"{params(jnli['trainable'])} / {params(jnli['total'])}", jnli["steps"], jnli["seconds"], jnli["cpu_s"],
                  jnli["peak_rss_mb"], f"{100 * sc['val']['accuracy']:.2f}%", f"{100 * sc['test']['accuracy']:.2f}%",
                  f"{sc['test']['macro_f1']:.4f}", f"{100 * sc['test']['majority_baseline']:.2f}% ({sc['majority_label']})",
                  f"{100 * (sc['test']['accuracy'] - sc['test']['majority_baseline']):+.2f} pt"]],
                title="JNLI (JGLUE v1.3): train = jnli-v1.3-valid (90%), val = its other 10%, test = jnli-v1.3-test",
                notes=[f"Full fine-tuning of the Japanese model: {s['jnli']}. Input: sentence1 + '\\n' + sentence2, "
                       "the label from the last token's state. Confusion (rows actual, columns predicted; "
                       f"{', '.join(sc['test']['labels'])}): {sc['test']['confusion']}."])
        print(f"\nTotal: {total_s:.0f} s. CPU busy now (everything on the machine): "
              f"{_busy() * 100:.0f}%. Work directory: {work if args.keep else '(temporary, deleted)'}")
        if sms_results["full"]["scores"]["test"]["accuracy"] < 0.96:
            print("NOTE: full fine-tuning stayed below the 96% test-accuracy target in this run.")
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    return 0


def _busy() -> float:
    from run_all import cpu_busy_fraction

    return cpu_busy_fraction(1.0)


if __name__ == "__main__":
    raise SystemExit(main())
