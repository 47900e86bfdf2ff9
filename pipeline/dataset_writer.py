"""Building sharded token datasets: documents -> tokenizer -> safetensors shards + manifest.json.

Streaming (memory holds one batch of text and one shard per split, whatever the corpus size),
atomic (every file is written to a temp name, fsynced and renamed; manifest.json comes last), and
resumable: each finished shard is journaled with its sha256 in ``progress.json``, so a build that
was killed keeps the shards whose digests still match and encodes only what remains.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model.shard_format import (
    FORMAT_VERSION,
    MANIFEST,
    DatasetError,
    read_manifest,
    sha256_file,
    shard_name,
    token_dtype,
    write_json_atomic,
    write_shard,
)

PROGRESS = "progress.json"
OUR_SHARD = re.compile(r"\.?(train|val)-\d{5}\.safetensors(\.tmp-\d+)?")
TOKENIZER_COPY = "tokenizer.json"
SPLITS = ("train", "val")
EOT = "<|endoftext|>"


class DatasetConfig(BaseModel):
    """How documents become shards."""

    model_config = ConfigDict(extra="forbid")

    shard_tokens: int = Field(100_000_000, gt=0, description="Tokens per shard (shards hold whole documents, so a little more).")
    val_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="Share of documents in the validation split.")
    split_seed: int = Field(0, description="Seed of the deterministic per-document split.")
    doc_split: Literal["file", "blank_line", "line"] = Field("file", description="How text files are cut into documents.")
    text_field: str = Field("text", description="The text field of JSON Lines records.")
    batch_bytes: int = Field(8 << 20, gt=0, description="Text per parallel encode_batch call.")


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("hataori")
    except Exception:
        return "unknown"


def is_validation(index: int, seed: int, fraction: float) -> bool:
    """Deterministic, independent of batching and thread count: a hash of (seed, document index)."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") < fraction * 2**64


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 at byte offset {e.start}") from None


def _json_records(path: Path, text_field: str) -> Iterator[str]:
    text = _read_utf8(path)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
        numbered: Iterable[tuple[str, Any]] = ((f"record {i}", r) for i, r in enumerate(records))
    else:
        def lines() -> Iterator[tuple[str, Any]]:
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        yield f"line {n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DatasetError(f"{path}: line {n}: invalid JSON ({e.msg})") from None

        numbered = lines()
    for where, record in numbered:
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise DatasetError(f"{path}: {where}: field {text_field!r} is missing or not a string")
        yield value


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; directories contribute their *.txt, *.jsonl and *.json files, sorted."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".txt", ".jsonl", ".json")))
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or directory")
    if not files:
        raise DatasetError("no input files")
    return files


def iter_documents(files: list[Path], config: DatasetConfig) -> Iterator[str]:
    for path in files:
        if path.suffix in (".jsonl", ".json"):
            yield from _json_records(path, config.text_field)
            continue
        text = _read_utf8(path)
        if config.doc_split == "file":
            docs: Iterable[str] = [text]
        elif config.doc_split == "blank_line":
            docs = re.split(r"\n[ \t\r\f\v]*\n", text)
        else:
            docs = text.splitlines()
        yield from (d for d in docs if d.strip())


def inputs_fingerprint(files: list[Path]) -> str:
    """Cheap identity of input files (path, size, mtime) for resume decisions."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _SplitBuffer:
    """Whole documents waiting for the next shard of one split."""

    def __init__(self, split: str, dtype: np.dtype, first_index: int, docs_done: int):
        self.split, self.dtype = split, dtype
        self.index, self.docs_done = first_index, docs_done
        self.parts: list[np.ndarray] = []
        self.doc_lengths: list[int] = []
        self.tokens = 0

    def add(self, ids: np.ndarray) -> None:
        self.parts.append(ids)
        self.doc_lengths.append(len(ids))
        self.tokens += len(ids)

    def flush(self, out_dir: Path, metadata: dict[str, str]) -> dict[str, Any] | None:
        if not self.parts:
            return None
        tokens = np.concatenate(self.parts).astype(self.dtype, copy=False)
        starts = np.concatenate([[0], np.cumsum(self.doc_lengths[:-1], dtype=np.int64)]).astype(np.int64)
        name = shard_name(self.split, self.index)
        path = out_dir / name
        write_shard(path, tokens, starts, {**metadata, "split": self.split, "shard_index": str(self.index), "tokens": str(len(tokens))})
        self.docs_done += len(self.doc_lengths)
        entry = {
            "file": name,
            "tokens": int(len(tokens)),
            "documents": len(self.doc_lengths),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "docs_done": self.docs_done,
        }
        self.index += 1
        self.parts, self.doc_lengths, self.tokens = [], [], 0
        return entry


def _verified_prefix(out_dir: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for e in entries:
        path = out_dir / e["file"]
        if not path.is_file() or path.stat().st_size != e["bytes"] or sha256_file(path) != e["sha256"]:
            break
        kept.append(e)
    return kept


def make_manifest(key: str, tokenizer_digest: str, vocab_size: int, eot: int, dtype: np.dtype,
                  config: dict[str, Any], shards_by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The dataset's manifest.json: tokenizer identity, dtype, and per split its shards with digests."""
    return {
        "format_version": FORMAT_VERSION,
        "stage": "shards",
        "key": key,
        "tokenizer": {"sha256": tokenizer_digest, "vocab_size": vocab_size, "eot_id": eot, "file": TOKENIZER_COPY},
        "dtype": dtype.name,
        "config": config,
        "splits": {
            s: {
                "tokens": sum(e["tokens"] for e in entries),
                "documents": sum(e["documents"] for e in entries),
                "shards": [{k: e[k] for k in ("file", "tokens", "documents", "bytes", "sha256")} for e in entries],
            }
            for s, entries in shards_by_split.items()
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": code_version(),
    }


def build_dataset(
    documents: Iterable[str],
    tokenizer_path: Path,
    out_dir: Path,
    config: DatasetConfig,
    *,
    source_key: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encodes `documents` into shards under `out_dir` and returns the manifest (also written there).

    `source_key` identifies the inputs (e.g. `inputs_fingerprint`); a rerun with the same inputs,
    tokenizer and config resumes from the shards already written.
    """
    from tokenizer_rs import Tokenizer

    tokenizer_path = Path(tokenizer_path)
    tokenizer_digest = sha256_file(tokenizer_path)
    tok = Tokenizer.from_file(str(tokenizer_path))
    eot = tok.token_to_id(EOT)
    if eot is None:
        raise DatasetError(f"{tokenizer_path}: the tokenizer has no {EOT} token to separate documents")
    dtype = token_dtype(tok.vocab_size)
    key_material = json.dumps([FORMAT_VERSION, tokenizer_digest, config.model_dump(exclude={"batch_bytes"}), source_key], sort_keys=True)
    key = hashlib.sha256(key_material.encode()).hexdigest()

    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).exists():
        old = read_manifest(out_dir)
        complete = all(
            (out_dir / e["file"]).is_file() and (out_dir / e["file"]).stat().st_size == e["bytes"]
            for split in old.get("splits", {}).values()
            for e in split.get("shards", [])
        )
        if old.get("key") == key and complete:
            return old
        if old.get("key") == key:
            overwrite = True  # our own dataset, damaged: rebuild it
        if not overwrite:
            raise DatasetError(f"{out_dir}: holds a dataset built from other inputs or settings (pass overwrite=True / --overwrite to replace it)")
        (out_dir / MANIFEST).unlink()

    # Resume: keep journaled shards whose digests still match; everything else of ours goes.
    journal: dict[str, Any] = {"key": key, "shards": {s: [] for s in SPLITS}}
    progress_path = out_dir / PROGRESS
    if progress_path.exists():
        try:
            previous = json.loads(progress_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
        if previous.get("key") == key:
            journal["shards"] = {s: _verified_prefix(out_dir, previous["shards"].get(s, [])) for s in SPLITS}
    keep = {e["file"] for s in SPLITS for e in journal["shards"][s]}
    for f in out_dir.iterdir():
        # Only our own shard names and their temp files: never anything else a user keeps here.
        if OUR_SHARD.fullmatch(f.name) and f.name not in keep:
            f.unlink()
    resumed = {s: (journal["shards"][s][-1]["docs_done"] if journal["shards"][s] else 0) for s in SPLITS}
    buffers = {s: _SplitBuffer(s, dtype, len(journal["shards"][s]), resumed[s]) for s in SPLITS}
    shutil.copyfile(tokenizer_path, out_dir / TOKENIZER_COPY)
    metadata = {"format_version": str(FORMAT_VERSION), "tokenizer_sha256": tokenizer_digest, "dataset_key": key}

    def commit(entry: dict[str, Any] | None, split: str) -> None:
        if entry is not None:
            journal["shards"][split].append(entry)
            write_json_atomic(progress_path, journal)

    seen = {s: 0 for s in SPLITS}
    batch: list[str] = []
    batch_splits: list[str] = []
    batch_bytes = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="encode", unit="doc", dynamic_ncols=True, mininterval=0.5)

    def encode_batch() -> None:
        nonlocal batch, batch_splits, batch_bytes
        if not batch:
            return
        flat, lengths = tok.encode_batch_flat(batch, separator=eot, dtype="uint16" if dtype.itemsize == 2 else "uint32")
        ids = np.frombuffer(flat, dtype=dtype)
        offset = 0
        for split, n in zip(batch_splits, lengths):
            buffers[split].add(ids[offset : offset + n])
            offset += n
            if buffers[split].tokens >= config.shard_tokens:
                commit(buffers[split].flush(out_dir, metadata), split)
        if bar is not None:
            bar.update(len(batch))
        batch, batch_splits, batch_bytes = [], [], 0

    for index, doc in enumerate(documents):
        split = "val" if is_validation(index, config.split_seed, config.val_fraction) else "train"
        seen[split] += 1
        if seen[split] <= resumed[split]:
            continue  # already in a verified shard
        batch.append(doc)
        batch_splits.append(split)
        batch_bytes += len(doc)
        if batch_bytes >= config.batch_bytes:
            encode_batch()
    encode_batch()
    for split in SPLITS:
        commit(buffers[split].flush(out_dir, metadata), split)
    if bar is not None:
        bar.close()

    manifest = make_manifest(key, tokenizer_digest, tok.vocab_size, eot, dtype, config.model_dump(), journal["shards"])
    write_json_atomic(out_dir / MANIFEST, manifest)
    progress_path.unlink(missing_ok=True)
    return manifest
