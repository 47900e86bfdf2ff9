"""Fetching corpus sources: http(s) with retries, backoff and resumed partial downloads (Range),
local paths and file:// URLs, an optional sha256 check, and archive unpacking that refuses paths
escaping the target directory. A file is only ever used once it is complete and verified: bytes
arrive in `NAME.part`, which is renamed when the transfer (and the checksum) succeeded.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from model.shard_format import sha256_file

CHUNK = 1 << 16


class DownloadError(OSError):
    """A source that could not be fetched or verified; the message names the URL or file."""


def _check(path: Path, sha256: str | None, source: str) -> None:
    if sha256 and (actual := sha256_file(path)) != sha256.lower():
        raise DownloadError(f"{source}: sha256 {actual} does not match the expected {sha256}")


def _filename(url: str) -> str:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    return name or "download"


def fetch(url: str, dest_dir: Path, *, sha256: str | None = None, retries: int = 4, backoff: float = 1.0,
          timeout: float = 60.0, progress: bool = True) -> Path:
    """Downloads (or copies) `url` into `dest_dir` and returns the local file.

    http(s): up to `retries` further attempts with exponential backoff; an interrupted transfer
    continues from where it stopped when the server honours Range. Local paths and file:// URLs
    are used in place (nothing is copied) once their checksum, if given, matches.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url)
        if not path.exists():
            raise DownloadError(f"{url}: no such file or directory")
        if path.is_file():
            _check(path, sha256, url)
        return path
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported scheme {parsed.scheme!r} (use http, https, file or a path)")

    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / _filename(url)
    if final.exists():
        try:
            _check(final, sha256, url)
            return final
        except DownloadError:
            final.unlink()
    part = final.with_name(final.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            last_error = e
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as e:
            last_error = e
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last_error}); the partial file is kept for the next run")
    try:
        _check(part, sha256, url)
    except DownloadError:
        part.unlink()
        raise
    part.replace(final)
    return final


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hataori", **({"Range": f"bytes={have}-"} if have else {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=_filename(url), leave=False)
        received = 0
        with open(part, "ab" if have else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()
        if length is not None and received < int(length):
            raise ConnectionError(f"connection closed after {have + received} of {total} bytes")


def _safe_target(root: Path, member: str, archive: Path) -> Path:
    target = (root / member).resolve()
    if not target.is_relative_to(root.resolve()) or PurePosixPath(member).is_absolute():
        raise DownloadError(f"{archive}: member {member!r} would be written outside {root} (refused)")
    return target


def unpack(archive: Path, dest_dir: Path) -> list[Path]:
    """Extracts .zip, .tar(.gz|.bz2|.xz) and .gz files; returns the extracted files.

    Members with absolute paths or `..` that would land outside `dest_dir`, and links, are refused
    before anything is written.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    out: list[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            targets = [_safe_target(dest_dir, m.filename, archive) for m in members]
            for m, t in zip(members, targets):
                t.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(t, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out.append(t)
        return out
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for m in members:
                if m.issym() or m.islnk() or m.isdev():
                    raise DownloadError(f"{archive}: member {m.name!r} is a link or device (refused)")
                _safe_target(dest_dir, m.name, archive)
            for m in members:
                if m.isfile():
                    target = _safe_target(dest_dir, m.name, archive)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with t.extractfile(m) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    out.append(target)
        return out
    if name.endswith(".gz"):
        target = dest_dir / archive.name[:-3]
        with gzip.open(archive, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return [target]
    return [archive]
