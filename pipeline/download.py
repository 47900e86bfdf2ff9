"""Fetching corpus sources: http(s) with retries, backoff and resumed partial downloads (Range),
local paths and file:// URLs, an optional sha256 check, and archive unpacking that refuses paths
escaping the target directory and archives that would unpack to more than the disk should take.

A download is only ever used once it is complete and verified. The cache is keyed by the full
URL (`downloads/<sha256 of the URL>/<file name>`), so two URLs ending in the same name never share
a file. Bytes arrive in `NAME.part`; a resumed transfer must continue exactly where the part
ends (the server's Content-Range says so, and If-Range makes a changed file start over); a
transfer that announced its length must deliver all of it; the part becomes `NAME` only then,
after its checksum (when given) matches.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from model.files import remove_stale_temps, sha256_file, write_json_atomic

CHUNK = 1 << 16
# Archive bombs: no archive unpacks to more than this, nor to more than RATIO times its own size
# once past RATIO_FLOOR (text compresses ~3-10x; a thousandfold expansion is not a corpus).
MAX_UNPACKED_BYTES = 256 << 30
MAX_RATIO = 1000
RATIO_FLOOR = 64 << 20
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A source that could not be fetched or verified; the message names the URL or file."""


class _Retry(Exception):
    """A transfer that failed in a way the next attempt may not (cut short, out of step)."""


def _check(path: Path, sha256: str | None, source: str) -> None:
    if sha256 and (actual := sha256_file(path)) != sha256.lower():
        raise DownloadError(f"{source}: sha256 {actual} does not match the expected {sha256}")


def _filename(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    name = re.sub(r"[^\w.\-]", "_", name).lstrip(".")
    return name[:200] or "download"


def cache_dir(url: str, dest_dir: Path) -> Path:
    """Where `url`'s download lives: a directory named by the digest of the whole URL."""
    return Path(dest_dir) / hashlib.sha256(url.encode()).hexdigest()[:32]


def local_path(url: str) -> Path | None:
    """The file a local source names (a path or file:// URL), or None for any other scheme."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(url) if parsed.scheme == "" or len(parsed.scheme) == 1 else None


def fetch(url: str, dest_dir: Path, *, sha256: str | None = None, retries: int = 4, backoff: float = 1.0,
          timeout: float = 60.0, progress: bool = True) -> Path:
    """Downloads (or copies) `url` into `dest_dir` and returns the local file.

    http(s): up to `retries` further attempts with exponential backoff after network errors and
    transfers cut short; an interrupted transfer continues from where it stopped when the server
    honours Range. Client errors (4xx) are not retried. Local paths and file:// URLs are used in
    place (nothing is copied) once their checksum, if given, matches.
    """
    path = local_path(url)
    if path is not None:
        if not path.exists():
            raise DownloadError(f"{url}: no such file or directory")
        if path.is_file():
            _check(path, sha256, url)
        return path
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported scheme {scheme!r} (use http, https, file or a path)")

    folder = cache_dir(url, dest_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / _filename(url)
    if final.exists():
        try:
            _check(final, sha256, url)
            return final
        except DownloadError:
            final.unlink()  # a download that no longer verifies is fetched again, never used
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
            if e.code == 416:  # the part is no prefix of what the server has: start over
                _discard(part)
            elif 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except DownloadError:
            raise  # decided, not a hiccup of the network (e.g. no room on the disk)
        except (_Retry, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last_error = e
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last_error}); the partial file is kept for the next run")
    try:
        _check(part, sha256, url)
    except DownloadError:
        _discard(part)
        raise
    part.replace(final)
    _meta(part).unlink(missing_ok=True)
    return final


def _meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta(part).unlink(missing_ok=True)


def _validator(part: Path) -> str | None:
    """The ETag (or Last-Modified) the partial file came with, for If-Range."""
    try:
        return json.loads(_meta(part).read_text()).get("validator")
    except (OSError, ValueError, AttributeError):
        return None


class _HTTPRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlparse(newurl).scheme not in ("http", "https"):
            raise DownloadError(f"{req.full_url}: redirected to {newurl}, which is not http or https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HTTPRedirectsOnly)


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "hataori"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator := _validator(part):
            headers["If-Range"] = validator  # a changed file comes whole (200), never spliced
    with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        if have and response.status == 206:
            _check_resume(url, response.headers.get("Content-Range"), have, part)
        elif have:
            have = 0  # the server sent the whole file: start over
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        write_json_atomic(_meta(part), {"url": url, "validator": validator})
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        if expected is not None and expected > shutil.disk_usage(part.parent).free:
            raise DownloadError(f"{url}: {expected:,} bytes to download, {shutil.disk_usage(part.parent).free:,} free "
                                f"on the disk of {part.parent}")
        with open(part, "ab" if have else "wb") as out:
            received = _copy(response, out, expected, have, progress, url)
    if expected is not None and received != expected:
        raise _Retry(f"connection closed after {have + received} of {have + expected} bytes")


def _check_resume(url: str, content_range: str | None, have: int, part: Path) -> None:
    m = CONTENT_RANGE.fullmatch((content_range or "").strip())
    if m is None or int(m.group(1)) != have:
        _discard(part)  # bytes from elsewhere in the file must not be appended to ours
        raise _Retry(f"asked to resume at byte {have}, the server answered Content-Range {content_range!r}; starting over")


def _copy(response: IO[bytes], out: IO[bytes], expected: int | None, have: int, progress: bool, url: str) -> int:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None if expected is None else have + expected, initial=have, unit="B", unit_scale=True,
                   desc=_filename(url), leave=False)
    received = 0
    try:
        while block := response.read(CHUNK):
            out.write(block)
            received += len(block)
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return received


# ------------------------------------------------------------------------------------------ archives


def _safe_target(root: Path, member: str, archive: Path) -> Path:
    target = (root / member).resolve()
    if not target.is_relative_to(root.resolve()) or PurePosixPath(member).is_absolute():
        raise DownloadError(f"{archive}: member {member!r} would be written outside {root} (refused)")
    return target


class _Budget:
    """What an archive may unpack to: MAX_UNPACKED_BYTES, MAX_RATIO times its size, and the free disk."""

    def __init__(self, archive: Path, dest: Path):
        self.archive, self.used = archive, 0
        size = archive.stat().st_size
        free = shutil.disk_usage(dest).free
        self.limit = min(MAX_UNPACKED_BYTES, max(RATIO_FLOOR, size * MAX_RATIO), free)

    def copy(self, src: IO[bytes], dst: IO[bytes], member: str) -> None:
        while block := src.read(CHUNK):
            self.used += len(block)
            if self.used > self.limit:
                raise DownloadError(f"{self.archive}: unpacks to more than {self.limit:,} bytes (at member {member!r}): "
                                    "refused as an archive bomb or too large for the disk")
            dst.write(block)

    def declare(self, size: int, member: str) -> None:
        """Refuses before writing anything when the sizes the archive declares already exceed the budget."""
        if size > self.limit:
            raise DownloadError(f"{self.archive}: declares {size:,} unpacked bytes (member {member!r}), more than "
                                f"the {self.limit:,} allowed: refused as an archive bomb or too large for the disk")


def unpack(archive: Path, dest_dir: Path) -> list[Path]:
    """Extracts .zip, .tar(.gz|.bz2|.xz) and .gz files into `dest_dir` (replaced whole, only once
    extraction finished); returns the extracted files.

    Members with absolute paths or `..` that would land outside `dest_dir`, links and devices are
    refused before anything is written; so are archives that would unpack to more than the budget
    (`_Budget`), whatever their headers claim.
    """
    dest_dir = Path(dest_dir)
    remove_stale_temps(dest_dir.parent)  # staging directories of killed runs
    staging = dest_dir.with_name(f".{dest_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files = _extract(archive, staging)
        shutil.rmtree(dest_dir, ignore_errors=True)
        os.replace(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [dest_dir / f.relative_to(staging) for f in files]


SINGLE_FILE = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _extract(archive: Path, dest: Path) -> list[Path]:
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest, _Budget(archive, dest))
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, dest, _Budget(archive, dest))
        suffix = archive.suffix.lower()
        if suffix in SINGLE_FILE:
            target = dest / archive.name[: -len(suffix)]
            with SINGLE_FILE[suffix](archive, "rb") as src, open(target, "wb") as dst:
                _Budget(archive, dest).copy(src, dst, target.name)
            return [target]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        if isinstance(e, DownloadError) or (isinstance(e, OSError) and e.errno is not None):
            raise
        raise DownloadError(f"{archive}: a damaged or incomplete archive ({e})") from None
    raise DownloadError(f"{archive}: not a zip, tar, gzip, bzip2 or xz archive")


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> list[Path]:
    out = []
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.infolist() if not m.is_dir()]
        targets = [_safe_target(dest, m.filename, archive) for m in members]
        budget.declare(sum(m.file_size for m in members), members[0].filename if members else "")
        for m, t in zip(members, targets):
            t.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(t, "wb") as dst:
                budget.copy(src, dst, m.filename)
            out.append(t)
    return out


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> list[Path]:
    out = []
    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            if m.issym() or m.islnk() or m.isdev():
                raise DownloadError(f"{archive}: member {m.name!r} is a link or device (refused)")
            _safe_target(dest, m.name, archive)
        budget.declare(sum(m.size for m in members if m.isfile()), members[0].name if members else "")
        for m in members:
            if m.isfile():
                target = _safe_target(dest, m.name, archive)
                target.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(m) as src, open(target, "wb") as dst:
                    budget.copy(src, dst, m.name)
                out.append(target)
    return out
