"""Pretraining: it learns, resumes exactly after SIGKILL, survives a damaged checkpoint, runs
under torchrun with 2 CPU ranks (gloo), and refuses bad settings with clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model.config import GPTConfig
from model.gpt import GPT
from model.pretrain import TrainConfig, train
from pipeline.dataset_writer import DatasetConfig, build_dataset
from tokenizer_rs import Tokenizer

DOCS = [f"Story {i}: the cat sat on the mat {i % 7} times and the dog ran {i % 5} laps." for i in range(400)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    Tokenizer.train(iter(DOCS), 300, show_progress=False).save(str(root / "tokenizer.json"))
    build_dataset(iter(DOCS), root / "tokenizer.json", root / "ds", DatasetConfig(shard_tokens=3000, val_fraction=0.1), progress=False)
    return root / "ds"


def cli_train(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "pretrain", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--batch-size", "8", "--context-length", "32", "--device", "cpu", "--no-progress",
            "--set", "model.dropout=0.1", "--set", "checkpoint_interval=5", "--set", "eval_interval=10",
            "--set", "warmup_steps=5", "--set", "lr=0.003", "--set", "sample_tokens=0", *extra]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=100, context_length=16))
    x = torch.randint(0, 100, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_loss_at_every_step(dataset, tmp_path):
    steps = ["--max-steps", "60"]
    reference = subprocess.run(cli_train(dataset, tmp_path / "reference", *steps), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(cli_train(dataset, run, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for _ in metrics.open()) >= 27:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert done and done[-1] < "step-000060"

    resumed = subprocess.run(cli_train(dataset, run, *steps), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref, got = losses(tmp_path / "reference"), losses(run)
    assert sorted(got) == list(range(60))
    assert got == ref  # bit-identical, every step, before and after the kill
    assert len(ckpt.list_checkpoints(run / "checkpoints")) == 3  # keep_checkpoints
    assert (run / "loss.png").stat().st_size > 1000


def test_damaged_newest_checkpoint_falls_back(dataset, tmp_path):
    cfg = TrainConfig(data=dataset, out=tmp_path / "run", max_steps=10, batch_size=4, context_length=16,
                      checkpoint_interval=5, sample_tokens=0, progress=False, device="cpu")
    train(cfg)
    newest = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    with open(newest / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00garbage\x00")
    with pytest.warns(UserWarning, match="step-000010.*falling back"):
        found = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    assert found.name == "step-000005"
    # Training on resumes from step 5 and finishes.
    with pytest.warns(UserWarning):
        summary = train(cfg.model_copy(update={"max_steps": 12}))
    assert summary["start_step"] == 5 and summary["steps"] == 12


def test_bad_settings_name_the_field(dataset, tmp_path):
    base = dict(data=dataset, out=tmp_path / "run", max_steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="context_length 128 is longer than the model's position table \\(64\\)"):
        train(TrainConfig(**base, context_length=128))
    with pytest.raises(ValueError, match="embedding has 200 rows"):
        train(TrainConfig(**base, model={"vocab_size": 200}))
    with pytest.raises(ValueError, match="n_embd"):
        train(TrainConfig(**base, model={"n_embd": 30, "n_head": 4}))
    r = subprocess.run(cli_train(dataset, tmp_path / "r", "--set", "batch_sise=3"), capture_output=True, text=True)
    assert r.returncode == 2 and "batch_sise" in r.stderr


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(dataset, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", *cli_train(dataset, tmp_path / "ddp", "--max-steps", "6")[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(losses(tmp_path / "ddp")) == list(range(6))  # rank 0 logs each step once
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "ddp" / "checkpoints")] == ["step-000005", "step-000006"]
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-000006" / "state.json").read_text())
    assert state["loader"]["step"] == 6


@pytest.mark.slow
@pytest.mark.data
def test_loss_falls_on_japanese_text(data_dir, tmp_path):
    text = (data_dir / "aozora" / "aozora_ja.txt").read_text(encoding="utf-8")[:400_000]
    paragraphs = [line for line in text.splitlines() if line.strip()]
    tok = Tokenizer.train(iter(paragraphs), 2000, pretokenizer="ja", show_progress=False)
    tok.save(str(tmp_path / "tokenizer.json"))
    build_dataset(iter(paragraphs), tmp_path / "tokenizer.json", tmp_path / "ds", DatasetConfig(val_fraction=0.1), progress=False)
    cfg = TrainConfig(data=tmp_path / "ds", out=tmp_path / "run", preset="tiny", max_steps=300, batch_size=8,
                      context_length=64, lr=3e-3, warmup_steps=10, eval_interval=60, eval_batches=8,
                      checkpoint_interval=300, sample_tokens=16, progress=False, device="cpu")
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 5
    assert all(later < earlier for earlier, later in zip(val, val[1:])), val  # falls at every evaluation
    # Below the unigram entropy of the training tokens: the model uses context, not just frequencies.
    from model.dataset import TokenDataset

    train_tokens = TokenDataset(tmp_path / "ds").tokens(0, len(TokenDataset(tmp_path / "ds")))
    p = np.bincount(np.asarray(train_tokens), minlength=2000) / len(train_tokens)
    unigram_entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert val[-1] < unigram_entropy - 0.2, (val, unigram_entropy)
    assert isinstance(rows[-1]["sample"], str)
