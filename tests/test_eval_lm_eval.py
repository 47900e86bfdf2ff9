"""hataori eval against lm-evaluation-harness itself (lm-eval from PyPI, `--model hf`, run offline
on an exported tiny model): the same task files give the same contexts, the same acc and acc_norm,
per-item log-likelihoods within 1e-4, and the same bits per byte as its rolling log-likelihood.

One lm_eval run scores five tasks: zero-shot (trailing white space moved into the continuation,
an empty context), few-shot from a training split with a description template and left-truncation
past the window, few-shot drawn from the scored split itself (the item left out), the same with
the first_n sampler, a description field and choices listed in the YAML, and a rolling text task."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from model.config import GPTConfig
from model.evaluation.tasks import load_task
from model.gpt import GPT
from model.hf import export_hf_gpt2
from pipeline.cli import app
from tokenizer_rs import Tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

WINDOW = 48
ANIMALS = ["cat", "dog", "horse", "small bird", "old grey wolf", "fox"]
PLACES = ["by the sea", "in the hills", "under the old bridge", "near the town", "on a farm"]
JA = ["猫", "犬", "馬", "小さな鳥", "年老いた狼"]


def corpus() -> list[str]:
    lines = []
    for i in range(120):
        a, p = ANIMALS[i % len(ANIMALS)], PLACES[(i * 7) % len(PLACES)]
        lines.append(f"The {a} lived {p}. Where did the {a} live? It lived {p}.\n")
        lines.append(f"{JA[i % len(JA)]}はどこに住んでいますか？答え：{p}です。\n")
    return lines


def train_tiny(tok: Tokenizer, steps: int = 40) -> GPT:
    """A few optimizer steps, so that log-likelihoods differ between choices."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=WINDOW))
    ids = torch.tensor([t for line in corpus() for t in tok.encode(line)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - WINDOW - 1, (8,), generator=gen)
        x = torch.stack([ids[s:s + WINDOW] for s in starts])
        y = torch.stack([ids[s + 1:s + WINDOW + 1] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_tasks(root: Path) -> list[str]:
    zero = []
    for i in range(14):
        a = ANIMALS[i % len(ANIMALS)]
        question = f"Where did the {a} live?" + [" ", "\n", "", "  "][i % 4]  # trailing white space moves
        zero.append({"question": question, "choices": [f"It lived {p}." for p in PLACES[:4]], "label": i % 4})
    zero.append({"question": "", "choices": ["The cat.", "The dog."], "label": 1})  # empty context: prefix token
    write_jsonl(root / "zero.jsonl", zero)
    (root / "zero.yaml").write_text("task: t_zero\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                    "    validation: zero.jsonl\nvalidation_split: validation\noutput_type: multiple_choice\n"
                                    "doc_to_text: question\ndoc_to_choice: choices\ndoc_to_target: label\n", encoding="utf-8")

    ja = [{"q": f"{JA[i % 5]}はどこに住んでいますか？", "c0": PLACES[i % 5], "c1": PLACES[(i + 1) % 5],
           "c2": PLACES[(i + 2) % 5], "answer": PLACES[(i + i // 3) % 5 if (i + i // 3) % 5 < 3 else i % 5]}
          for i in range(30)]
    for r in ja:
        if r["answer"] not in (r["c0"], r["c1"], r["c2"]):
            r["answer"] = r["c1"]
    write_jsonl(root / "ja_train.jsonl", ja[:16])
    write_jsonl(root / "ja_valid.jsonl", ja[16:])
    (root / "fewshot.yaml").write_text(
        "task: t_fewshot\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    train: ja_train.jsonl\n"
        "    validation: ja_valid.jsonl\ntraining_split: train\nvalidation_split: validation\n"
        "output_type: multiple_choice\ndescription: \"{{q[0]}}の質問。\\n\\n\"\n"
        "doc_to_text: \"質問：{{q}}\\n答え：\"\ntarget_delimiter: \"\"\n"
        "doc_to_choice: \"{{[c0, c1, c2]}}\"\ndoc_to_target: \"{{answer}}\"\nnum_fewshot: 3\n", encoding="utf-8")

    same = [{"text": f"The {ANIMALS[i % 6]} went", "options": ["home.", "to the sea.", "up the hill slowly."],
             "gold": str(i % 3)} for i in range(12)]
    write_jsonl(root / "same.jsonl", same)
    (root / "same.yaml").write_text(
        "task: t_same\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: same.jsonl\ntest_split: test\n"
        "fewshot_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{text}}\"\ndoc_to_choice: options\n"
        "doc_to_target: \"{{gold}}\"\nfewshot_delimiter: \" | \"\nnum_fewshot: 2\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    (root / "firstn.yaml").write_text(
        "task: t_firstn\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: same.jsonl\ntest_split: test\n"
        "fewshot_split: test\nfewshot_config:\n  sampler: first_n\noutput_type: multiple_choice\ndescription: text\n"
        "doc_to_text: \"Q: {{text}}?\"\ndoc_to_choice: [\"yes\", \"no\", \"perhaps so\"]\ndoc_to_target: \"{{gold}}\"\n"
        "num_fewshot: 2\n", encoding="utf-8")
    return ["zero.yaml", "fewshot.yaml", "same.yaml", "firstn.yaml"]


TEXTS = {
    "short.txt": "The cat lived by the sea.\n",
    "medium.txt": "".join(corpus()[:6]),
    "long.txt": "".join(corpus()[10:40]) + "No newline at the end",
}


def write_text_task(root: Path) -> None:
    write_jsonl(root / "texts.jsonl", [{"text": t} for t in TEXTS.values()])
    for name, text in TEXTS.items():
        (root / name).write_bytes(text.encode("utf-8"))
    (root / "text.yaml").write_text(
        "task: t_text\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: texts.jsonl\ntest_split: test\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: text\n"
        "metric_list:\n  - metric: bits_per_byte\n", encoding="utf-8")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The exported model; lm_eval's results and samples; ours."""
    root = tmp_path_factory.mktemp("lm_eval")
    tok = Tokenizer.train(iter(corpus()), 420, show_progress=False)
    tok.save(str(root / "tokenizer.json"))
    export_hf_gpt2(train_tiny(tok), root / "export", root / "tokenizer.json")
    tasks = write_tasks(root)
    write_text_task(root)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf",
           "--model_args", f"pretrained={root / 'export'},dtype=float32", "--tasks", "t_zero,t_fewshot,t_same,t_firstn,t_text",
           "--include_path", str(root), "--device", "cpu", "--batch_size", "8", "--output_path", str(root / "lm_eval"),
           "--log_samples"]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(Path(glob.glob(str(root / "lm_eval" / "*" / "results_*.json"))[0]).read_text())["results"]
    samples = {}
    for name in ("t_zero", "t_fewshot", "t_same", "t_firstn", "t_text"):
        path = glob.glob(str(root / "lm_eval" / "*" / f"samples_{name}_*.jsonl"))[0]
        samples[name] = sorted((json.loads(line) for line in open(path, encoding="utf-8")), key=lambda s: s["doc_id"])

    out = root / "ours" / "results.json"
    args = ["eval", "--checkpoint", root / "export", "--batch-size", "5", "--out", out, "--no-progress"]
    for t in tasks:
        args += ["--task", root / t]
    for name in TEXTS:
        args += ["--bpb", root / name]
    ours = CliRunner().invoke(app, [str(a) for a in args])
    assert ours.exit_code == 0, (ours.stdout, ours.stderr, ours.exception)
    items = [json.loads(line) for line in (root / "ours" / "results.items.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"root": root, "results": results, "samples": samples, "ours": json.loads(out.read_text()), "items": items,
            "stdout": ours.stdout, "stderr": ours.stderr}


MC_TASKS = {"t_zero": "zero.yaml", "t_fewshot": "fewshot.yaml", "t_same": "same.yaml", "t_firstn": "firstn.yaml"}


@pytest.mark.parametrize("task", MC_TASKS)
def test_same_contexts_and_continuations_as_lm_eval(both, task):
    path = MC_TASKS[task]
    spec = load_task(both["root"] / path)
    items = spec.items(None, spec.effective_fewshot(None)[0])
    theirs = both["samples"][task]
    assert len(items) == len(theirs)
    for item, sample in zip(items, theirs):
        args = [sample["arguments"][f"gen_args_{j}"] for j in range(len(item.choices))]
        assert [(a["arg_0"], a["arg_1"]) for a in args] == [(item.context, c) for c in item.continuations(spec.target_delimiter)]
        assert item.gold == (int(sample["target"]) if sample["target"].isdigit() else item.choices.index(sample["target"]))


@pytest.mark.parametrize("task", MC_TASKS)
def test_same_accuracy_and_loglikelihoods_as_lm_eval(both, task):
    ours = both["ours"]["tasks"][task]
    theirs = both["results"][task]
    assert ours["n"] == theirs["sample_len"] == len(both["samples"][task])
    assert ours["acc"] == pytest.approx(theirs["acc,none"], abs=1e-12)
    assert ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"], abs=1e-12)
    assert ours["acc_stderr"] == pytest.approx(theirs["acc_stderr,none"], abs=1e-9)
    rows = [r for r in both["items"] if r.get("task") == task]
    assert [r["doc_id"] for r in rows] == [s["doc_id"] for s in both["samples"][task]]
    for row, sample in zip(rows, both["samples"][task]):
        expected = [float(ll) for ll, _ in sample["filtered_resps"]]
        assert row["loglikelihoods"] == pytest.approx(expected, abs=1e-4), row["doc_id"]
        assert row["is_greedy"] == [flag == "True" for _, flag in sample["filtered_resps"]]
        assert (row["acc"], row["acc_norm"]) == (sample["acc"], sample["acc_norm"])
    # The model was trained a little: its choices are told apart, so agreement is not a coincidence of ties,
    # and no two choices are so close that float noise (1e-6) could decide acc or acc_norm.
    spreads = [max(r["loglikelihoods"]) - min(r["loglikelihoods"]) for r in rows]
    assert sorted(spreads)[len(spreads) // 2] > 0.5
    spec = load_task(both["root"] / MC_TASKS[task])
    for row, item in zip(rows, spec.items(None, spec.effective_fewshot(None)[0])):
        for scores in (row["loglikelihoods"], [ll / len(c) for ll, c in zip(row["loglikelihoods"], item.choices)]):
            top = sorted(scores, reverse=True)
            assert len(top) == 1 or top[0] - top[1] > 1e-4, (task, row["doc_id"], top[:2])


def test_truncation_happened_and_was_counted(both):
    """The few-shot contexts overflow the 48-token window: both tools truncate them the same way
    (the test above), and hataori says how many."""
    assert both["ours"]["tasks"]["t_fewshot"]["truncated"] > 0
    assert "t_fewshot:" in both["stderr"] and "left-truncated" in both["stderr"]
    assert both["ours"]["tasks"]["t_zero"]["truncated"] == 0


def test_same_bits_per_byte_as_lm_eval_rolling(both):
    ours = both["ours"]["bpb"]
    rows = {r["bpb"]: r for r in both["items"] if "bpb" in r}
    for name, sample in zip(TEXTS, both["samples"]["t_text"]):
        assert ours[name]["loglikelihood"] == pytest.approx(float(sample["filtered_resps"][0]), rel=1e-5, abs=1e-4)
        assert rows[name]["loglikelihood"] == ours[name]["loglikelihood"]
        assert ours[name]["bytes"] == len(TEXTS[name].encode("utf-8"))
        assert ours[name]["bits_per_byte"] == pytest.approx(
            -float(sample["filtered_resps"][0]) / math.log(2) / len(TEXTS[name].encode("utf-8")), abs=1e-4)
    total_ll = sum(o["loglikelihood"] for o in ours.values())
    total_bytes = sum(o["bytes"] for o in ours.values())
    assert -total_ll / math.log(2) / total_bytes == pytest.approx(both["results"]["t_text"]["bits_per_byte,none"], abs=1e-4)
    assert ours["long.txt"]["tokens"] > WINDOW  # several rolling windows
