"""Fine-tuning data: records from JSON / JSONL / TSV / CSV, deterministic splits, and a resumable,
DDP-aware epoch sampler. Every error names the file, the record number and the field."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


class FinetuneDataError(ValueError):
    """Bad fine-tuning data: the message names the file, record and field at fault."""


def read_records(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Records of a JSON array, JSON Lines, TSV or CSV file (chosen by suffix; .json may hold JSON Lines).

    TSV/CSV: the first row is the header unless `columns` names the columns (header-less files such
    as the SMS Spam Collection: columns=["label", "text"]). TSV is read without quote handling, since
    texts may contain stray '"'.
    """
    path = Path(path)
    if not path.is_file():
        raise FinetuneDataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tsv", ".csv", ".txt"):
            return _read_table(path, "," if suffix == ".csv" else "\t", columns)
        if suffix not in (".json", ".jsonl"):
            raise FinetuneDataError(f"{path}: unknown format {suffix!r} (use .json, .jsonl, .tsv or .csv)")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FinetuneDataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise FinetuneDataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    else:
        records = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FinetuneDataError(f"{path}: line {line_no}: not valid JSON ({e.msg})") from None
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise FinetuneDataError(f"{path}: record {i} is a {type(r).__name__}, not an object")
    return records


def _read_table(path: Path, delimiter: str, columns: list[str] | None) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter, quoting=quoting))
    if columns is None:
        if not rows:
            raise FinetuneDataError(f"{path}: empty file")
        columns, rows = rows[0], rows[1:]
    records = []
    for i, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) != len(columns):
            raise FinetuneDataError(f"{path}: record {i}: {len(row)} fields, expected {len(columns)} ({', '.join(columns)})")
        records.append(dict(zip(columns, row)))
    return records


def field(path: Path, index: int, record: dict[str, Any], name: str, *, optional: bool = False) -> str:
    """A text field of record `index` (1-based), as a string; missing or non-text fields are errors."""
    if name not in record or record[name] is None:
        if optional:
            return ""
        have = ", ".join(sorted(map(str, record))) or "none"
        raise FinetuneDataError(f"{path}: record {index}: missing field {name!r} (fields: {have})")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FinetuneDataError(f"{path}: record {index}: field {name!r} is a {type(value).__name__}, not text")
    return str(value)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation cut into train / val / test (sizes rounded to whole records)."""
    order = np.random.default_rng([seed, n]).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


class EpochSampler:
    """Shuffled epochs of example indices in batches; rank r takes every world-th batch.

    Deterministic given the seed; `state_dict()` counts batches consumed so a resumed run draws
    exactly the batches it would have drawn. Partial last batches are dropped so every rank takes
    the same number of steps.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world_size
        self.per_epoch = size // (batch_size * world_size)
        if self.per_epoch == 0:
            raise FinetuneDataError(f"the training split has {size} examples: fewer than one batch of "
                                    f"{batch_size} x {world_size} process(es); lower batch_size")
        self._state = {"epoch": 0, "position": 0}

    def next(self) -> np.ndarray:
        epoch, position = self._state["epoch"], self._state["position"]
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        start = (position * self.world + self.rank) * self.batch_size
        batch = order[start:start + self.batch_size]
        position += 1
        self._state = {"epoch": epoch + 1, "position": 0} if position == self.per_epoch else {"epoch": epoch, "position": position}
        return batch

    @property
    def epoch(self) -> float:
        return self._state["epoch"] + self._state["position"] / self.per_epoch

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._state = {"epoch": int(state["epoch"]), "position": int(state["position"])}
