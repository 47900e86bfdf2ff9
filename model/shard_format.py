"""The on-disk format of token datasets, shared by the writer (pipeline) and the reader (model).

A dataset directory holds safetensors shards named ``{split}-{index:05d}.safetensors``, each with
a 1-D ``tokens`` tensor (uint16 when the vocabulary fits, else uint32) and a 1-D int64
``doc_starts`` tensor (where each document begins in ``tokens``), plus string metadata (format
version, tokenizer digest, shard index, token count). ``manifest.json``, written last, lists the
shards with token counts and sha256 digests; a directory without it is not a finished dataset.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.files import (  # noqa: F401 (the atomic writers, re-exported for their many users)
    UnsafePath,
    fsync_dir,
    inside,
    read_json,
    sha256_file,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAFETENSORS_DTYPES = {"U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "I64": np.dtype("<i8")}
NUMPY_TO_SAFETENSORS = {np.dtype("<u2"): "U16", np.dtype("<u4"): "U32", np.dtype("<i8"): "I64"}
MAX_HEADER_BYTES = 100 << 20


class DatasetError(ValueError):
    """A dataset or shard that cannot be used; the message names the file and what is wrong."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.safetensors"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def write_shard(path: Path, tokens: np.ndarray, doc_starts: np.ndarray, metadata: dict[str, str]) -> None:
    """Writes a safetensors shard without an extra in-memory copy of the tokens."""
    tensors = {"doc_starts": np.ascontiguousarray(doc_starts, dtype="<i8"), "tokens": np.ascontiguousarray(tokens)}
    header: dict[str, Any] = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {
            "dtype": NUMPY_TO_SAFETENSORS[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data section to 8 bytes
    write_bytes_atomic(path, [struct.pack("<Q", len(raw)), raw, *(memoryview(a).cast("B") for a in tensors.values())])


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of `path` (every tensor entry checked: known dtype, a shape that
    agrees with its byte range, ranges that neither overlap nor leave the file, and a data section
    that ends where the file ends) and the file offset where tensor data starts."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise DatasetError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise DatasetError(f"{path}: not a safetensors file (header length {n} in a file of {size} bytes)")
            raw = f.read(n)
    except FileNotFoundError:
        raise DatasetError(f"{path}: shard is missing") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: a directory, not a shard") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise DatasetError(f"{path}: corrupt safetensors header (not a JSON object)")
    start = 8 + n
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise DatasetError(f"{path}: __metadata__ must map names to strings")
            continue
        ranges.append((*_tensor_range(path, name, info), name))
    ranges.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(ranges, ranges[1:]):
        if begin_b < end_a:
            raise DatasetError(f"{path}: tensors {a!r} and {b!r} overlap in the file")
    data_end = max((end for _, end, _ in ranges), default=0)
    if start + data_end > size:
        raise DatasetError(f"{path}: truncated: {size} bytes, the header promises {start + data_end}")
    if start + data_end < size:
        raise DatasetError(f"{path}: {size - start - data_end} bytes after the last tensor (not a shard hataori wrote)")
    return header, start


def _tensor_range(path: Path, name: str, info: Any) -> tuple[int, int]:
    """(begin, end) of one tensor's bytes, after checking its header entry."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise DatasetError(f"{path}: tensor {name!r}: header entry lacks dtype, shape or data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise DatasetError(f"{path}: tensor {name!r}: dtype {dtype!r} is not one hataori shards use ({', '.join(SAFETENSORS_DTYPES)})")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise DatasetError(f"{path}: tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise DatasetError(f"{path}: tensor {name!r}: data_offsets {offsets!r} are not [begin, end]")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if offsets[1] - offsets[0] != count * SAFETENSORS_DTYPES[dtype].itemsize:
        raise DatasetError(f"{path}: tensor {name!r}: shape {shape} needs {count * SAFETENSORS_DTYPES[dtype].itemsize} "
                           f"bytes, data_offsets give {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1]


def open_tensor(path: Path, name: str, expect_dtype: np.dtype | None = None) -> np.ndarray:
    """Memory-maps one 1-D tensor of a shard, after `read_header` checked the whole file."""
    header, start = read_header(path)
    if name not in header or name == "__metadata__":
        raise DatasetError(f"{path}: no tensor named {name!r}")
    info = header[name]
    dtype = SAFETENSORS_DTYPES[info["dtype"]]
    if expect_dtype is not None and dtype != expect_dtype:
        raise DatasetError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected {NUMPY_TO_SAFETENSORS.get(expect_dtype, '?')}")
    if len(info["shape"]) != 1:
        raise DatasetError(f"{path}: tensor {name!r} has shape {info['shape']}, expected one dimension")
    begin, end = info["data_offsets"]
    count = (end - begin) // dtype.itemsize
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(count,))


class _Shard(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    tokens: int = Field(ge=0)
    documents: int = Field(0, ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Split(BaseModel):
    model_config = ConfigDict(extra="allow")
    shards: list[_Shard]


class _TokenizerRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    vocab_size: int = Field(gt=0, le=1 << 32)
    eot_id: int | None = None


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    format_version: int
    tokenizer: _TokenizerRef
    dtype: Literal["uint16", "uint32"]
    splits: dict[str, _Split]


def read_manifest(directory: Path) -> dict[str, Any]:
    """A dataset's manifest.json, checked field by field: every shard a plain file name inside the
    directory, counts and digests of the right types, a known token dtype."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{directory}: no {MANIFEST} (not a finished dataset; build it with `hataori dataset build`)")
    try:
        manifest = read_json(path, "dataset manifest")
    except ValueError as e:
        raise DatasetError(str(e)) from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    try:
        checked = _Manifest.model_validate(manifest)
    except ValidationError as e:
        err = e.errors()[0]
        raise DatasetError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for split, info in checked.splits.items():
        for shard in info.shards:
            try:
                inside(directory, shard.file, f"shard of split {split!r}")
            except UnsafePath as e:
                raise DatasetError(f"{path}: {e}") from None
    return manifest
