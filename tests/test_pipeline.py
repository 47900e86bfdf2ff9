"""The Prefect pipeline end to end through `hataori run` (a real subprocess, Prefect's ephemeral
server): every stage builds, a rerun is all cached, a changed setting rebuilds exactly what depends
on it, --force rebuilds a stage and its dependents, a damaged artifact is rebuilt."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

STORY = "Once upon a time a small cat lived by the sea. The cat liked fish and long naps in the sun.\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    (root / "local.txt").write_text("\n\n".join(f"{STORY} Chapter {i}." for i in range(150)), encoding="utf-8")
    served = ("\n\n".join(f"A different story number {i}: the dog ran to the hill." for i in range(100))).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

    records = [{"instruction": f"Name animal number {i}.", "input": "" if i % 2 else "a story", "output": "The cat."}
               for i in range(40)]
    (root / "instructions.json").write_text(json.dumps(records), encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    (root / "pipe.toml").write_text(f"""
name = "test"
artifacts = "{root / 'artifacts'}"
[corpus]
[[corpus.sources]]
url = "{root / 'local.txt'}"
doc_split = "blank_line"
[[corpus.sources]]
url = "http://127.0.0.1:{httpd.server_address[1]}/stories.txt"
doc_split = "blank_line"
[tokenizer]
vocab_size = 300
[dataset]
shard_tokens = 2000
val_fraction = 0.1
[pretrain]
preset = "tiny"
max_steps = 6
batch_size = 4
context_length = 32
checkpoint_interval = 3
eval_interval = 3
eval_batches = 2
sample_tokens = 0
device = "cpu"
[finetune]
task = "instruct"
data = "{root / 'instructions.json'}"
max_steps = 4
batch_size = 4
eval_interval = 2
checkpoint_interval = 2
eval_limit = 2
max_new_tokens = 4
device = "cpu"
prompt = "Name an animal."
""", encoding="utf-8")
    yield root
    httpd.shutdown()


PATHS: dict[str, Path] = {}
STAGES = ("corpus", "tokenizer", "dataset", "pretrain", "finetune", "report")


def hataori(root: Path, *args: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect")}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(root / "pipe.toml"), "--no-progress", *args],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    states = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in STAGES and len(parts) >= 3:
            states[parts[0]] = parts[1]
            PATHS[parts[0]] = Path(parts[2])
    assert len(states) == len(STAGES), r.stdout
    assert "answer:" in r.stdout  # the fine-tuned model answers the config's prompt
    return states


@pytest.mark.slow
def test_pipeline_caches_and_rebuilds_exactly_what_changed(project):
    assert set(hataori(project).values()) == {"built"}
    assert set(hataori(project).values()) == {"cached"}

    changed = hataori(project, "--set", "tokenizer.vocab_size=320")
    assert changed == {"corpus": "cached", "tokenizer": "built", "dataset": "built", "pretrain": "built",
                       "finetune": "built", "report": "built"}

    forced = hataori(project, "--force", "shards")
    assert forced == {"corpus": "cached", "tokenizer": "cached", "dataset": "built", "pretrain": "built",
                      "finetune": "built", "report": "built"}

    # The fine-tuning data is keyed by content: an edited record rebuilds only fine-tuning and the report.
    records = json.loads((project / "instructions.json").read_text())
    records[0]["output"] = "The dog."
    (project / "instructions.json").write_text(json.dumps(records), encoding="utf-8")
    edited = hataori(project)
    assert edited == {"corpus": "cached", "tokenizer": "cached", "dataset": "cached", "pretrain": "cached",
                      "finetune": "built", "report": "built"}

    # Damage a shard of the dataset artifact: it is detected and rebuilt, and so is what reads it.
    shard = PATHS["dataset"] / "dataset" / "train-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    damaged = hataori(project)
    assert damaged["dataset"] == "built" and damaged["corpus"] == "cached"

    report = (PATHS["report"] / "report.md").read_text(encoding="utf-8")
    assert "## pretrain" in report and "| val loss |" in report and "## Sample" in report
    assert "## Fine-tuned model" in report and "Name an animal." in report and "reference: The" in report
    scores = json.loads((PATHS["finetune"] / "run" / "eval" / "scores.json").read_text())
    assert scores["n"] == 2 and 0 <= scores["rouge_l"] <= 1
    manifest = json.loads((PATHS["corpus"] / "manifest.json").read_text())
    assert manifest["stats"]["documents"] == 250 and manifest["files"][0]["path"] == "documents.jsonl"


def test_config_errors_stop_before_prefect_starts(project, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((project / "pipe.toml").read_text().replace("vocab_size = 300", "vocab_sise = 300"))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "tokenizer.vocab_sise: Extra inputs are not permitted (bad.toml line" in r.stderr


def test_corpus_stage_reads_hf_datasets_cleans_and_dedupes(tmp_path, monkeypatch):
    """A `datasets` source (a local data directory: no hub here), NFKC, duplicates and short documents."""
    from pipeline.config import CorpusConfig
    from pipeline.stages import corpus

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "hf"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "ＡＢＣ full width"}\n{"text": "same"}\n{"text": "same"}\n{"text": "x"}\n', encoding="utf-8")
    local = tmp_path / "local.txt"
    local.write_text("same\n\nlocal paragraph", encoding="utf-8")
    cfg = CorpusConfig(sources=[{"hf_dataset": str(data)}, {"url": str(local), "doc_split": "blank_line"}],
                       normalizer="nfkc", min_chars=2)
    stats = corpus.run(cfg, [], tmp_path, downloads=tmp_path / "dl", progress=False)
    assert list(corpus.documents(tmp_path)) == ["ABC full width", "same", "local paragraph"]
    assert stats == {"documents": 3, "characters": 33, "duplicates": 2, "too_short": 1, "sources": 2}
    with pytest.raises(ValueError, match="no field 'body'"):
        list(corpus._source_documents(cfg.sources[0].model_copy(update={"text_field": "body"}), tmp_path, False))


def test_torchrun_arguments_round_trip_to_the_same_train_config(tmp_path):
    """nproc > 1 hands the stage's settings to `hataori train` under torchrun as --set options."""
    from model.pretrain import TrainConfig
    from pipeline.config import PretrainStageConfig, apply_overrides
    from pipeline.stages.pretrain import set_options, train_args

    stage = PretrainStageConfig(nproc=2, preset="small", model={"dropout": 0.1, "n_layer": 3}, betas=(0.9, 0.99),
                                compile=True, tokens_per_step=65536, device="cuda")
    args = set_options(train_args(stage))
    values = [a for i, a in enumerate(args) if i % 2 == 1]
    parsed = TrainConfig(**apply_overrides({"data": tmp_path, "out": tmp_path}, values))
    assert parsed == TrainConfig(data=tmp_path, out=tmp_path, **train_args(stage))


@pytest.mark.slow
def test_killed_pretraining_resumes_when_the_flow_runs_again(project, tmp_path):
    import signal
    import time

    config = tmp_path / "long.toml"
    config.write_text((project / "pipe.toml").read_text()
                      .replace("max_steps = 6", "max_steps = 120")
                      .replace(f'artifacts = "{project / "artifacts"}"', f'artifacts = "{tmp_path / "artifacts"}"'))
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect")}
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(config), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    checkpoints = []
    while time.monotonic() < deadline and proc.poll() is None:
        checkpoints = list((tmp_path / "artifacts" / "pretrain").glob("*/run/checkpoints/step-*"))
        if len([c for c in checkpoints if "tmp" not in c.name]) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)  # the flow, its Prefect server, everything
            break
        time.sleep(0.05)
    assert proc.wait() == -signal.SIGKILL, "the flow finished before it could be killed"
    stage_dir = next((tmp_path / "artifacts" / "pretrain").iterdir())
    assert not (stage_dir / "manifest.json").exists()  # not done: no manifest

    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["stats"]["start_step"] >= 6 and manifest["stats"]["steps"] == 120  # resumed, then finished
    steps = [json.loads(line)["step"] for line in (stage_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(120))  # one log, no gaps or repeats across the kill
