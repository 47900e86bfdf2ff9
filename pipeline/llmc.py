"""`.bin` token files of llm.c and nanoGPT, in and out, so FineWeb-style shards can be brought along.

Two formats, never guessed:
- `llmc`: llm.c's files, a header of 256 little-endian int32 (magic, version, token count, zeros)
  followed by the tokens: uint16 for GPT-2-sized vocabularies (magic 20240520, version 1), uint32
  for larger ones (magic 20240801, version 7, as llm.c writes LLaMA-3 tokens). llm.c puts
  `<|endoftext|>` before every document, so document starts are the positions of that token.
- `nanogpt`: nanoGPT's train.bin / val.bin, raw little-endian uint16 tokens with no header (so only
  vocabularies of at most 65,536 tokens).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from model.config import EOT
from model.shard_format import (
    DatasetError,
    open_tensor,
    read_manifest,
    sha256_file,
    shard_name,
    token_dtype,
    write_bytes_atomic,
    write_json_atomic,
    write_shard,
)
from model.config import EOT
from pipeline.dataset_writer import MANIFEST, TOKENIZER_COPY, make_manifest

HEADER_INTS = 256
BIN_FORMATS = ("llmc", "nanogpt")
FORMATS = {  # (magic, version) -> token dtype
    (20240520, 1): np.dtype("<u2"),
    (20240801, 7): np.dtype("<u4"),
}


def read_bin(path: Path) -> np.ndarray:
    """The tokens of an llm.c .bin file (memory-mapped), after checking its header and size."""
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if len(header) < HEADER_INTS:
        raise DatasetError(f"{path}: too short for an llm.c header ({HEADER_INTS * 4} bytes)")
    dtype = FORMATS.get((int(header[0]), int(header[1])))
    if dtype is None:
        raise DatasetError(f"{path}: magic {header[0]} / version {header[1]} is not an llm.c token file "
                           f"(expected one of {sorted(FORMATS)})")
    count = int(header[2])
    expected = HEADER_INTS * 4 + count * dtype.itemsize
    if path.stat().st_size != expected:
        raise DatasetError(f"{path}: {path.stat().st_size} bytes, the header promises {count} tokens ({expected} bytes)")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(count,))


def read_raw_uint16(path: Path) -> np.ndarray:
    """The tokens of a nanoGPT .bin file: headerless little-endian uint16."""
    size = path.stat().st_size
    if size % 2:
        raise DatasetError(f"{path}: {size} bytes, not a whole number of uint16 tokens (not a nanoGPT .bin file)")
    with open(path, "rb") as f:
        first = int.from_bytes(f.read(4), "little") if size >= HEADER_INTS * 4 else None
    if first in {magic for magic, _ in FORMATS}:
        raise DatasetError(f"{path}: starts with an llm.c header: import it with --format llmc")
    return np.memmap(path, dtype="<u2", mode="r") if size else np.zeros(0, dtype="<u2")


def read_tokens(path: Path, fmt: str) -> np.ndarray:
    if fmt not in BIN_FORMATS:
        raise DatasetError(f"unknown .bin format {fmt!r} (use {' or '.join(BIN_FORMATS)})")
    return read_bin(path) if fmt == "llmc" else read_raw_uint16(path)


def write_bin(path: Path, tokens: np.ndarray) -> None:
    dtype = np.dtype(tokens.dtype).newbyteorder("<")
    magic, version = next(k for k, v in FORMATS.items() if v == dtype)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, len(tokens))
    write_bytes_atomic(path, [header.tobytes(), memoryview(np.ascontiguousarray(tokens)).cast("B")])


def split_of(path: Path) -> str:
    """llm.c names shards like fineweb_val_000000.bin / fineweb_train_000001.bin."""
    return "val" if re.search(r"(^|[_\-.])val([_\-.]|$)", path.stem) else "train"


def import_bins(files: list[Path], tokenizer_json: Path, out_dir: Path, fmt: str = "llmc",
                overwrite: bool = False) -> dict[str, Any]:
    """One shard per .bin file (split from the file name); checks every id against the tokenizer.
    A directory that already holds a dataset is replaced only with `overwrite`."""
    from tokenizer_rs import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    eot = tok.token_to_id(EOT)
    dtype = token_dtype(tok.vocab_size)
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise DatasetError(f"{out_dir}: already holds a dataset (pass --overwrite to replace it)")
    if fmt == "nanogpt" and tok.vocab_size > 1 << 16:
        raise DatasetError(f"{tokenizer_json}: {tok.vocab_size} tokens do not fit nanoGPT's uint16 .bin files")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    shards: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for path in sorted(files, key=lambda p: (split_of(p), p.name)):
        tokens = read_tokens(path, fmt)
        if len(tokens) and int(tokens.max()) >= tok.vocab_size:
            bad = int(np.argmax(tokens >= tok.vocab_size))
            raise DatasetError(f"{path}: token id {int(tokens[bad])} at position {bad} is outside the tokenizer's "
                               f"vocabulary of {tok.vocab_size} ({tokenizer_json})")
        starts = np.flatnonzero(tokens == eot).astype(np.int64) if eot is not None else np.zeros(1, np.int64)
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts]).astype(np.int64)
        split = split_of(path)
        name = shard_name(split, len(shards[split]))
        write_shard(out_dir / name, tokens.astype(dtype, copy=False), starts,
                    {"format_version": "1", "tokenizer_sha256": sha256_file(tokenizer_json), "source": path.name})
        shards[split].append({"file": name, "tokens": int(len(tokens)), "documents": int(len(starts)),
                              "bytes": (out_dir / name).stat().st_size, "sha256": sha256_file(out_dir / name)})
    if not shards["train"]:
        raise DatasetError("no training .bin file among the inputs (names containing 'val' go to validation)")
    shutil.copyfile(tokenizer_json, out_dir / TOKENIZER_COPY)
    key = hashlib.sha256("".join(e["sha256"] for s in shards.values() for e in s).encode()).hexdigest()
    manifest = make_manifest(key, sha256_file(tokenizer_json), tok.vocab_size, eot, dtype,
                             {"imported_from": [p.name for p in files]}, shards)
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def export_bins(dataset_dir: Path, out_dir: Path, prefix: str = "hataori", fmt: str = "llmc",
                overwrite: bool = False) -> list[Path]:
    """llmc: every shard as `{prefix}_{split}_{index:06d}.bin`. nanogpt: one `{split}.bin` per split,
    the shards concatenated, as nanoGPT's train.py reads them.

    .bin files of an earlier export already in `out_dir` are replaced only with `overwrite`, and then
    all of them go: a reader that globs `{prefix}_train_*.bin` must never mix two datasets' shards."""
    manifest = read_manifest(dataset_dir)
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    if fmt not in BIN_FORMATS:
        raise DatasetError(f"unknown .bin format {fmt!r} (use {' or '.join(BIN_FORMATS)})")
    if fmt == "nanogpt" and dtype != np.dtype("<u2"):
        raise DatasetError(f"{dataset_dir}: tokens are {dtype.name}; nanoGPT's .bin files hold uint16 only")
    patterns = [f"{split}.bin" for split in manifest["splits"]] if fmt == "nanogpt" else \
        [f"{prefix}_{split}_*.bin" for split in manifest["splits"]]
    earlier = sorted({p for pattern in patterns for p in out_dir.glob(pattern)}) if out_dir.is_dir() else []
    if earlier and not overwrite:
        names = ", ".join(p.name for p in earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
        raise DatasetError(f"{out_dir}: already holds {names} (pass --overwrite to replace them)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _export_nanogpt(dataset_dir, out_dir, manifest, dtype) if fmt == "nanogpt" else \
        _export_llmc(dataset_dir, out_dir, manifest, dtype, prefix)
    for stale in set(earlier) - set(written):
        stale.unlink()
    return written


def _export_llmc(dataset_dir: Path, out_dir: Path, manifest: dict[str, Any], dtype: np.dtype, prefix: str) -> list[Path]:
    written = []
    for split, info in manifest["splits"].items():
        for index, entry in enumerate(info["shards"]):
            tokens = open_tensor(dataset_dir / entry["file"], "tokens", dtype)
            path = out_dir / f"{prefix}_{split}_{index:06d}.bin"
            write_bin(path, tokens)
            written.append(path)
    return written


def _export_nanogpt(dataset_dir: Path, out_dir: Path, manifest: dict[str, Any], dtype: np.dtype) -> list[Path]:
    written = []
    for split, info in manifest["splits"].items():
        if not info["shards"]:
            continue
        chunks = [memoryview(np.ascontiguousarray(open_tensor(dataset_dir / e["file"], "tokens", dtype))).cast("B")
                  for e in info["shards"]]
        path = out_dir / f"{split}.bin"
        write_bytes_atomic(path, chunks)
        written.append(path)
    return written
