"""Corpus downloads against a real HTTP server on 127.0.0.1: retries, Range resume, checksums,
404s, and archives that try to escape their directory."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline.download import DownloadError, fetch, unpack

BODY = ("吾輩は猫である。名前はまだ無い。\n" * 4000).encode("utf-8")


class Server:
    """Serves BODY at /corpus.txt with Range support; can drop the first N connections mid-way."""

    def __init__(self):
        self.drops = 0
        self.requests: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.headers.get("Range"))
                if self.path != "/corpus.txt":
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(BODY) - start))
                self.end_headers()
                if outer.drops > 0:
                    outer.drops -= 1
                    self.wfile.write(BODY[start : start + 10_000])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop mid-transfer
                    return
                self.wfile.write(BODY[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_downloads_and_verifies(server, tmp_path):
    sha = hashlib.sha256(BODY).hexdigest()
    path = fetch(f"{server.url}/corpus.txt", tmp_path, sha256=sha, progress=False)
    assert path.read_bytes() == BODY and not list(tmp_path.glob("*.part"))
    assert fetch(f"{server.url}/corpus.txt", tmp_path, sha256=sha, progress=False) == path
    assert len(server.requests) == 1  # the second call found the verified file


def test_dropped_transfers_resume_with_range(server, tmp_path):
    server.drops = 2
    path = fetch(f"{server.url}/corpus.txt", tmp_path, backoff=0.01, progress=False)
    assert path.read_bytes() == BODY
    assert server.requests[0] is None and server.requests[1] == "bytes=10000-" and server.requests[2] == "bytes=20000-"


def test_gives_up_with_a_clear_error_and_no_file(server, tmp_path):
    server.drops = 10
    with pytest.raises(DownloadError, match=r"corpus\.txt: failed after 3 attempts"):
        fetch(f"{server.url}/corpus.txt", tmp_path, retries=2, backoff=0.01, progress=False)
    assert not (tmp_path / "corpus.txt").exists()  # only the .part, never a file that looks complete
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/missing.txt", tmp_path, progress=False)


def test_checksum_mismatch_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        fetch(f"{server.url}/corpus.txt", tmp_path, sha256="0" * 64, progress=False)
    assert not (tmp_path / "corpus.txt").exists() and not (tmp_path / "corpus.txt.part").exists()


def test_local_paths_and_file_urls(tmp_path):
    f = tmp_path / "local.txt"
    f.write_bytes(BODY)
    assert fetch(str(f), tmp_path / "x") == f
    assert fetch(f.as_uri(), tmp_path / "x") == f
    with pytest.raises(DownloadError, match="no such file"):
        fetch(str(tmp_path / "nope.txt"), tmp_path)
    with pytest.raises(DownloadError, match="unsupported scheme"):
        fetch("ftp://example.org/a.txt", tmp_path)


def test_archives_unpack_and_traversal_is_refused(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("books/a.txt", "A")
        z.writestr("b.txt", "B")
    assert sorted(p.name for p in unpack(good, tmp_path / "out")) == ["a.txt", "b.txt"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("ok.txt", "fine")
        z.writestr("../../escape.txt", "gotcha")
    with pytest.raises(DownloadError, match=r"escape\.txt.*outside.*refused"):
        unpack(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out2" / "ok.txt").exists()
    tar_path = tmp_path / "evil.tar.gz"
    with tarfile.open(tar_path, "w:gz") as t:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(DownloadError, match="link"):
        unpack(tar_path, tmp_path / "out3")
    ok_tar = tmp_path / "ok.tar.gz"
    with tarfile.open(ok_tar, "w:gz") as t:
        data = "本文".encode()
        info = tarfile.TarInfo("dir/text.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    assert [p.read_text() for p in unpack(ok_tar, tmp_path / "out4")] == ["本文"]
