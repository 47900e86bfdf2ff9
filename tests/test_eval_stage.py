"""The eval stage in the pipeline: it scores the pretrained and the fine-tuned model, is cached like
every stage, is rebuilt (with the report, nothing upstream) when a task file changes, keeps a
history per config name, and says whether the run improved or regressed, in the report and at the
end of `hataori run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.eval_history import append_history, history_path, read_history
from pipeline.runner import Runner, active_stages, preflight

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

STORY = "The cat sat by the sea and the dog ran up the hill. The bird sang in the old tree all day long.\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-stage")
    (root / "corpus.txt").write_text("\n\n".join(f"{STORY} Part {i}." for i in range(160)), encoding="utf-8")
    records = [{"instruction": f"Name animal {i}.", "input": "", "output": "The cat."} for i in range(24)]
    (root / "instructions.json").write_text(json.dumps(records), encoding="utf-8")
    rows = [{"text": f"The {a} sat by the", "choices": ["sea.", "hill.", "tree."], "label": i % 3}
            for i, a in enumerate(["cat", "dog", "bird"] * 4)]
    (root / "tasks").mkdir()
    (root / "tasks" / "animals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "tasks" / "animals.yaml").write_text(
        "task: animals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: animals.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{text}}\"\ndoc_to_choice: choices\ndoc_to_target: label\n",
        encoding="utf-8")
    (root / "pipe.toml").write_text(f"""
name = "evaltest"
artifacts = "{root / 'artifacts'}"
[corpus]
[[corpus.sources]]
url = "{root / 'corpus.txt'}"
doc_split = "blank_line"
[tokenizer]
vocab_size = 300
[dataset]
shard_tokens = 4000
val_fraction = 0.1
[pretrain]
preset = "tiny"
max_steps = 4
batch_size = 4
context_length = 32
checkpoint_interval = 4
eval_interval = 4
eval_batches = 1
sample_tokens = 0
device = "cpu"
[finetune]
task = "instruct"
data = "{root / 'instructions.json'}"
max_steps = 2
batch_size = 4
eval_interval = 2
checkpoint_interval = 2
eval_limit = 1
max_new_tokens = 2
device = "cpu"
[eval]
tasks = ["{root / 'tasks' / 'animals.yaml'}"]
limit = 9
batch_size = 4
device = "cpu"
""", encoding="utf-8")
    return root


def run_all(root: Path, force: str | None = None) -> tuple[Runner, dict[str, bool]]:
    cfg = load_config(root / "pipe.toml")
    runner = Runner(cfg, force=force, progress=False)
    with runner.store.lock():
        for stage in active_stages(cfg):
            runner.run_stage(stage)
    return runner, dict(runner.cached)


def test_eval_stage_builds_caches_rebuilds_and_compares(project):
    runner, cached = run_all(project)
    assert active_stages(runner.cfg)[-2:] == ["eval", "report"] and not any(cached.values())
    out = runner.path("eval")
    for label in ("pretrain", "finetune"):
        results = json.loads((out / label / "results.json").read_text())
        assert results["tasks"]["animals"]["n"] == 9 and results["bpb"]["validation"]["bytes"] > 0
        assert len((out / label / "results.items.jsonl").read_text().splitlines()) == 9 + results["bpb"]["validation"]["documents"]
    stats = runner.manifests["eval"]["stats"]
    assert stats["verdict"] == "first run" and stats["models"] == "pretrain, finetune"
    report = (runner.path("report") / "report.md").read_text(encoding="utf-8")
    assert "## Evaluation" in report and "| animals acc (n=9 shots=0) | **" in report and "validation bits_per_byte" in report
    assert len(read_history(project / "artifacts", "evaltest")) == 1

    # A rerun is all cached and adds nothing to the history.
    _, cached = run_all(project)
    assert all(cached.values())
    assert len(read_history(project / "artifacts", "evaltest")) == 1

    # A task's data changes: eval and the report are rebuilt, nothing upstream; the run is compared with the last.
    data = project / "tasks" / "animals.jsonl"
    data.write_text(data.read_text().replace('"label": 0', '"label": 1'), encoding="utf-8")
    runner, cached = run_all(project)
    assert {s for s, c in cached.items() if not c} == {"eval", "report"}
    stats = runner.manifests["eval"]["stats"]
    assert stats["verdict"] in ("improved", "regressed", "mixed", "unchanged") and "vs the run of" in stats["change"]
    assert len(read_history(project / "artifacts", "evaltest")) == 2
    report = (runner.path("report") / "report.md").read_text(encoding="utf-8")
    first_at = read_history(project / "artifacts", "evaltest")[0]["at"]
    assert f"| pretrain | this run | {first_at} |" in report


def test_history_comparison_says_improved_or_regressed(project):
    """A previous run with impossible figures on the same items: this run improved on all of them,
    then (the other way round) regressed."""
    runner, _ = run_all(project)
    current = read_history(project / "artifacts", "evaltest")[-1]["models"]

    def shifted(sign: float) -> dict:
        return {label: {k: [v + sign * (-1 if "bits_per_byte" in k else 1) * 5, basis] for k, (v, basis) in figs.items()}
                for label, figs in current.items()}

    for previous, expected in ((shifted(-1), "improved"), (shifted(+1), "regressed")):
        append_history(project / "artifacts", "evaltest", {"id": "x", "at": "earlier", "models": previous}, keep=30)
        runner, cached = run_all(project, force="eval")
        stats = runner.manifests["eval"]["stats"]
        assert stats["verdict"] == expected and stats["change"].startswith(expected + ": ")
        assert "pretrain: animals acc" in stats["change"] and "finetune: validation bits_per_byte" in stats["change"]
        assert not cached["eval"] and not cached["report"] and cached["pretrain"]
        assert f"**{expected}**" in (runner.path("report") / "report.md").read_text(encoding="utf-8")


def test_history_keeps_the_last_runs_and_skips_damaged_lines(tmp_path):
    for i in range(5):
        append_history(tmp_path, "a/b c", {"id": str(i), "at": str(i), "models": {}}, keep=3)
    path = history_path(tmp_path, "a/b c")
    assert path.parent == tmp_path / "history" and path.name == "a_b_c.jsonl"
    with open(path, "ab") as f:
        f.write(b"not json\n\xff\xfe\n[1, 2]\n")
    assert [e["id"] for e in read_history(tmp_path, "a/b c")] == ["2", "3", "4"]


def test_a_broken_task_file_stops_the_run_before_any_stage(project, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((project / "tasks" / "animals.yaml").read_text().replace("doc_to_target: label", "doc_to_target: lable")
                   .replace("animals.jsonl", str(project / "tasks" / "animals.jsonl")), encoding="utf-8")
    cfg = load_config(project / "pipe.toml", [f'eval.tasks=["{bad}"]'])
    with pytest.raises(ValueError, match=r"bad.yaml: .*animals.jsonl record 1: doc_to_target: 'lable' is not one of the 3 choices \(and not a field"):
        preflight(cfg)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(project / "pipe.toml"), "--set",
                        f'eval.tasks=["{bad}"]'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "doc_to_target: 'lable' is not one of" in r.stderr


def test_hataori_run_ends_with_the_comparison(project):
    """The whole flow through Prefect, all cached by now: its last lines say how the run compares."""
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect")}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(project / "pipe.toml"), "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tail = r.stdout.strip().splitlines()[-1]
    assert tail.startswith("eval: regressed: ") and tail.endswith("(cached: same models as before)"), tail
    assert any(line.startswith("eval       cached") for line in r.stdout.splitlines())
