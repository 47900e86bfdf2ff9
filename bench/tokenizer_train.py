"""BPE training speed and peak memory: hataori (tokenizer_rs) vs Hugging Face tokenizers.

Both train a byte-level BPE at vocabulary 32,000 with the GPT-2 pre-tokenizer and the special
token <|endoftext|>, from files, on (a) Japanese Aozora Bunko text and (b) English Gutenberg books.
Each training run is its own fresh subprocess, so its peak RSS belongs to one trainer; the
repetitions alternate ours/HF and the median time is reported. Both trainers use all cores
(their default). Afterwards the saved tokenizer.json files are compared: the vocabularies and
merge lists must be identical.

    .venv/bin/python bench/tokenizer_train.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

VOCAB = 32_000

OURS_CHILD = """
import tokenizer_rs
files, out, vocab = _json.loads(_sys.argv[1]), _sys.argv[2], int(_sys.argv[3])
base = _rss_now_mb()
t0 = _time.perf_counter()
tok = tokenizer_rs.Tokenizer.train(files, vocab, special_tokens=["<|endoftext|>"], pretokenizer="gpt2",
                                   show_progress=False)
seconds = _time.perf_counter() - t0
_report(seconds=seconds, base_rss_mb=base, vocab_size=tok.vocab_size)
tok.save(out)
"""

HF_CHILD = """
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
files, out, vocab = _json.loads(_sys.argv[1]), _sys.argv[2], int(_sys.argv[3])
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
base = _rss_now_mb()
t0 = _time.perf_counter()
tok.train(files, trainer)
seconds = _time.perf_counter() - t0
_report(seconds=seconds, base_rss_mb=base, vocab_size=tok.get_vocab_size())
tok.save(out)
"""


def _merges(model: dict) -> list[tuple[str, str]]:
    """Merges as pairs, whichever format the file uses ("a b" strings or [a, b] lists)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def compare_tokenizer_json(a: Path, b: Path) -> tuple[bool, str]:
    ja, jb = json.loads(a.read_text("utf-8")), json.loads(b.read_text("utf-8"))
    va, vb = ja["model"]["vocab"], jb["model"]["vocab"]
    ma, mb = _merges(ja["model"]), _merges(jb["model"])
    sa = [(t["id"], t["content"]) for t in ja.get("added_tokens", [])]
    sb = [(t["id"], t["content"]) for t in jb.get("added_tokens", [])]
    problems = []
    if va != vb:
        diff = len(set(va.items()) ^ set(vb.items()))
        problems.append(f"vocab differs ({len(va)} vs {len(vb)} entries, {diff} differing token->id pairs)")
    if ma != mb:
        first = next((i for i, (x, y) in enumerate(zip(ma, mb)) if x != y), min(len(ma), len(mb)))
        problems.append(f"merges differ ({len(ma)} vs {len(mb)}; first difference at merge {first})")
    if sa != sb:
        problems.append(f"added tokens differ ({sa} vs {sb})")
    return (not problems), ("; ".join(problems) or f"{len(va)} tokens, {len(ma)} merges")


def make_corpora(quick: bool, tmp: Path) -> list[tuple[str, list[Path]]]:
    aozora = common.aozora_path()
    gutenberg = common.gutenberg_paths()
    if not quick:
        return [("ja: aozora_ja.txt", [aozora]), ("en: gutenberg/*.txt", gutenberg)]
    # Quick: the first ~1 MB of Aozora and the first ~100 KB of each Gutenberg book.
    ja = tmp / "aozora_slice.txt"
    ja.write_text(common.utf8_prefix(aozora.read_text("utf-8"), 1_000_000).rsplit("\n", 1)[0] + "\n", "utf-8")
    en = []
    for p in gutenberg:
        q = tmp / p.name
        q.write_text(common.utf8_prefix(p.read_text("utf-8"), 100_000).rsplit("\n", 1)[0] + "\n", "utf-8")
        en.append(q)
    return [("ja: aozora slice (quick)", [ja]), ("en: gutenberg slices (quick)", en)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small slices, 1 repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per trainer (default 3, quick 1)")
    ap.add_argument("--vocab", type=int, default=VOCAB)
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)

    print(f"## BPE training: vocab {args.vocab:,}, GPT-2 pre-tokenizer, {reps} repetition(s), "
          f"each trainer in a fresh subprocess (median time; peak RSS = max over repetitions)")
    rows, details, mismatches = [], [], []
    with tempfile.TemporaryDirectory(prefix="hataori-bench-train-") as tmpdir:
        tmp = Path(tmpdir)
        for corpus, files in make_corpora(args.quick, tmp):
            size = sum(p.stat().st_size for p in files) / common.MB
            res: dict[str, list[dict]] = {"ours": [], "hf": []}
            outs = {"ours": tmp / "ours.json", "hf": tmp / "hf.json"}
            for rep in range(reps):
                order = ["ours", "hf"] if rep % 2 == 0 else ["hf", "ours"]
                for who in order:
                    code = OURS_CHILD if who == "ours" else HF_CHILD
                    r = common.run_child(code, [json.dumps([str(p) for p in files]), str(outs[who]), str(args.vocab)])
                    res[who].append(r)
                    print(f"  {corpus} rep {rep + 1}/{reps} {who:4s}: {r['seconds']:.2f} s, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            same, why = compare_tokenizer_json(outs["ours"], outs["hf"])
            if not same:
                mismatches.append(f"{corpus}: {why}")
            t_ours = statistics.median(r["seconds"] for r in res["ours"])
            t_hf = statistics.median(r["seconds"] for r in res["hf"])
            peak_ours = max(r["peak_rss_mb"] for r in res["ours"])
            peak_hf = max(r["peak_rss_mb"] for r in res["hf"])
            rows.append([corpus, size, t_ours, t_hf, f"{t_hf / t_ours:.2f}x", peak_ours, peak_hf,
                         f"{peak_hf / peak_ours:.2f}x", "yes" if same else "NO"])
            times = {who: ", ".join("%.2f" % r["seconds"] for r in rs) for who, rs in res.items()}
            details.append(f"- {corpus}: ours {times['ours']} s; HF {times['hf']} s; "
                           f"RSS after imports, before training: ours {res['ours'][0]['base_rss_mb']:.0f} MB, "
                           f"HF {res['hf'][0]['base_rss_mb']:.0f} MB; {why}")

    common.print_table(
        ["corpus", "MB", "ours s", "HF s", "speedup (HF/ours)", "ours peak MB", "HF peak MB",
         "memory ratio (HF/ours)", "identical vocab+merges"],
        rows,
        title="Training time and peak memory (vocab %s)" % f"{args.vocab:,}",
        notes=["Per-repetition times and details:\n" + "\n".join(details)],
    )
    for m in mismatches:
        print(f"\nWARNING: trained tokenizers differ: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
