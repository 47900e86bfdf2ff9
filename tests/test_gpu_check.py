"""bench/gpu_check.py, the prepared GPU check, rehearsed on the CPU (--dry-run: tiny sizes, the CUDA
tests only collected), so that it still runs end to end on the day a GPU is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_writes_every_step_to_one_json_and_one_table(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, cwd=REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["environment"]["torch"]
    steps = report["steps"]
    assert list(steps) == ["training", "cuda_tests", "loss_step", "generation", "evaluation"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: s["status"] for k, s in steps.items()}
    training = steps["training"]["result"]["rows"]
    assert [r["loss_path"] for r in training] == ["nanogpt-style", "chunked", "plain"]
    assert all(r["tokens_per_s"] > 0 for r in training) and training[0]["vs_baseline"] == 1.0
    assert "collected" in steps["cuda_tests"]["summary"] and "error" not in steps["cuda_tests"]["summary"]
    loss = {r["contender"] for r in steps["loss_step"]["result"]["rows"]}
    assert loss == {"nanoGPT-style", "plain", "chunked"}
    generation = steps["generation"]["result"]["rows"][0]
    assert generation["identical"] and generation["ours_tokens_per_s"] > 0 and generation["transformers_tokens_per_s"] > 0
    evaluation = steps["evaluation"]["result"]["rows"]
    assert abs(evaluation[0]["loss"] - evaluation[1]["loss"]) < 1e-5  # chunked and plain agree
    assert report["goals"]["training_tokens_per_s"] > 0 and "goal_met" not in report["goals"]  # no verdict on a CPU
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| step | status | seconds |" in table and "hataori loop, chunked loss" in table
    assert "===== training" in (tmp_path / "gpu_check.log").read_text()


def test_without_cuda_the_real_check_refuses_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run")
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 2 and p.stderr.strip() == "error: no CUDA device: run `bench/gpu_check.py --dry-run` on the CPU"
