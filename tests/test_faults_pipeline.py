"""Faults of an unattended pipeline: sources that give nothing (or are never fetched), a stage
that fails (one line, no retry), a forced rebuild that fails (the old artifact survives), and a
killed `hataori run` (its Prefect server does not outlive it)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fault_support import assert_one_error_line
from pipeline.config import CorpusConfig, PipelineConfig, SourceConfig
from pipeline.stages import corpus

STORY = "The fox ran over the hill and the dog slept by the fire.\n"


def build_corpus(tmp_path: Path, *sources: SourceConfig) -> dict:
    out = tmp_path / "artifact"
    out.mkdir(exist_ok=True)
    return corpus.run(CorpusConfig(sources=list(sources)), [], out, downloads=tmp_path / "downloads", progress=False)


def docs(tmp_path: Path) -> list[str]:
    return list(corpus.documents(tmp_path / "artifact"))


def test_a_source_named_explicitly_is_read_whatever_its_suffix(tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\n\n" + STORY)
    (tmp_path / "pg11.txt.utf-8").write_text("Alice was beginning to get very tired.\n")
    stats = build_corpus(tmp_path, SourceConfig(url=str(tmp_path / "notes.md")), SourceConfig(url=str(tmp_path / "pg11.txt.utf-8")))
    assert stats["documents"] == 2 and any("Alice" in d for d in docs(tmp_path)) and any("# Notes" in d for d in docs(tmp_path))


@pytest.mark.parametrize("make, fragment", [
    (lambda d: (d / "empty.txt").write_text(""), "gave no documents"),
    (lambda d: (d / "blank.txt").write_text("\n\n   \n"), "gave no documents"),
])
def test_a_source_that_gives_nothing_is_refused_by_name(tmp_path, make, fragment):
    make(tmp_path)
    name = next(p for p in tmp_path.iterdir() if p.suffix == ".txt")
    (tmp_path / "other.txt").write_text(STORY)
    with pytest.raises(ValueError, match=rf"corpus\.sources\.1 \({name}\): {fragment}"):
        build_corpus(tmp_path, SourceConfig(url=str(tmp_path / "other.txt")), SourceConfig(url=str(name)))
    assert not (tmp_path / "artifact" / "documents.jsonl").exists() and not list((tmp_path / "artifact").iterdir())


def test_a_directory_without_text_files_is_refused(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "cover.png").write_bytes(b"\x89PNG")
    (folder / "readme.md").write_text(STORY)
    with pytest.raises(ValueError, match=r"the directory .*books holds no \.txt, \.json, \.jsonl files \(it has \.md, \.png\)"):
        build_corpus(tmp_path, SourceConfig(url=str(folder)))


def test_two_urls_ending_in_the_same_name_both_contribute(tmp_path):
    bodies = {"/a/data.txt": b"The first source speaks of foxes.\n", "/b/data.txt": b"The second source speaks of dogs.\n"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(bodies[self.path])))
            self.end_headers()
            self.wfile.write(bodies[self.path])

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        stats = build_corpus(tmp_path, SourceConfig(url=f"{base}/a/data.txt"), SourceConfig(url=f"{base}/b/data.txt"))
    finally:
        httpd.shutdown()
    assert stats["documents"] == 2 and stats["duplicates"] == 0
    assert sorted(docs(tmp_path)) == sorted(b.decode() for b in bodies.values())


def test_a_source_whose_documents_all_duplicate_another_is_said(tmp_path, recwarn):
    (tmp_path / "a.txt").write_text(STORY)
    (tmp_path / "b.txt").write_text(STORY)
    build_corpus(tmp_path, SourceConfig(url=str(tmp_path / "a.txt")), SourceConfig(url=str(tmp_path / "b.txt")))
    assert any("all 1 of its documents duplicate earlier ones" in str(w.message) for w in recwarn)


def test_a_failed_forced_rebuild_leaves_the_old_artifact_usable(tmp_path, monkeypatch):
    from pipeline import runner as runner_module
    from pipeline.stages import BY_NAME

    (tmp_path / "c.txt").write_text(STORY * 50)
    cfg = PipelineConfig(name="force", artifacts=tmp_path / "artifacts", corpus=CorpusConfig(sources=[SourceConfig(url=str(tmp_path / "c.txt"))]),
                         tokenizer={"vocab_size": 270})
    first = runner_module.Runner(cfg, progress=False)
    first.run_stage("corpus")
    built = first.run_stage("tokenizer")
    def fails(ctx, out):
        (out / "tokenizer.json").write_text("half")
        raise OSError("disk on fire")

    monkeypatch.setitem(BY_NAME, "tokenizer", dataclasses.replace(BY_NAME["tokenizer"], build=fails))
    forced = runner_module.Runner(cfg, force="tokenizer", progress=False)
    forced.run_stage("corpus")
    with pytest.raises(runner_module.StageError, match="disk on fire"):
        forced.run_stage("tokenizer")
    assert runner_module.Runner(cfg, progress=False).store.lookup("tokenizer", built["key"]) == built


PIPE = """
name = "fails"
artifacts = "{root}/artifacts"
[corpus]
[[corpus.sources]]
url = "{root}/tiny.txt"
[tokenizer]
vocab_size = 270
[pretrain]
preset = "tiny"
max_steps = {steps}
batch_size = 2
device = "cpu"
sample_tokens = 0
"""


def write_pipeline(root: Path, text: str, steps: int) -> Path:
    (root / "tiny.txt").write_text(text)
    (root / "pipe.toml").write_text(PIPE.format(root=root, steps=steps))
    return root / "pipe.toml"


@pytest.mark.slow
def test_a_failed_stage_is_one_line_and_not_retried(tmp_path):
    config = write_pipeline(tmp_path, "too short to train on.", steps=5)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--no-progress"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")})
    assert_one_error_line(r, "stage pretrain failed", "tokens, fewer than max_length + 1")
    assert "Retry" not in r.stderr and "NoneType: None" not in r.stderr
    assert "in state Failed" not in r.stderr  # Prefect's own failure lines stay off the console


@pytest.mark.slow
def test_a_killed_run_does_not_leave_its_prefect_server_behind(tmp_path):
    config = write_pipeline(tmp_path, (STORY * 30 + "\n") * 40, steps=100000)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    port = None
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if "Starting temporary server on http://127.0.0.1:" in line:
            port = int(line.rsplit(":", 1)[1].split()[0])
        if "pretrain" in line or time.monotonic() > deadline:
            break
    assert port is not None
    server_pids = _listening_pids(port)
    assert server_pids, "no process listens on the temporary server's port"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in server_pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in server_pids), "the Prefect server outlived the killed run"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _listening_pids(port: int) -> list[int]:
    """Processes with a socket listening on 127.0.0.1:port (from /proc, no psutil needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    pids.append(int(proc_dir.name))
                    break
        except OSError:
            continue
    return pids
