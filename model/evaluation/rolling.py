"""Bits per byte (and per character) of a text: its summed negative log-likelihood over rolling
windows of the model's context, as lm-eval's `loglikelihood_rolling` computes it, divided by ln 2
and by the text's UTF-8 bytes (or characters). Unlike loss per token, this does not depend on the
tokenizer, so models with different vocabularies can be compared.

The windows are lm-eval's `get_rolling_token_windows(tokens, prefix_token=EOT, max_seq_len=window,
context_len=1)` made disjoint: the first window starts after the prefix token and predicts up to
`window` tokens; each later one predicts the next `window` tokens from the one token before them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.files import read_utf8

MAX_TEXT_BYTES = 1 << 30


class TextError(ValueError):
    """A text that cannot be scored; the message names the file."""


def rolling_windows(tokens: list[int], prefix: int, window: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs that predict every token exactly once."""
    if not tokens:
        return []
    out = []
    first = min(window, len(tokens))
    out.append(([prefix] + tokens[: first - 1], tokens[:first]))
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, window)
        end = predicted + n
        out.append((tokens[end - window - 1 : end - 1], tokens[end - n : end]))
        predicted += n
    # make_disjoint_window: the context keeps only what the continuation does not repeat
    return [(ctx[: len(ctx) - (len(cont) - 1)], cont) for ctx, cont in out]


@dataclass
class TextScore:
    loglikelihood: float  # natural log, summed over the text's tokens
    bytes: int
    characters: int
    tokens: int
    documents: int = 1

    @property
    def bits_per_byte(self) -> float:
        return -self.loglikelihood / math.log(2) / self.bytes

    @property
    def bits_per_char(self) -> float:
        return -self.loglikelihood / math.log(2) / self.characters

    def as_dict(self) -> dict:
        return {"bits_per_byte": self.bits_per_byte, "bits_per_char": self.bits_per_char, "bytes": self.bytes,
                "characters": self.characters, "tokens": self.tokens, "documents": self.documents,
                "loglikelihood": self.loglikelihood}


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, exactly (no newline translation); errors name the file and byte offset."""
    text = read_utf8(Path(path), MAX_TEXT_BYTES, "a text to score", TextError)
    if not text:
        raise TextError(f"{path}: empty file (nothing to score)")
    return text


def score_texts(scorer, tokenizer, documents: list[str], prefix: int,
                on_windows: Callable[[int], None] | None = None) -> tuple[TextScore, list[float]]:
    """All documents scored in one batched pass; the total and each document's log-likelihood.
    `on_windows` hears how many windows there are before scoring starts (for a progress bar)."""
    encoded = tokenizer.encode_batch(documents)
    windows, owner = [], []
    for d, tokens in enumerate(encoded):
        for pair in rolling_windows(tokens, prefix, scorer.window):
            windows.append(pair)
            owner.append(d)
    if on_windows is not None:
        on_windows(len(windows))
    per_doc = [0.0] * len(documents)
    for d, (ll, _) in zip(owner, scorer.score_pairs(windows)):
        per_doc[d] += ll
    total = TextScore(sum(per_doc), sum(len(t.encode("utf-8")) for t in documents), sum(len(t) for t in documents),
                      sum(len(t) for t in encoded), len(documents))
    return total, per_doc
