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
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model.config import EOT, TOKENIZER_FILE
from model.files import UnsafePath, inside, remove_stale_temps
from model.version import hataori_version
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
TOKENIZER_COPY = TOKENIZER_FILE
SPLITS = ("train", "val")


class DatasetConfig(BaseModel):
    """How documents become shards."""

    model_config = ConfigDict(extra="forbid")

    shard_tokens: int = Field(100_000_000, gt=0, description="Tokens per shard (shards hold whole documents, so a little more).")
    val_fraction: float = Field(0.01, ge=0.0, lt=1.0, description="Share of documents in the validation split.")
    split_seed: int = Field(0, description="Seed of the deterministic per-document split.")
    doc_split: Literal["file", "blank_line", "line"] = Field("file", description="How text files are cut into documents.")
    text_field: str = Field("text", description="The text field of JSON Lines records.")
    batch_bytes: int = Field(8 << 20, gt=0, description="Text per parallel encode_batch call.")


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


def _verified_prefix(out_dir: Path, entries: Any) -> list[dict[str, Any]]:
    """The journaled shards, in order, up to the first that is not intact (a malformed journal
    keeps nothing: everything is encoded again)."""
    kept = []
    try:
        for e in entries:
            path = inside(out_dir, e["file"], "journaled shard")
            if not path.is_file() or path.stat().st_size != e["bytes"] or sha256_file(path) != e["sha256"]:
                break
            kept.append(e)
    except (UnsafePath, KeyError, TypeError):
        return []
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
        "code_version": hataori_version(),
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
    writer = _Writer(Path(tokenizer_path), out_dir, config, source_key)
    finished = writer.finished_dataset(overwrite)
    if finished is not None:
        return finished
    writer.resume()
    seen = writer.encode(documents, progress)
    return writer.finish(seen)


class _Writer:
    """One dataset build: the tokenizer, the journal of finished shards, one buffer per split."""

    def __init__(self, tokenizer_path: Path, out_dir: Path, config: DatasetConfig, source_key: str):
        from tokenizer_rs import Tokenizer

        self.tokenizer_path, self.out_dir, self.config = tokenizer_path, out_dir, config
        self.tokenizer_digest = sha256_file(tokenizer_path)
        self.tok = Tokenizer.from_file(str(tokenizer_path))
        self.eot = self.tok.token_to_id(EOT)
        if self.eot is None:
            raise DatasetError(f"{tokenizer_path}: the tokenizer has no {EOT} token to separate documents")
        self.dtype = token_dtype(self.tok.vocab_size)
        material = json.dumps([FORMAT_VERSION, self.tokenizer_digest, config.model_dump(exclude={"batch_bytes"}), source_key], sort_keys=True)
        self.key = hashlib.sha256(material.encode()).hexdigest()
        self.progress_path = out_dir / PROGRESS
        self.journal: dict[str, Any] = {"key": self.key, "shards": {s: [] for s in SPLITS}}

    def finished_dataset(self, overwrite: bool) -> dict[str, Any] | None:
        """The manifest of the same dataset, already built and whole; else None (after clearing a
        manifest that may be replaced: our own damaged dataset, or any with `overwrite`)."""
        out_dir = self.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)
        if not (out_dir / MANIFEST).exists():
            return None
        old = read_manifest(out_dir)
        complete = all(
            (out_dir / e["file"]).is_file() and (out_dir / e["file"]).stat().st_size == e["bytes"]
            for split in old.get("splits", {}).values()
            for e in split.get("shards", [])
        )
        if old.get("key") == self.key and complete:
            return old
        if old.get("key") != self.key and not overwrite:
            raise DatasetError(f"{out_dir}: holds a dataset built from other inputs or settings (pass overwrite=True / --overwrite to replace it)")
        (out_dir / MANIFEST).unlink()  # our own dataset, damaged, or one the caller replaces
        return None

    def resume(self) -> None:
        """Keeps the journaled shards whose digests still match; every other shard of ours goes."""
        if self.progress_path.exists():
            try:
                previous = json.loads(self.progress_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = {}
            if isinstance(previous, dict) and previous.get("key") == self.key and isinstance(previous.get("shards"), dict):
                self.journal["shards"] = {s: _verified_prefix(self.out_dir, previous["shards"].get(s, [])) for s in SPLITS}
        keep = {e["file"] for s in SPLITS for e in self.journal["shards"][s]}
        for f in self.out_dir.iterdir():
            # Only our own shard names and their temp files: never anything else a user keeps here.
            if OUR_SHARD.fullmatch(f.name) and f.name not in keep:
                f.unlink()
        shards = self.journal["shards"]
        self.resumed = {s: (shards[s][-1]["docs_done"] if shards[s] else 0) for s in SPLITS}
        self.buffers = {s: _SplitBuffer(s, self.dtype, len(shards[s]), self.resumed[s]) for s in SPLITS}
        shutil.copyfile(self.tokenizer_path, self.out_dir / TOKENIZER_COPY)
        self.metadata = {"format_version": str(FORMAT_VERSION), "tokenizer_sha256": self.tokenizer_digest, "dataset_key": self.key}

    def commit(self, entry: dict[str, Any] | None, split: str) -> None:
        """Journals a finished shard, so a killed build resumes after it."""
        if entry is not None:
            self.journal["shards"][split].append(entry)
            write_json_atomic(self.progress_path, self.journal)

    def encode(self, documents: Iterable[str], progress: bool) -> dict[str, int]:
        """Encodes the documents not yet in a verified shard, in parallel batches of about
        batch_bytes; returns how many documents each split saw."""
        seen = {s: 0 for s in SPLITS}
        batch: list[str] = []
        batch_splits: list[str] = []
        batch_bytes = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="encode", unit="doc", dynamic_ncols=True, mininterval=0.5)
        for index, doc in enumerate(documents):
            split = "val" if is_validation(index, self.config.split_seed, self.config.val_fraction) else "train"
            seen[split] += 1
            if seen[split] <= self.resumed[split]:
                continue  # already in a verified shard
            batch.append(doc)
            batch_splits.append(split)
            batch_bytes += len(doc)
            if batch_bytes >= self.config.batch_bytes:
                self._encode_batch(batch, batch_splits, bar)
                batch, batch_splits, batch_bytes = [], [], 0
        self._encode_batch(batch, batch_splits, bar)
        for split in SPLITS:
            self.commit(self.buffers[split].flush(self.out_dir, self.metadata), split)
        if bar is not None:
            bar.close()
        return seen

    def _encode_batch(self, batch: list[str], splits: list[str], bar) -> None:
        if not batch:
            return
        flat, lengths = self.tok.encode_batch_flat(batch, separator=self.eot, dtype="uint16" if self.dtype.itemsize == 2 else "uint32")
        ids = np.frombuffer(flat, dtype=self.dtype)
        offset = 0
        for split, n in zip(splits, lengths):
            self.buffers[split].add(ids[offset : offset + n])
            offset += n
            if self.buffers[split].tokens >= self.config.shard_tokens:
                self.commit(self.buffers[split].flush(self.out_dir, self.metadata), split)
        if bar is not None:
            bar.update(len(batch))

    def finish(self, seen: dict[str, int]) -> dict[str, Any]:
        """Refuses an empty training split, warns of an empty validation split, writes the manifest last."""
        shards, out_dir, config = self.journal["shards"], self.out_dir, self.config
        if not shards["train"]:
            raise DatasetError(f"{out_dir}: no training documents: the inputs hold no text"
                               + (" (every document went to validation: lower --val-fraction)" if seen["val"] else ""))
        if config.val_fraction > 0 and not shards["val"]:
            warnings.warn(f"{out_dir}: the validation split is empty ({seen['train']} document(s), val_fraction "
                          f"{config.val_fraction}): training will report no validation loss. Cut files into more documents "
                          "(--doc-split blank_line or line) or raise --val-fraction", stacklevel=3)
        manifest = make_manifest(self.key, self.tokenizer_digest, self.tok.vocab_size, self.eot, self.dtype,
                                 config.model_dump(), shards)
        write_json_atomic(out_dir / MANIFEST, manifest)
        self.progress_path.unlink(missing_ok=True)
        return manifest
