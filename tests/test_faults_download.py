"""A server on 127.0.0.1 that lies: wrong lengths, a resume that starts elsewhere, a file that
changed between two attempts, no length at all; two URLs that end in the same name; archive
bombs. A download is used only when it is complete and what was asked for."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline import download
from pipeline.download import DownloadError, fetch, unpack

BODY = b"".join(f"line {i}: the quick brown fox\n".encode() for i in range(5000))


class LyingServer:
    """Serves BODY at any path; `mode` picks the lie told on the next requests."""

    def __init__(self):
        self.mode = "honest"
        self.bodies: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.bodies.get(self.path, BODY)
                mode = outer.mode
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if self.headers.get("If-Range") not in (None, '"v1"'):
                    start = 0  # RFC 9110: a validator that no longer matches gets the whole new file
                if mode == "short-once":  # promises everything, sends half, then hangs up
                    outer.mode = "honest"
                    self._head(200, len(body))
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if mode == "wrong-range" and start:  # a 206 that starts at byte 0, not where we asked
                    outer.mode = "honest"
                    self._head(206, len(body), f"bytes 0-{len(body) - 1}/{len(body)}")
                    self.wfile.write(body)
                    return
                if mode == "no-length":  # no Content-Length: the end of the connection ends the body
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                if start:
                    self._head(206, len(body) - start, f"bytes {start}-{len(body) - 1}/{len(body)}")
                    self.wfile.write(body[start:])
                else:
                    self._head(200, len(body))
                    self.wfile.write(body)

            def _head(self, code, length, content_range=None):
                self.send_response(code)
                self.send_header("Content-Length", str(length))
                self.send_header("ETag", '"v1"')
                if content_range:
                    self.send_header("Content-Range", content_range)
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = LyingServer()
    yield s
    s.httpd.shutdown()


def test_a_transfer_cut_short_is_resumed_not_used(server, tmp_path):
    server.mode = "short-once"
    path = fetch(f"{server.url}/a/data.txt", tmp_path, backoff=0.01, progress=False)
    assert path.read_bytes() == BODY
    assert server.requests[1][1] == f"bytes={len(BODY) // 2}-"  # the second request continued the part


def test_a_resume_answered_from_the_wrong_offset_starts_over(server, tmp_path):
    part = download.cache_dir(f"{server.url}/a/data.txt", tmp_path) / "data.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[:1000])
    server.mode = "wrong-range"
    path = fetch(f"{server.url}/a/data.txt", tmp_path, backoff=0.01, progress=False)
    assert path.read_bytes() == BODY  # never BODY[:1000] + BODY


def test_a_file_that_changed_since_the_partial_download_is_fetched_whole(server, tmp_path):
    part = download.cache_dir(f"{server.url}/a/data.txt", tmp_path) / "data.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"OLD VERSION " * 100)
    (part.parent / "data.txt.part.json").write_text('{"validator": "\\"v0\\""}')
    path = fetch(f"{server.url}/a/data.txt", tmp_path, backoff=0.01, progress=False)
    assert path.read_bytes() == BODY


def test_no_content_length_is_complete_when_the_connection_ends_cleanly(server, tmp_path):
    server.mode = "no-length"
    path = fetch(f"{server.url}/plain.txt", tmp_path, progress=False)
    assert path.read_bytes() == BODY


def test_a_checksum_mismatch_leaves_nothing_to_use(server, tmp_path):
    with pytest.raises(DownloadError, match="does not match the expected"):
        fetch(f"{server.url}/a/data.txt", tmp_path, sha256="0" * 64, progress=False)
    assert not list(tmp_path.rglob("data.txt")) and not list(tmp_path.rglob("*.part"))


def test_two_urls_with_the_same_file_name_are_two_downloads(server, tmp_path):
    server.bodies = {"/a/data.txt": b"first source\n", "/b/data.txt": b"second source\n"}
    a = fetch(f"{server.url}/a/data.txt", tmp_path, progress=False)
    b = fetch(f"{server.url}/b/data.txt", tmp_path, progress=False)
    assert a != b and a.read_bytes() == b"first source\n" and b.read_bytes() == b"second source\n"
    assert fetch(f"{server.url}/a/data.txt", tmp_path, progress=False) == a and len(server.requests) == 2


def test_a_client_error_is_not_retried(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        calls = 0

        def log_message(self, *args):
            pass

        def do_GET(self):
            NotFound.calls += 1
            self.send_error(404)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch(f"http://127.0.0.1:{httpd.server_address[1]}/x.txt", tmp_path, backoff=0.01, progress=False)
        assert NotFound.calls == 1
    finally:
        httpd.shutdown()


def test_redirects_are_followed_to_http_only(tmp_path):
    class Redirecting(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/file.txt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
                return
            self.send_response(302)
            self.send_header("Location", "/file.txt" if self.path == "/moved.txt" else "ftp://127.0.0.1/file.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert fetch(f"{base}/moved.txt", tmp_path, progress=False).read_bytes() == BODY
        with pytest.raises(DownloadError, match=r"redirected to ftp://127.0.0.1/file.txt, which is not http or https"):
            fetch(f"{base}/elsewhere.txt", tmp_path, backoff=0.01, progress=False)
        assert not list(tmp_path.rglob("elsewhere.txt"))
    finally:
        httpd.shutdown()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_an_archive_bomb_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RATIO_FLOOR", 1 << 20)
    monkeypatch.setattr(download, "MAX_RATIO", 50)
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"a.txt": b"x" * (8 << 20)}))  # 8 MB of one byte: ~8 KB compressed
    with pytest.raises(DownloadError, match="unpacks to more than|declares"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_bomb_that_lies_about_its_sizes_is_stopped_while_unpacking(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RATIO_FLOOR", 1 << 20)
    monkeypatch.setattr(download, "MAX_RATIO", 50)
    data = bytearray(_zip({"a.txt": b"y" * (4 << 20)}))
    # Rewrite the declared size (local header at 22, central directory entry) to 10 bytes.
    size = (4 << 20).to_bytes(4, "little")
    data = data.replace(size, (10).to_bytes(4, "little"))
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    with pytest.raises(DownloadError):
        unpack(tmp_path / "liar.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_damaged_archive_is_one_clear_error(tmp_path):
    good = _zip({"a.txt": b"hello\n" * 1000})
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    for name in ("cut.zip", "cut.gz"):
        with pytest.raises(DownloadError, match=name.replace(".", r"\.")):
            unpack(tmp_path / name, tmp_path / f"{name}.d")


def test_an_explicit_local_file_with_a_checksum_is_checked(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_bytes(BODY)
    assert fetch(str(f), tmp_path / "dl", sha256=hashlib.sha256(BODY).hexdigest(), progress=False) == f
    with pytest.raises(DownloadError, match="does not match"):
        fetch(str(f), tmp_path / "dl", sha256="1" * 64, progress=False)
