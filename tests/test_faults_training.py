"""Faults a training run meets: damaged checkpoints (never deleted, never a silent restart),
checkpoints that verify but do not load, torn metrics, leftovers of killed runs, a full disk while
checkpointing, a second trainer on the same run, and configs asking for more memory than there is."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_support import assert_one_error_line, hataori, pretrain_args, tiny_dataset
from model import checkpoint as ckpt
from model.files import sha256_file


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("faults-training"))


@pytest.fixture
def run(data, tmp_path) -> Path:
    """A run trained to step 6: checkpoints step-000004 and step-000006 (two kept)."""
    out = tmp_path / "run"
    r = hataori(*pretrain_args(data, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-000004", "step-000006"]
    return out


def damage(checkpoint: Path) -> None:
    with open(checkpoint / "model.safetensors", "ab") as f:
        f.write(b"x")


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_all_checkpoints_damaged_refuses_to_start_over_until_told(data, run):
    for c in ckpt.list_checkpoints(run / "checkpoints"):
        damage(c)
    refused = hataori(*pretrain_args(data, run, steps=8))
    assert_one_error_line(refused, "no usable checkpoint", "sha256 does not match", "--restart")
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-000004.damaged", "step-000006.damaged"]
    assert steps_logged(run) == list(range(6))  # the log of the lost run is untouched

    again = hataori(*pretrain_args(data, run, steps=8))  # still refused: the damage is remembered
    assert_one_error_line(again, "no usable checkpoint", "step-000004.damaged")

    restarted = hataori(*pretrain_args(data, run, "--restart", steps=8))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-000004.damaged", "step-000006.damaged", "step-000006", "step-000008"] or \
        set(names) == {"step-000004.damaged", "step-000006.damaged", "step-000006", "step-000008"}
    assert steps_logged(run) == list(range(8))
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl.before-restart").read_text().splitlines()] == list(range(6))


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_kept_aside_and_training_resumes_from_the_one_before(data, run):
    damage(run / "checkpoints" / "step-000006")
    resumed = hataori(*pretrain_args(data, run, steps=10))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "step-000004 (step 4)" in resumed.stdout
    assert "warning: damaged checkpoint" in resumed.stderr and "kept as step-000006.damaged" in resumed.stderr
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {"step-000006.damaged", "step-000008", "step-000010"}  # rotation never took the damaged one
    assert steps_logged(run) == list(range(10))


@pytest.mark.slow
def test_a_checkpoint_that_verifies_but_does_not_load_falls_back(data, run):
    newest = run / "checkpoints" / "step-000006"
    state = json.loads((newest / "state.json").read_text())
    del state["loader"]
    (newest / "state.json").write_text(json.dumps(state))
    digests = json.loads((newest / "manifest.json").read_text())
    digests["state.json"] = sha256_file(newest / "state.json")  # the manifest agrees: only the content is wrong
    (newest / "manifest.json").write_text(json.dumps(digests))
    resumed = hataori(*pretrain_args(data, run, steps=8))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-000004 (step 4)" in resumed.stdout
    assert "lacks step or loader" in resumed.stderr
    assert (run / "checkpoints" / "step-000006.damaged").is_dir()


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_dropped_but_a_corrupt_one_is_an_error(data, run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a write cut short by a kill
    resumed = hataori(*pretrain_args(data, run, steps=8))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_logged(run) == list(range(8))

    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = "not json at all"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    broken = hataori(*pretrain_args(data, run, steps=10))
    assert_one_error_line(broken, "metrics.jsonl: line 3 is not a metrics record")
    assert (run / "metrics.jsonl").read_text().splitlines()[2] == "not json at all"  # left for the user to mend


@pytest.mark.slow
def test_leftovers_of_killed_runs_are_cleaned_on_start(data, run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    (run / "checkpoints" / f"step-000008.tmp-{dead.pid}").mkdir()
    (run / "checkpoints" / f"step-000008.tmp-{dead.pid}" / "model.safetensors").write_bytes(b"half")
    (run / f".metrics.jsonl.tmp-{dead.pid}").write_text("{}")
    (run / "notes.txt").write_text("mine")  # not ours: never touched
    r = hataori(*pretrain_args(data, run, steps=8))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (run / "checkpoints" / f"step-000008.tmp-{dead.pid}").exists()
    assert not (run / f".metrics.jsonl.tmp-{dead.pid}").exists()
    assert (run / "notes.txt").read_text() == "mine"


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as a full disk gives ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_names_the_file_and_the_rerun_continues(data, tmp_path):
    out = tmp_path / "run"
    ok = hataori(*pretrain_args(data, out, steps=2))
    assert ok.returncode == 0, ok.stderr[-2000:]
    weights = (out / "checkpoints" / "step-000002" / "model.safetensors").stat().st_size
    full = hataori(*pretrain_args(data, out, steps=4), preexec_fn=_file_size_limit(weights + 4096))
    line = assert_one_error_line(full, "step-000004")
    assert "disk full" in line and "optimizer.pt" in line
    leftovers = [p.name for p in (out / "checkpoints").iterdir()]
    assert leftovers == ["step-000002"], leftovers  # no half checkpoint, no temp directory
    again = hataori(*pretrain_args(data, out, steps=4))
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-000002", "step-000004"]
    assert steps_logged(out) == list(range(4))


@pytest.mark.slow
def test_a_second_trainer_waits_for_the_first(data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from pathlib import Path; from model.files import exclusive\n"
                               f"with exclusive(Path({str(out)!r}), 'test'):\n"
                               "    print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    second = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *pretrain_args(data, out, steps=2)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = second.stderr.readline()  # blocks until the second trainer says why it waits
    assert line.strip() == f"waiting for {out}: the run directory is in use by pid {holder.pid}"
    assert second.poll() is None and not (out / "checkpoints").exists()  # it waits: nothing written
    holder.stdin.close()  # the first one finishes
    holder.wait()
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    assert "trained to step 2" in stdout


def test_a_checkpoint_named_directly_is_verified(data, tmp_path):
    out = tmp_path / "run"
    assert hataori(*pretrain_args(data, out, steps=2)).returncode == 0
    step = out / "checkpoints" / "step-000002"
    damage(step)
    r = hataori("generate", "--checkpoint", step, "the fox", "--max-new-tokens", "3")
    assert_one_error_line(r, "model.safetensors", "sha256 does not match")
    (step / "manifest.json").unlink()
    r = hataori("generate", "--checkpoint", step, "the fox", "--max-new-tokens", "3")
    assert_one_error_line(r, "no manifest.json")


def test_model_sizes_beyond_the_machine_are_refused_before_allocating(data, tmp_path):
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024,
                                                 "n_layer": 4000, "n_head": 16, "n_embd": 16384}))
    (huge / "model.safetensors").write_bytes(b"\0" * 16)
    (huge / "tokenizer.json").write_text("{}")
    r = hataori("generate", "--checkpoint", huge, "hi")
    assert_one_error_line(r, "config.json", "parameters", "GiB")

    r = hataori(*pretrain_args(data, tmp_path / "run", "--set", "model.n_layer=3000", "--set", "model.n_embd=16384",
                               "--set", "model.n_head=16", "--set", "model.context_length=64"))
    assert_one_error_line(r, "parameters", "training it needs about")


@pytest.mark.parametrize("config, field", [
    ({"model_type": "gpt2", "vocab_size": 300, "n_positions": 64, "n_layer": 2, "n_head": 2}, "n_embd"),
    ({"model_type": "gpt2", "vocab_size": "many", "n_positions": 64, "n_layer": 2, "n_head": 2, "n_embd": 64}, "vocab_size"),
    ({"model_type": "llama"}, "model_type"),
])
def test_a_transformers_config_missing_a_field_names_it(tmp_path, config, field):
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "tokenizer.json").write_text("{}")
    r = hataori("generate", "--checkpoint", tmp_path, "hi")
    assert_one_error_line(r, "config.json", field)


def test_damaged_data_stops_training_before_the_first_step(tmp_path):
    data = tiny_dataset(tmp_path / "d")
    manifest = json.loads((data / "manifest.json").read_text())
    shard = data / manifest["splits"]["train"]["shards"][1]["file"]
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0x10
    shard.write_bytes(bytes(raw))
    r = hataori(*pretrain_args(data, tmp_path / "run", steps=2))
    assert_one_error_line(r, shard.name, "sha256 does not match the manifest")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_resuming_with_another_model_shape_is_refused_not_mistaken_for_damage(data, run):
    r = hataori(*pretrain_args(data, run, "--set", "model.n_layer=3", steps=8))
    assert_one_error_line(r, "holds checkpoints of another model", "n_layer 2 -> 3", "--restart")
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-000004", "step-000006"]
    assert not list((run / "checkpoints").glob("*.damaged"))


def test_a_diverging_run_stops_instead_of_saving_nan(data, tmp_path):
    r = hataori(*pretrain_args(data, tmp_path / "run", "--set", "lr=1e30", "--set", "warmup_steps=0",
                               "--set", "grad_clip=0", steps=6))
    assert_one_error_line(r, "training diverged", "lower lr")
    assert not ckpt.list_checkpoints(tmp_path / "run" / "checkpoints") or all(
        "nan" not in (c / "state.json").read_text().lower() for c in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints"))


@pytest.mark.parametrize("device, message", [("cuda", "this machine has no CUDA device"), ("gpu", "not a device")])
def test_a_device_that_is_not_here_is_named(data, tmp_path, device, message):
    import torch

    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    r = hataori(*[a if a != "cpu" else device for a in pretrain_args(data, tmp_path / "run", steps=2)])
    assert_one_error_line(r, f"--device {device}" if device == "cuda" else f"--device '{device}'", message)
