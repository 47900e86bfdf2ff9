"""Japanese tokenizers: compression on held-out works, training time, peak memory.

Side by side in one run, on Aozora Bunko (``aozora/aozora_ja.txt``, 600 works separated by one
empty line): every work with index % 10 == 5 is held out, the rest is the training text. For each
vocabulary size (8,000, 32,000, 64,000) these systems are trained, each in its own fresh
subprocess (wall time of the training call, peak RSS = VmHWM of that process):

1. hataori ``ja`` pre-tokenizer (byte-level BPE)
2. hataori ``ja-isolated`` (punctuation never attached to words)
3. hataori ``gpt2`` pre-tokenizer
4. Hugging Face tokenizers, byte-level BPE with the GPT-2 regex
5. SentencePiece BPE (``byte_fallback=True``)
6. SentencePiece Unigram (``byte_fallback=True``)
7. hataori char-level and word-level baselines (``model="char"`` / ``model="word"``), when the
   installed ``tokenizer_rs`` supports ``Tokenizer.train(..., model=...)``
8. with ``--morph``: hataori ``ja`` trained on fugashi/UniDic morphemes, each fed as its own
   sequence (morpheme boundaries for training only; held-out text is encoded normally)

Compression is characters per token on the held-out works, computed per line for every system
(SentencePiece encodes sentence by sentence). Unknown / byte-fallback counts are reported too.
Finally a few held-out sentences are shown segmented by four of the 32k tokenizers.

    .venv/bin/python bench/japanese_tokenizer.py [--quick] [--vocab 8000,32000] [--reps N] [--morph]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

VOCABS = [8_000, 32_000, 64_000]
REPEAT_VOCAB = 32_000  # hataori ja and SPM BPE are repeated (median) at this size only
QUICK_TRAIN_BYTES = 3_000_000
CHILD_TIMEOUT = 900.0

# --------------------------------------------------------------------------------------------
# training children: argv = [train_file, out_path, vocab, extra]; each reports seconds + vocab

# extra = "KEYWORD=VALUE" for Tokenizer.train: pretokenizer=ja, model=char, ...
OURS_CHILD = """
import tokenizer_rs
train, out, vocab, extra = _sys.argv[1], _sys.argv[2], int(_sys.argv[3]), _sys.argv[4]
keyword, value = extra.split("=", 1)
t0 = _time.perf_counter()
tok = tokenizer_rs.Tokenizer.train([train], vocab, show_progress=False, **{keyword: value})
seconds = _time.perf_counter() - t0
_report(seconds=seconds, vocab_size=tok.vocab_size)
tok.save(out)
"""

# The pieces file holds morphemes separated by \\x1f; they are streamed to train() one by one.
OURS_MORPH_CHILD = """
import re, tokenizer_rs
pieces, out, vocab = _sys.argv[1], _sys.argv[2], int(_sys.argv[3])
text = open(pieces, encoding="utf-8").read()
it = (m.group() for m in re.finditer("[^\\x1f]+", text))
t0 = _time.perf_counter()
tok = tokenizer_rs.Tokenizer.train(it, vocab, pretokenizer="ja", show_progress=False)
seconds = _time.perf_counter() - t0
_report(seconds=seconds, vocab_size=tok.vocab_size)
tok.save(out)
"""

HF_CHILD = """
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
train, out, vocab = _sys.argv[1], _sys.argv[2], int(_sys.argv[3])
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
t0 = _time.perf_counter()
tok.train([train], trainer)
seconds = _time.perf_counter() - t0
_report(seconds=seconds, vocab_size=tok.get_vocab_size())
tok.save(out)
"""

SPM_CHILD = """
import sentencepiece as spm
train, out, vocab, model_type = _sys.argv[1], _sys.argv[2], int(_sys.argv[3]), _sys.argv[4]
t0 = _time.perf_counter()
spm.SentencePieceTrainer.train(input=train, model_prefix=out, vocab_size=vocab, model_type=model_type,
                               byte_fallback=True, character_coverage=0.9995, max_sentence_length=1 << 20,
                               input_sentence_size=0, num_threads=2, minloglevel=2)
seconds = _time.perf_counter() - t0
sp = spm.SentencePieceProcessor(model_file=out + ".model")
_report(seconds=seconds, vocab_size=sp.get_piece_size())
"""


class System:
    """One tokenizer to train: ``key`` names its model file, ``kind`` says how to load it."""

    def __init__(self, key: str, label: str, kind: str, code: str, extra: str = "", note: str = ""):
        self.key, self.label, self.kind, self.code, self.extra, self.note = key, label, kind, code, extra, note

    def out_path(self, tmp: Path, vocab: int) -> Path:
        return tmp / f"{self.key}-{vocab}"  # SPM appends .model / .vocab; the others write JSON here


def systems(model_kw: bool, morph: bool) -> list[System]:
    s = [
        System("ours-ja", "hataori ja", "ours", OURS_CHILD, "pretokenizer=ja"),
        System("ours-ja-isolated", "hataori ja-isolated", "ours", OURS_CHILD, "pretokenizer=ja-isolated"),
        System("ours-gpt2", "hataori gpt2", "ours", OURS_CHILD, "pretokenizer=gpt2"),
        System("hf", "HF tokenizers BPE (GPT-2 regex)", "hf", HF_CHILD),
        System("spm-bpe", "SentencePiece BPE", "spm", SPM_CHILD, "bpe"),
        System("spm-unigram", "SentencePiece Unigram", "spm", SPM_CHILD, "unigram"),
    ]
    if model_kw:
        s.append(System("ours-char", "hataori char-level", "ours", OURS_CHILD, "model=char"))
        s.append(System("ours-word", "hataori word-level (lossy)", "ours", OURS_CHILD, "model=word",
                        note="lossy: drops whitespace"))
    if morph:
        s.append(System("ours-ja-morph", "hataori ja, morpheme-split training", "ours", OURS_MORPH_CHILD))
    return s


def supports_model_kw() -> bool:
    """Whether the installed tokenizer_rs has ``Tokenizer.train(..., model=...)`` (char/word)."""
    code = """
import tokenizer_rs
try:
    tokenizer_rs.Tokenizer.train(iter(["ab cd"]), 300, model="char", show_progress=False)
    ok = True
except TypeError:
    ok = False
_report(ok=ok)
"""
    try:
        return bool(common.run_child(code, timeout=120)["ok"])
    except common.ChildError:
        return False


# --------------------------------------------------------------------------------------------
# data


def split_corpus(quick: bool, tmp: Path) -> tuple[Path, str, list[str], int]:
    """Writes the training text; returns (train_file, held-out text, held-out works, training works)."""
    works = common.aozora_path().read_text("utf-8").split("\n\n")
    held = [w for i, w in enumerate(works) if i % 10 == 5]
    train = [w for i, w in enumerate(works) if i % 10 != 5]
    train_text = "\n\n".join(w.rstrip("\n") for w in train) + "\n"
    if quick:
        train_text = common.utf8_prefix(train_text, QUICK_TRAIN_BYTES).rsplit("\n", 1)[0] + "\n"
    held_text = "\n\n".join(w.rstrip("\n") for w in held) + "\n"
    train_file = tmp / "train.txt"
    train_file.write_text(train_text, "utf-8")
    (tmp / "held.txt").write_text(held_text, "utf-8")
    return train_file, held_text, held, len(train)


def morph_pieces(train_file: Path, out: Path) -> tuple[float, int]:
    """Splits each training line into fugashi (UniDic) surfaces, keeping the exact text.

    Whitespace that MeCab skips is re-inserted in front of the following morpheme (trailing
    whitespace becomes its own piece), and each line's newline is its own piece, so the pieces
    concatenate back to the training text. Pieces are written separated by \\x1f.
    Returns (seconds, number of pieces).
    """
    try:
        import fugashi
    except ImportError as e:
        raise SystemExit("--morph needs fugashi and unidic-lite: "
                         ".venv/bin/pip install fugashi unidic-lite") from e
    tagger = fugashi.Tagger()
    t0 = time.perf_counter()
    pieces: list[str] = []
    text = train_file.read_text("utf-8")
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        pos = 0
        for word in tagger(body):
            surf = word.surface
            idx = body.find(surf, pos)
            if not surf or idx < 0:  # should not happen; keep the text exact regardless
                continue
            pieces.append(body[pos:idx + len(surf)])
            pos = idx + len(surf)
        if pos < len(body):
            pieces.append(body[pos:])
        if line.endswith("\n"):
            pieces.append("\n")
    seconds = time.perf_counter() - t0
    if "".join(pieces) != text:
        raise RuntimeError("morpheme pieces do not concatenate back to the training text")
    if any("\x1f" in p for p in pieces):
        raise RuntimeError("training text contains the \\x1f separator")
    out.write_text("\x1f".join(pieces), "utf-8")
    return seconds, len(pieces)


# --------------------------------------------------------------------------------------------
# loading and evaluation


BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class Loaded:
    """A trained tokenizer with encode_lines(), pieces() and an unknown-count rule."""

    def __init__(self, system: System, path: Path):
        self.system = system
        self.kind = system.kind
        if self.kind == "ours":
            import tokenizer_rs
            self.tok = tokenizer_rs.Tokenizer.from_file(str(path))
            self.unk_id = self.tok.token_to_id("<|unk|>")
            self.vocab_size = self.tok.vocab_size
        elif self.kind == "hf":
            self.tok = common.hf_tokenizer(path)
            self.vocab_size = self.tok.get_vocab_size()
        else:
            import sentencepiece as spm
            self.tok = spm.SentencePieceProcessor(model_file=str(path) + ".model")
            n = self.tok.get_piece_size()
            self.vocab_size = n
            self.byte_ids = {i for i in range(n) if self.tok.is_byte(i)}
            self.unk_id = self.tok.unk_id()

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        if self.kind == "ours":
            return self.tok.encode_batch(lines, allowed_special="none")
        if self.kind == "hf":
            return [e.ids for e in self.tok.encode_batch(lines)]
        return self.tok.encode(lines)

    def unknown(self, encoded: list[list[int]]) -> tuple[str, float]:
        """(description, share of all tokens that are unknown / byte-fallback)."""
        ntok = max(1, sum(len(ids) for ids in encoded))
        if self.kind == "spm":
            nbyte = sum(1 for ids in encoded for i in ids if i in self.byte_ids)
            nunk = sum(1 for ids in encoded for i in ids if i == self.unk_id)
            return (f"{nbyte:,} byte pieces ({nbyte / ntok * 100:.2f}%)"
                    + (f", {nunk:,} <unk>" if nunk else "")), (nbyte + nunk) / ntok
        if self.kind == "ours" and self.unk_id is not None:
            nunk = sum(1 for ids in encoded for i in ids if i == self.unk_id)
            return f"{nunk:,} unk ids ({nunk / ntok * 100:.2f}%)", nunk / ntok
        return "n/a (byte-level)", 0.0

    def pieces(self, text: str) -> tuple[list[str], int]:
        """(segmentation of ``text``, number of tokens); byte tokens are grouped into whole characters."""
        if self.kind == "spm":
            out, buf = [], b""
            ids = self.tok.encode(text)
            for i in ids:
                piece = self.tok.id_to_piece(i)
                m = BYTE_PIECE.fullmatch(piece) if i in self.byte_ids else None
                if m:
                    buf += bytes([int(m.group(1), 16)])
                    try:
                        out.append("<" + buf.decode("utf-8") + ">")  # a byte-fallback character
                        buf = b""
                    except UnicodeDecodeError:
                        pass
                else:
                    if buf:
                        out.append(repr(buf))
                        buf = b""
                    out.append(piece)
            if buf:
                out.append(repr(buf))
            return out, len(ids)
        if self.kind != "ours":
            raise NotImplementedError(self.kind)
        ids = self.tok.encode(text, allowed_special="none")
        dec = self.tok.decode_bytes
        out, group = [], []
        for i in ids:
            group.append(i)
            try:
                out.append(dec(group).decode("utf-8"))
                group = []
            except UnicodeDecodeError:
                continue
        if group:
            out.append(repr(dec(group)))
        return out, len(ids)


def example_sentences(held_works: list[str], idxs=(0, 10, 20, 30), max_chars: int = 40) -> list[str]:
    """The first sentence ending in 。 (leading spaces stripped, 8 to ``max_chars`` characters)
    of each of the held-out works ``idxs``."""
    out = []
    for k in idxs:
        if k >= len(held_works):
            continue
        for s in re.findall(r"[^。\n]+。", held_works[k]):
            s = s.lstrip(" \u3000")
            if 8 <= len(s) <= max_chars:
                out.append(s)
                break
    return out


# --------------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def parse_vocabs(s: str) -> list[int]:
    return [int(x.replace("_", "").replace("k", "000")) for x in s.split(",") if x.strip()]


def training_order(syss: list[System], vocab: int, reps: int) -> list[System]:
    """Each system once; at REPEAT_VOCAB the repeated ones alternate: ja, spm, (others), ja, spm, spm, ja ..."""
    plan = [(s, 1) for s in syss]
    if vocab == REPEAT_VOCAB and reps > 1:
        plan = [(s, reps if s.key in ("ours-ja", "spm-bpe") else 1) for s in syss]
    order: list[System] = [s for s, _ in plan]
    for rep in range(1, max(n for _, n in plan)):
        rr = [s for s, n in plan if n > rep]
        order += rr if rep % 2 == 0 else list(reversed(rr))
    return order


def train_all(syss: list[System], vocabs: list[int], reps: int, tmp: Path, train_file: Path,
              pieces_file: Path) -> dict[int, dict[str, list[dict] | str]]:
    """results[vocab][key]: the child reports of each training (a list), or why it failed."""
    results: dict[int, dict[str, list[dict] | str]] = {v: {} for v in vocabs}
    for vocab in vocabs:
        for s in training_order(syss, vocab, reps):
            out = s.out_path(tmp, vocab)
            src = str(pieces_file) if s.key == "ours-ja-morph" else str(train_file)
            try:
                r = common.run_child(s.code, [src, str(out), str(vocab), s.extra], timeout=CHILD_TIMEOUT)
            except (common.ChildError, common.ChildTimeout) as e:
                msg = str(e).strip().splitlines()
                reason = next((ln for ln in reversed(msg) if ln.strip()), "?").strip()
                results[vocab][s.key] = f"failed: {reason[:200]}"
                print(f"  {vocab:>6,} {s.label}: FAILED: {reason[:300]}", file=sys.stderr, flush=True)
                continue
            prev = results[vocab].setdefault(s.key, [])
            if isinstance(prev, list):
                prev.append(r)
            print(f"  {vocab:>6,} {s.label}: {r['seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"vocab {r['vocab_size']:,}", file=sys.stderr, flush=True)
    return results


def evaluate(syss: list[System], vocab: int, results: dict[str, list[dict] | str], tmp: Path, lines: list[str],
             chars: int, loaded: dict[tuple[int, str], Loaded]) -> tuple[dict[str, Any], list[str]]:
    """Held-out (vocab size, chars/token, unknown tokens, tokens) per system; notes on unknown-heavy ones."""
    evals: dict[str, Any] = {}
    unk_notes = []
    for s in syss:
        res = results.get(s.key)
        if not isinstance(res, list) or not res:
            evals[s.key] = None
            continue
        lt = Loaded(s, s.out_path(tmp, vocab))
        loaded[(vocab, s.key)] = lt
        enc = lt.encode_lines(lines)
        ntok = sum(len(e) for e in enc)
        unk, unk_share = lt.unknown(enc)
        evals[s.key] = (lt.vocab_size, chars / ntok, unk, ntok)
        if unk_share > 0.5:
            unk_notes.append(f"{s.label}: {unk_share * 100:.0f}% of its held-out tokens are unknown, "
                             "so its chars/token measures nothing useful"
                             + (" (its words are split at spaces and ASCII punctuation only, so a "
                                "Japanese line is mostly one unseen word)" if s.key == "ours-word" else "")
                             + ".")
    return evals, unk_notes


def print_vocab_table(syss: list[System], vocab: int, r_: dict[str, list[dict] | str], evals: dict[str, Any],
                      unk_notes: list[str], lines: list[str], loaded: dict[tuple[int, str], Loaded], morph_info: str) -> None:
    base = r_.get("ours-ja")
    t_ja = statistics.median(r["seconds"] for r in base) if isinstance(base, list) else float("nan")
    m_ja = max(r["peak_rss_mb"] for r in base) if isinstance(base, list) else float("nan")
    spm_eval = evals.get("spm-bpe")
    rows, notes = [], []
    for s in syss:
        res, ev = r_.get(s.key), evals.get(s.key)
        if ev is None:
            rows.append([s.label, "-", "-", "-", "-", "-", "-", "-", res if isinstance(res, str) else "not run"])
            continue
        t = statistics.median(r["seconds"] for r in res)
        mem = max(r["peak_rss_mb"] for r in res)
        ratio = ev[1] / spm_eval[1] if spm_eval else float("nan")
        rows.append([s.label, ev[0], ev[1], f"{ratio:.3f}", t, f"{t / t_ja:.2f}x", mem, f"{mem / m_ja:.2f}x", ev[2]])
        if len(res) > 1:
            notes.append(f"{s.label}: {len(res)} runs, " + ", ".join(f"{r['seconds']:.2f}" for r in res) + " s (median shown)")

    def med(k):
        v = r_.get(k)
        return statistics.median(x["seconds"] for x in v) if isinstance(v, list) else float("nan")

    def peak(k):
        v = r_.get(k)
        return max(x["peak_rss_mb"] for x in v) if isinstance(v, list) else float("nan")

    dummy = ""
    if "spm-bpe" in evals and evals["spm-bpe"] and (vocab, "spm-bpe") in loaded:
        sp = loaded[(vocab, "spm-bpe")].tok
        lone = sp.piece_to_id("\u2581")
        nlone = sum(1 for ids in sp.encode(lines) for i in ids if i == lone)
        dummy = (f" SentencePiece prefixes each line with its space marker `▁` (add_dummy_prefix, "
                 f"the default); SPM BPE spends {nlone:,} tokens on a lone `▁` "
                 f"({nlone / spm_eval[3] * 100:.1f}% of its held-out tokens).")
    summary = (f"Training speed: SPM BPE time / hataori ja time = {med('spm-bpe') / t_ja:.2f}x, "
               f"HF time / hataori ja time = {med('hf') / t_ja:.2f}x, SPM Unigram time / hataori ja "
               f"time = {med('spm-unigram') / t_ja:.2f}x. Peak memory: HF / hataori ja = "
               f"{peak('hf') / m_ja:.2f}x, SPM BPE / hataori ja = {peak('spm-bpe') / m_ja:.2f}x." + dummy)
    common.print_table(
        ["system", "vocab", "chars/token", "vs SPM BPE", "train s", "time vs ja", "peak MB", "memory vs ja",
         "unknown / byte-fallback"],
        rows,
        title=f"Vocabulary {vocab:,}: held-out chars/token, training time and peak memory",
        notes=[summary] + (["Repetitions: " + "; ".join(notes)] if notes else []) + unk_notes
        + ([f"Morpheme-split row: training time excludes the {morph_info}."] if morph_info and "ours-ja-morph" in r_ else []),
    )


def print_examples(vocabs: list[int], held_works: list[str], loaded: dict[tuple[int, str], Loaded]) -> None:
    ex_vocab = REPEAT_VOCAB if REPEAT_VOCAB in vocabs else vocabs[-1]
    show = [k for k in ("ours-ja", "ours-gpt2", "spm-bpe", "spm-unigram") if (ex_vocab, k) in loaded]
    print(f"\n### Example segmentations (vocabulary {ex_vocab:,}, held-out works 0, 10, 20, 30)\n")
    print("Pieces are joined with ` | `; byte-level tokens are grouped until they decode to whole "
          "characters, SentencePiece byte-fallback characters are shown as `<c>`, `▁` is "
          "SentencePiece's space marker.\n")
    for sent in example_sentences(held_works):
        print(f"**{sent}**\n")
        for k in show:
            lt = loaded[(ex_vocab, k)]
            ps, ntok = lt.pieces(sent)
            print(f"- {lt.system.label} ({ntok} tokens): {' | '.join(ps)}")
        print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="vocab 8,000 only, 3 MB training slice")
    ap.add_argument("--vocab", type=parse_vocabs, default=None,
                    help="comma-separated vocabulary sizes (default 8000,32000,64000)")
    ap.add_argument("--reps", type=int, default=None,
                    help=f"repetitions of hataori ja and SPM BPE at {REPEAT_VOCAB:,} (default 3, quick 1)")
    ap.add_argument("--morph", action="store_true",
                    help="also train hataori ja on fugashi morphemes (needs fugashi + unidic-lite)")
    args = ap.parse_args(argv)
    vocabs = args.vocab or ([8_000] if args.quick else VOCABS)
    reps = args.reps or (1 if args.quick else 3)
    t_start = time.perf_counter()

    model_kw = supports_model_kw()
    syss = systems(model_kw, args.morph)
    with tempfile.TemporaryDirectory(prefix="hataori-bench-ja-") as tmpdir:
        tmp = Path(tmpdir)
        train_file, held_text, held_works, n_train = split_corpus(args.quick, tmp)
        lines = [ln for ln in held_text.split("\n") if ln]
        chars = sum(len(ln) for ln in lines)
        train_mb = train_file.stat().st_size / common.MB
        print("## Japanese tokenizers on Aozora Bunko: compression, training time, peak memory")
        print(f"\nTraining text: {train_mb:.1f} MB ({'first 3 MB of ' if args.quick else ''}{n_train} works); "
              f"held-out: {len(held_works)} works (index % 10 == 5), {len(lines):,} non-empty lines, "
              f"{chars:,} characters, {common.nbytes(held_text) / common.MB:.2f} MB. "
              f"Each training runs in a fresh subprocess; hataori/HF use all cores, SentencePiece "
              f"num_threads=2. Vocabulary sizes: {', '.join(f'{v:,}' for v in vocabs)}.")
        if not model_kw:
            print("\nNote: the installed tokenizer_rs has no `Tokenizer.train(..., model=...)`; "
                  "the char-level and word-level baselines are skipped.")
        morph_info = ""
        pieces_file = tmp / "morph_pieces.txt"
        if args.morph:
            secs, npieces = morph_pieces(train_file, pieces_file)
            morph_info = (f"morpheme split (fugashi {_version('fugashi')}, unidic-lite {_version('unidic-lite')}, "
                          f"in the parent): {secs:.1f} s, {npieces:,} pieces")
            print(f"\n{morph_info}", flush=True)
        results = train_all(syss, vocabs, reps, tmp, train_file, pieces_file)
        loaded: dict[tuple[int, str], Loaded] = {}
        for vocab in vocabs:
            evals, unk_notes = evaluate(syss, vocab, results[vocab], tmp, lines, chars, loaded)
            print_vocab_table(syss, vocab, results[vocab], evals, unk_notes, lines, loaded, morph_info)
        print_examples(vocabs, held_works, loaded)
    print(f"(japanese_tokenizer.py total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
