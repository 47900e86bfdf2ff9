"""The on-disk format of token datasets, shared by the writer (pipeline) and the reader (model).

A dataset directory holds safetensors shards named ``{split}-{index:05d}.safetensors``, each with
a 1-D ``tokens`` tensor (uint16 when the vocabulary fits, else uint32) and a 1-D int64
``doc_starts`` tensor (where each document begins in ``tokens``), plus string metadata (format
version, tokenizer digest, shard index, token count). ``manifest.json``, written last, lists the
shards with token counts and sha256 digests; a directory without it is not a finished dataset.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAFETENSORS_DTYPES = {"U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "I64": np.dtype("<i8")}
NUMPY_TO_SAFETENSORS = {np.dtype("<u2"): "U16", np.dtype("<u4"): "U32", np.dtype("<i8"): "I64"}


class DatasetError(ValueError):
    """A dataset or shard that cannot be used; the message names the file and what is wrong."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.safetensors"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp file in the same directory; then fsync and rename, so readers
    never see a half-written `path`, and a failure leaves neither it nor the temp file behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        full = " (is the disk full?)" if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ""
        raise OSError(e.errno, f"{e.strerror} while writing {path}{full}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, chunks: list[bytes | memoryview]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)

    write_atomic(path, write)


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, [json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"])


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
    """The safetensors header of `path` and the file offset where tensor data starts."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise DatasetError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", prefix)
            if n > 100 << 20:
                raise DatasetError(f"{path}: not a safetensors file (header length {n})")
            raw = f.read(n)
    except FileNotFoundError:
        raise DatasetError(f"{path}: shard is missing") from None
    if len(raw) < n:
        raise DatasetError(f"{path}: truncated inside the safetensors header")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: corrupt safetensors header ({e})") from None
    return header, 8 + n


def open_tensor(path: Path, name: str, expect_dtype: np.dtype | None = None) -> np.ndarray:
    """Memory-maps one 1-D tensor of a shard, checking dtype and that the file is complete."""
    header, start = read_header(path)
    if name not in header:
        raise DatasetError(f"{path}: no tensor named {name!r}")
    info = header[name]
    dtype = SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None or (expect_dtype is not None and dtype != expect_dtype):
        want = NUMPY_TO_SAFETENSORS.get(expect_dtype, "?") if expect_dtype is not None else "U16/U32/I64"
        raise DatasetError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected {want}")
    begin, end = info["data_offsets"]
    size = path.stat().st_size
    if start + end > size:
        raise DatasetError(f"{path}: truncated: {size} bytes, the header promises {start + end}")
    count = (end - begin) // dtype.itemsize
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(count,))


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{directory}: no {MANIFEST} (not a finished dataset; build it with `hataori data build`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    return manifest
