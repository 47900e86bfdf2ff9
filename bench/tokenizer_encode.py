"""Encoding throughput: hataori (tokenizer_rs) vs tiktoken vs Hugging Face tokenizers.

(a) single thread, English: all Gutenberg books cut into ~4 KB documents at line ends, encoded one
    call at a time with the GPT-2 vocabulary (ours: ``Tokenizer.from_gpt2``; HF: gpt2/tokenizer.json;
    tiktoken: an Encoding built from the local GPT-2 files).
(b) single thread, Japanese: a 32,000-token vocabulary trained by us on 90% of the Aozora works
    (every 10th work is held out), used by all three (HF loads our tokenizer.json; tiktoken gets the
    same tokens as ranks), encoding the held-out 10% as ~4 KB documents.
(c) batch, 2 threads: ours ``encode_batch``, HF ``encode_batch``, tiktoken
    ``encode_ordinary_batch(num_threads=2)`` on the same documents.
(d) no quadratic cliff: one giant pre-token ("a" repeated, and Japanese text with everything but
    letters removed) of 0.25 to 2 MB; peers only at 0.25 and 0.5 MB, each in a subprocess with a
    time limit.

Single-thread sections run in a subprocess with TOKENIZERS_PARALLELISM=false and
RAYON_NUM_THREADS=1; the batch section in one with RAYON_NUM_THREADS=2. Throughput is the best of
N interleaved repetitions, in MB (10^6 bytes of UTF-8 input) per second. Every contender's token ids
are checked against ours first.

    .venv/bin/python bench/tokenizer_encode.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

VOCAB = 32_000
CLIFF_SIZES_MB = (0.25, 0.5, 1.0, 2.0)
PEER_CLIFF_SIZES_MB = (0.25, 0.5)


# --------------------------------------------------------------------------------------------
# inputs


def english_text(quick: bool) -> str:
    text = "".join(p.read_text("utf-8") for p in common.gutenberg_paths())
    return common.utf8_prefix(text, 500_000) if quick else text


def aozora_split() -> tuple[list[str], list[str]]:
    """(train works, held-out works): every 10th work of aozora_ja.txt is held out."""
    works = common.aozora_path().read_text("utf-8").rstrip("\n").split("\n\n")
    held = [w for i, w in enumerate(works) if i % 10 == 9]
    train = [w for i, w in enumerate(works) if i % 10 != 9]
    return train, held


def cliff_text(kind: str, size_bytes: int) -> str:
    """One giant GPT-2 pre-token of ``size_bytes`` UTF-8 bytes."""
    if kind == "a":
        return "a" * size_bytes
    if kind == "ja":
        src = common.aozora_path().read_text("utf-8")
        # Keep letters only (kanji, kana, the prolonged sound mark... are all \p{L}): no spaces,
        # punctuation or digits are left, so \p{L}+ matches the whole text.
        out, have, step = [], 0, 400_000
        for start in range(0, len(src), step):
            chunk = "".join(c for c in src[start:start + step] if unicodedata.category(c)[0] == "L")
            out.append(chunk)
            have += len(chunk.encode("utf-8"))
            if have >= size_bytes:
                break
        text = "".join(out)
        if len(text.encode("utf-8")) < size_bytes:
            raise ValueError("aozora text is too short for the cliff test")
        return common.utf8_prefix(text, size_bytes)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# tokenizers (in the child processes)


def load_tokenizers(workdir: Path) -> dict:
    """{"en": (ours, tiktoken, hf, None), "ja": (ours, tiktoken, hf, rank_to_id)}."""
    import tokenizer_rs

    enc_json, vocab_bpe, hf_json = common.gpt2_files()
    ours_en = tokenizer_rs.Tokenizer.from_gpt2(str(enc_json), str(vocab_bpe))
    tt_en = common.tiktoken_gpt2()
    hf_en = common.hf_tokenizer(hf_json)
    ours_ja = tokenizer_rs.Tokenizer.from_file(str(workdir / "ja_tokenizer.json"))
    tt_ja, rank_to_id = common.tiktoken_from_ours(ours_ja)
    hf_ja = common.hf_tokenizer(workdir / "ja_tokenizer.json")
    return {"en": (ours_en, tt_en, hf_en, None), "ja": (ours_ja, tt_ja, hf_ja, rank_to_id)}


def check_ids(docs, ours, tt, hf, rank_to_id) -> dict:
    """Encodes every document with all three and compares with ours (also serves as warm-up)."""
    o = [ours.encode_ordinary(d) for d in docs]
    t = [tt.encode_ordinary(d) for d in docs]
    if rank_to_id is not None:
        t = [[rank_to_id[x] for x in ids] for ids in t]
    h = [hf.encode(d, add_special_tokens=False).ids for d in docs]
    return {
        "tokens_ours": sum(map(len, o)),
        "tokens_tiktoken": sum(map(len, t)),
        "tokens_hf": sum(map(len, h)),
        "docs_ids_differ_tiktoken": sum(a != b for a, b in zip(o, t)),
        "docs_count_differ_tiktoken": sum(len(a) != len(b) for a, b in zip(o, t)),
        "docs_ids_differ_hf": sum(a != b for a, b in zip(o, h)),
        "docs_count_differ_hf": sum(len(a) != len(b) for a, b in zip(o, h)),
    }


def _summarise(runs: dict[str, list[tuple[float, float]]], size: int) -> dict:
    out = {}
    for name, rs in runs.items():
        best_wall, best_cpu = min(rs)
        out[name] = {
            "mb_s": size / common.MB / best_wall,
            "best_s": best_wall,
            "median_s": statistics.median(w for w, _ in rs),
            "cpu_util": sum(c for _, c in rs) / sum(w for w, _ in rs),
        }
    return out


def child_single(workdir: Path, reps: int) -> dict:
    docs = json.loads((workdir / "docs.json").read_text("utf-8"))
    toks = load_tokenizers(workdir)
    result = {}
    for corpus in ("en", "ja"):
        ours, tt, hf, r2i = toks[corpus]
        d = docs[corpus]
        check = check_ids(d, ours, tt, hf, r2i)

        def run_ours(d=d, ours=ours):
            for x in d:
                ours.encode_ordinary(x)

        def run_tt(d=d, tt=tt):
            for x in d:
                tt.encode_ordinary(x)

        def run_hf(d=d, hf=hf):
            for x in d:
                hf.encode(x, add_special_tokens=False)

        runs = common.interleaved({"ours": run_ours, "tiktoken": run_tt, "hf": run_hf}, repeat=reps, warmup=0)
        result[corpus] = {"check": check, "timing": _summarise(runs, common.nbytes(d))}
    return result


def child_batch(workdir: Path, reps: int, threads: int) -> dict:
    docs = json.loads((workdir / "docs.json").read_text("utf-8"))
    toks = load_tokenizers(workdir)
    result = {}
    for corpus in ("en", "ja"):
        ours, tt, hf, r2i = toks[corpus]
        d = docs[corpus]
        # Batch output must equal one-at-a-time output.
        ob = ours.encode_batch(d, allowed_special="none")
        tb = tt.encode_ordinary_batch(d, num_threads=threads)
        if r2i is not None:
            tb = [[r2i[x] for x in ids] for ids in tb]
        hb = [e.ids for e in hf.encode_batch(d, add_special_tokens=False)]
        single = [ours.encode_ordinary(x) for x in d]
        check = {
            "ours_batch_equals_single": ob == single,
            "docs_ids_differ_tiktoken": sum(a != b for a, b in zip(ob, tb)),
            "docs_ids_differ_hf": sum(a != b for a, b in zip(ob, hb)),
        }
        runs = common.interleaved({
            "ours": lambda d=d, ours=ours: ours.encode_batch(d, allowed_special="none"),
            "tiktoken": lambda d=d, tt=tt: tt.encode_ordinary_batch(d, num_threads=threads),
            "hf": lambda d=d, hf=hf: hf.encode_batch(d, add_special_tokens=False),
        }, repeat=reps, warmup=0)
        result[corpus] = {"check": check, "timing": _summarise(runs, common.nbytes(d))}
    return result


# Child code for one peer measurement of the cliff test (run under a time limit).
CLIFF_PEER_CHILD = """
import tokenizer_encode as te, common
peer, kind, size, workdir = _sys.argv[1], _sys.argv[2], int(_sys.argv[3]), te.Path(_sys.argv[4])
text = te.cliff_text(kind, size)
if peer == "tiktoken":
    if kind == "a":
        enc = common.tiktoken_gpt2()
    else:
        import tokenizer_rs
        enc, _ = common.tiktoken_from_ours(tokenizer_rs.Tokenizer.from_file(str(workdir / "ja_tokenizer.json")))
    fn = lambda: enc.encode_ordinary(text)
else:
    hf = common.hf_tokenizer(common.gpt2_files()[2] if kind == "a" else workdir / "ja_tokenizer.json")
    fn = lambda: hf.encode(text, add_special_tokens=False).ids
t0 = _time.perf_counter()
ids = fn()
times = [_time.perf_counter() - t0]
if times[0] < 2.0:  # cheap enough: take the median of three, like ours
    for _ in range(2):
        t0 = _time.perf_counter()
        fn()
        times.append(_time.perf_counter() - t0)
_report(seconds=sorted(times)[len(times) // 2], runs=len(times), n_tokens=len(ids))
"""


# --------------------------------------------------------------------------------------------
# parent


def _run_section(section: str, workdir: Path, reps: int, env: dict[str, str]) -> dict:
    full_env = dict(os.environ, **env)
    p = subprocess.run([common.PYTHON, __file__, "--child", section, "--workdir", str(workdir), "--reps", str(reps)],
                       env=full_env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"section {section} failed (rc={p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _check_note(corpus: str, check: dict) -> list[str]:
    notes = []
    for peer in ("tiktoken", "hf"):
        n = check.get(f"docs_ids_differ_{peer}", 0)
        if n:
            c = check.get(f"docs_count_differ_{peer}")
            extra = f", token count differs in {c}" if c is not None else ""
            total = check.get(f"tokens_{peer}")
            tot = f"; total tokens ours {check['tokens_ours']:,} vs {peer} {total:,}" if total is not None else ""
            notes.append(f"{corpus}: {peer} ids differ from ours in {n} documents{extra}{tot}")
    if check.get("ours_batch_equals_single") is False:
        notes.append(f"{corpus}: ours encode_batch differs from encode_ordinary!")
    return notes


def prepare(workdir: Path, quick: bool) -> dict:
    """Writes docs.json and ja_tokenizer.json into workdir; returns some facts about them."""
    import tokenizer_rs

    train, held = aozora_split()
    train_text = "\n\n".join(train) + "\n"
    held_text = "\n\n".join(held) + "\n"
    if quick:
        train_text = common.utf8_prefix(train_text, 2_000_000)
        held_text = common.utf8_prefix(held_text, 300_000)
    (workdir / "ja_train.txt").write_text(train_text, "utf-8")
    t0 = time.perf_counter()
    tok = tokenizer_rs.Tokenizer.train([str(workdir / "ja_train.txt")], VOCAB, show_progress=False)
    train_s = time.perf_counter() - t0
    tok.save(str(workdir / "ja_tokenizer.json"))
    docs = {"en": common.chunk_lines(english_text(quick)), "ja": common.chunk_lines(held_text)}
    (workdir / "docs.json").write_text(json.dumps(docs, ensure_ascii=False), "utf-8")
    return {
        "ja_train_mb": common.nbytes(train_text) / common.MB,
        "ja_train_s": train_s,
        "ja_vocab": tok.vocab_size,
        "docs": {c: (len(d), common.nbytes(d) / common.MB) for c, d in docs.items()},
    }


def cliff(workdir: Path, quick: bool) -> tuple[list, list[str]]:
    import tokenizer_rs

    enc_json, vocab_bpe, _ = common.gpt2_files()
    ours = {"a": tokenizer_rs.Tokenizer.from_gpt2(str(enc_json), str(vocab_bpe)),
            "ja": tokenizer_rs.Tokenizer.from_file(str(workdir / "ja_tokenizer.json"))}
    sizes = CLIFF_SIZES_MB[:2] if quick else CLIFF_SIZES_MB
    peer_sizes = PEER_CLIFF_SIZES_MB[:1] if quick else PEER_CLIFF_SIZES_MB
    limit = 10 if quick else 30
    labels = {"a": '"a" x N (GPT-2 vocab)', "ja": "ja letters only (ja vocab)"}
    rows, notes = [], []
    for kind in ("a", "ja"):
        texts = {mb: cliff_text(kind, int(mb * common.MB)) for mb in sizes}
        pieces = len(ours[kind].pre_tokenize(texts[sizes[-1]]))
        if pieces != 1:
            notes.append(f"{labels[kind]}: expected one pre-token, got {pieces}")
        ms_per_mb = []
        peer_dead = {"tiktoken": False, "hf": False}
        for mb in sizes:
            text = texts[mb]
            n_ours = len(ours[kind].encode_ordinary(text))
            t = common.median_of(lambda: ours[kind].encode_ordinary(text), repeat=3)
            ms_per_mb.append(t * 1000 / mb)
            row = [labels[kind], mb, t * 1000, t * 1000 / mb, n_ours]
            for peer in ("tiktoken", "hf"):
                if mb not in peer_sizes:
                    row.append("-")
                elif peer_dead[peer]:
                    row.append(f"timeout (skipped; smaller size took > {limit} s)")
                else:
                    try:
                        r = common.run_child(CLIFF_PEER_CHILD, [peer, kind, str(int(mb * common.MB)), str(workdir)],
                                             env={"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"},
                                             timeout=limit)
                        row.append(f"{r['seconds'] * 1000:,.0f}")
                        if r["n_tokens"] != n_ours:
                            notes.append(f"{labels[kind]} {mb} MB: {peer} gives {r['n_tokens']:,} tokens, ours {n_ours:,}")
                    except common.ChildTimeout:
                        row.append(f"timeout (> {limit} s)")
                        peer_dead[peer] = True
            rows.append(row)
        notes.append(f"{labels[kind]}: ours ms/MB from {sizes[0]} to {sizes[-1]} MB goes "
                     f"{ms_per_mb[0]:.1f} -> {ms_per_mb[-1]:.1f} (ratio {ms_per_mb[-1] / ms_per_mb[0]:.2f}; "
                     f"1.0 = linear, {sizes[-1] / sizes[0]:.0f} = quadratic)")
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repetitions")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per contender (default 5, quick 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for the batch section")
    ap.add_argument("--child", choices=["single", "batch"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)

    if args.child == "single":
        print(json.dumps(child_single(args.workdir, reps)))
        return 0
    if args.child == "batch":
        print(json.dumps(child_batch(args.workdir, reps, args.threads)))
        return 0

    print(f"## Encoding throughput (best of {reps} interleaved repetitions; MB = 10^6 bytes of UTF-8)")
    with tempfile.TemporaryDirectory(prefix="hataori-bench-encode-") as tmpdir:
        workdir = Path(tmpdir)
        facts = prepare(workdir, args.quick)
        print(f"\nJapanese vocabulary: trained by ours on {facts['ja_train_mb']:.1f} MB (90% of the Aozora works) "
              f"in {facts['ja_train_s']:.1f} s, {facts['ja_vocab']:,} tokens.", flush=True)

        single = _run_section("single", workdir, reps, {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"})
        rows, notes = [], []
        names = {"en": "(a) en: gutenberg, GPT-2 vocab", "ja": "(b) ja: aozora held-out 10%, ja vocab"}
        for corpus in ("en", "ja"):
            t, chk = single[corpus]["timing"], single[corpus]["check"]
            ndocs, size = facts["docs"][corpus]
            rows.append([names[corpus], size, ndocs, t["ours"]["mb_s"], t["tiktoken"]["mb_s"], t["hf"]["mb_s"],
                         f"{t['ours']['mb_s'] / t['tiktoken']['mb_s']:.2f}x", f"{t['ours']['mb_s'] / t['hf']['mb_s']:.2f}x",
                         "yes" if not chk["docs_ids_differ_tiktoken"] else f"NO ({chk['docs_ids_differ_tiktoken']} docs)",
                         "yes" if not chk["docs_ids_differ_hf"] else f"NO ({chk['docs_ids_differ_hf']} docs)"])
            notes += _check_note(corpus, chk)
            notes.append(f"{corpus}: CPU/wall (1.00 = one core busy): "
                         + ", ".join(f"{k} {v['cpu_util']:.2f}" for k, v in t.items())
                         + f"; tokens {chk['tokens_ours']:,}")
        common.print_table(
            ["corpus", "MB", "docs", "ours MB/s", "tiktoken MB/s", "HF MB/s", "ours/tiktoken", "ours/HF",
             "ids = tiktoken", "ids = HF"],
            rows, title="(a, b) Single thread, one ~4 KB document per call", notes=["\n".join(notes)])

        batch = _run_section("batch", workdir, reps, {"TOKENIZERS_PARALLELISM": "true",
                                                      "RAYON_NUM_THREADS": str(args.threads)})
        rows, notes = [], []
        for corpus in ("en", "ja"):
            t, chk = batch[corpus]["timing"], batch[corpus]["check"]
            s1 = single[corpus]["timing"]
            rows.append([names[corpus][4:], t["ours"]["mb_s"], t["tiktoken"]["mb_s"], t["hf"]["mb_s"],
                         f"{t['ours']['mb_s'] / t['tiktoken']['mb_s']:.2f}x", f"{t['ours']['mb_s'] / t['hf']['mb_s']:.2f}x",
                         f"{t['ours']['mb_s'] / s1['ours']['mb_s']:.2f}x",
                         f"{t['tiktoken']['mb_s'] / s1['tiktoken']['mb_s']:.2f}x",
                         f"{t['hf']['mb_s'] / s1['hf']['mb_s']:.2f}x"])
            notes += _check_note(corpus, chk)
            notes.append(f"{corpus}: CPU/wall: " + ", ".join(f"{k} {v['cpu_util']:.2f}" for k, v in t.items()))
        common.print_table(
            ["corpus", "ours MB/s", "tiktoken MB/s", "HF MB/s", "ours/tiktoken", "ours/HF",
             "ours vs 1 thread", "tiktoken vs 1 thread", "HF vs 1 thread"],
            rows, title=f"(c) Batch encoding, {args.threads} threads", notes=["\n".join(notes)])

        rows, notes = cliff(workdir, args.quick)
        common.print_table(
            ["text", "MB", "ours ms", "ours ms/MB", "ours tokens", "tiktoken ms", "HF ms"],
            rows, title="(d) One giant pre-token: no quadratic cliff (single thread; median of 3 runs, peers: one run if it took > 2 s)",
            notes=["\n".join(notes)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
