"""Files hataori can trust: atomic writes, digests, paths that stay inside their directory,
bounded JSON, one writer per directory, and the clean-up of what a killed process left.

Every artifact, dataset, checkpoint and run directory is written and read through these, so the
promises in README ("What hataori promises when things go wrong") hold in one place.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# JSON that hataori writes itself (manifests, state, configs) is small; anything far larger is not ours.
MAX_JSON_BYTES = 64 << 20
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# Temp names that write_atomic and the checkpoint writer give, with the writer's pid.
TEMP_NAME = re.compile(r"(\..+\.tmp-(\d+))|(step-\d{6}\.tmp-(\d+))")


class UnsafePath(ValueError):
    """A name read from disk that would point outside its directory."""


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


def disk_error(e: OSError, path: Path) -> OSError:
    """`e` as one line that names the file being written (and says when the disk is full)."""
    full = " (is the disk full?)" if e.errno in DISK_FULL else ""
    return OSError(e.errno, f"{e.strerror or e} while writing {path}{full}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp file in the same directory; then fsync and rename, so readers
    never see a half-written `path`, and a failure leaves neither it nor the temp file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from None
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


def read_json(path: Path, what: str = "JSON file", limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file hataori wrote, checked for size first; errors name the file (ValueError)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValueError(f"{path}: missing ({what})") from None
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes, far larger than any {what} hataori writes (limit {limit:,})")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 at byte offset {e.start} ({what})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({what})") from None


def read_utf8(path: Path, limit: int, what: str, error: type[Exception] = ValueError) -> str:
    """A UTF-8 text file, exactly (no newline translation), checked for size before it is read;
    `error(message)` names the file, and the byte offset of bad UTF-8."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes is larger than the {limit >> 20} MiB {what} may be")
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte offset {e.start}: {e.reason})") from None


def inside(directory: Path, name: Any, what: str = "file") -> Path:
    """`directory / name` for a plain relative name read from a manifest: no absolute paths, no
    `..`, no backslashes, and no symlink that leads outside `directory`."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise UnsafePath(f"{directory}: {what} name {name!r} is not a plain relative path")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"{directory}: {what} {name!r} points outside the directory (refused)")
    path = Path(directory) / name
    try:
        real = path.resolve()
        root = Path(directory).resolve()
    except (OSError, RuntimeError):
        raise UnsafePath(f"{directory}: {what} {name!r} cannot be resolved (a symlink loop?)") from None
    if real != root and root not in real.parents:
        raise UnsafePath(f"{directory}: {what} {name!r} is a link to {real}, outside the directory (refused)")
    return path


def remove_stale_temps(directory: Path, recursive: bool = False) -> list[Path]:
    """Deletes the temp files and checkpoint directories that killed hataori processes left in
    `directory` (only our own temp names, and only of processes no longer alive); returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in (directory.rglob("*") if recursive else directory.iterdir()):
        m = TEMP_NAME.fullmatch(path.name)
        if m is None:
            continue
        pid = int(m.group(2) or m.group(4))
        if pid != os.getpid() and _alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_aside(path: Path, suffix: str) -> Path:
    """Renames `path` to `path.<suffix>` (or `.<suffix>-2`, ...) instead of deleting it."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{suffix}")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.{suffix}-{n}")
        n += 1
    os.replace(path, target)
    return target


class Locked(RuntimeError):
    """Another process holds the lock (only raised when a timeout was given)."""


@contextmanager
def exclusive(directory: Path, what: str, on_wait: Callable[[str], None] | None = None,
              timeout: float | None = None) -> Iterator[None]:
    """One writer per directory: an flock on `directory/.lock`, released when the holder exits
    however it dies. A second process waits (saying so once through `on_wait`), or raises
    `Locked` after `timeout` seconds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(path)
                if deadline is not None and time.monotonic() >= deadline:
                    raise Locked(f"{directory}: {what} is in use by {holder}; wait for it to finish or use another directory") from None
                if not told and on_wait is not None:
                    on_wait(f"waiting for {directory}: {what} is in use by {holder}")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"
