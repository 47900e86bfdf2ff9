"""Builds shakespeare_next_line.jsonl, the English multiple-choice task shipped with hataori, from
tinyshakespeare.txt (karpathy/char-rnn; Shakespeare's text is in the public domain).

Each item is the start of one speech (the speaker and 2-4 lines) and four candidate next lines: the
real one and three lines of speeches far away in the text (other scenes). A model that follows the
speech beats chance (25%); acc_norm discounts the pull of short lines. Deterministic: the same
input file gives the same bytes.

    python evals/shakespeare/build.py [$HATAORI_DATA_DIR/tinyshakespeare.txt] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

SEED = 2026
ITEMS = 1000
DISTRACTORS = 3
FAR = 200  # distractors come from speeches at least this many speeches away
MIN_LINE = 12  # characters: no one-word lines as choices
OUT = Path(__file__).resolve().parent / "shakespeare_next_line.jsonl"


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(speaker, lines) of every block `NAME:` + lines, blocks separated by an empty line."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) >= 2 and lines[0].endswith(":"):
            out.append((lines[0][:-1], lines[1:]))
    return out


def build(text: str) -> list[dict]:
    rng = random.Random(SEED)
    all_speeches = speeches(text)
    pool = [(s, line) for s, (_, lines) in enumerate(all_speeches) for line in lines if len(line) >= MIN_LINE]
    candidates = [s for s, (_, lines) in enumerate(all_speeches) if len(lines) >= 3 and len(lines[2]) >= MIN_LINE]
    chosen = sorted(rng.sample(candidates, ITEMS))
    items = []
    for s in chosen:
        speaker, lines = all_speeches[s]
        k = rng.randint(2, min(4, len(lines) - 1))
        while len(lines[k]) < MIN_LINE:  # the real line must be a fair choice too
            k -= 1
        target = lines[k]
        choices = [target]
        while len(choices) < DISTRACTORS + 1:
            other, line = pool[rng.randrange(len(pool))]
            if abs(other - s) >= FAR and line not in choices:
                choices.append(line)
        rng.shuffle(choices)
        items.append({"id": len(items), "speaker": speaker, "context": "\n".join(lines[:k]), "choices": choices,
                      "label": choices.index(target)})
    return items


def encode(items: list[dict]) -> bytes:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode("utf-8")


def main() -> int:
    default = Path(os.environ.get("HATAORI_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data")) / "tinyshakespeare.txt"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, default=default)
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = ap.parse_args()
    data = encode(build(args.source.read_text(encoding="utf-8")))
    if args.check:
        same = OUT.read_bytes() == data
        print(f"{OUT.name}: {'identical to' if same else 'DIFFERS from'} a rebuild from {args.source}")
        return 0 if same else 1
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
