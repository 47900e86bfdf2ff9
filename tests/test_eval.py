"""hataori eval without lm-eval in the loop (tests/test_eval_lm_eval.py holds it to lm-eval): the
prefix-reusing scorer against a plain forward pass, lm-eval's rolling windows, lm-eval's request
tokenization rules, the task-file subset and its errors, the CLI and its one-line errors."""

from __future__ import annotations

import json
import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from model import checkpoint as ckpt
from model.config import GPTConfig
from model.evaluation.harness import mc_metrics
from model.evaluation.requests import Request, encode_requests, split_trailing_space
from model.evaluation.results import compare, describe_change, flatten, items_path, verdict
from model.evaluation.rolling import TextError, read_text, rolling_windows
from model.evaluation.scoring import Scorer
from model.evaluation.tasks import TaskError, load_task
from model.gpt import GPT
from pipeline.cli import app
from tokenizer_rs import Tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [f"The {a} ran {b} times around the {c}.\n" for a in ("cat", "dog", "fox") for b in range(5) for c in ("house", "tree")]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(iter(TEXTS * 3), 300, show_progress=False)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(3)
    return GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=24)).eval()


def naive(model: GPT, context: list[int], continuation: list[int]) -> float:
    """lm-eval's definition, computed the plain way: one forward over the left-truncated window."""
    window = model.config.context_length
    inp = (context + continuation)[-(window + 1):][:-1]
    with torch.no_grad():
        logits, _ = model(torch.tensor([inp]))
    logp = F.log_softmax(logits[0].float(), dim=-1)
    n = len(continuation)
    return float(sum(logp[len(inp) - n + i, t] for i, t in enumerate(continuation)))


def random_requests(rng: random.Random, vocab: int, n: int, max_context: int) -> list[Request]:
    out = []
    for _ in range(n):
        context = [rng.randrange(vocab) for _ in range(rng.choice([1, 3, 3, 7, max_context]))]
        conts = [[rng.randrange(vocab) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 5))]
        out.append(Request([context] * len(conts), conts))
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_prefix_reuse_equals_one_forward_per_choice(model, batch_size):
    """Shared contexts (KV cache copied per choice), grouped by context length, ragged choices, and
    items too long for the window (left-truncated): every log-likelihood equals the plain computation."""
    rng = random.Random(batch_size)
    requests = random_requests(rng, model.config.vocab_size, 30, max_context=22)
    scored = Scorer(model, batch_size).score(requests)
    assert any(s.truncated for s in scored) and not all(s.truncated for s in scored)
    for request, s in zip(requests, scored):
        expected = [naive(model, c, k) for c, k in zip(request.contexts, request.continuations)]
        assert s.loglikelihoods == pytest.approx(expected, abs=1e-4)
        assert s.truncated == any(len(c) + len(k) > 25 for c, k in zip(request.contexts, request.continuations))


def test_greedy_flags_match_argmax(model):
    context = [5, 9, 2]
    with torch.no_grad():
        logits, _ = model(torch.tensor([context]))
    best = int(logits[0, -1].argmax())
    second = int(logits[0, -1].argsort()[-2])
    scored = Scorer(model, 8).score([Request([context] * 2, [[best], [second]])])[0]
    assert scored.greedy == [True, False]


def test_cuda_runs_under_bf16_autocast(model):
    scorer = Scorer(model, 4)
    scorer.device = torch.device("cuda")  # the rule only: no GPU in CI
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast"
        cast = scorer.autocast()
    assert isinstance(cast, torch.autocast) and cast.fast_dtype == torch.bfloat16 and cast.device == "cuda"
    scorer.device = torch.device("cpu")
    assert not isinstance(scorer.autocast(), torch.autocast)  # fp32 on the CPU, where lm-eval is matched


@pytest.mark.parametrize("length,window", [(1, 4), (4, 4), (5, 4), (23, 4), (100, 16), (16, 16), (17, 16)])
def test_rolling_windows_are_lm_evals(length, window):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(100, 100 + length))
    theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, prefix_token=7, max_seq_len=window, context_len=1)]
    ours = rolling_windows(tokens, 7, window)
    assert ours == [(list(c), list(k)) for c, k in theirs]
    assert [t for _, k in ours for t in k] == tokens  # every token predicted exactly once
    assert all(len(c) + len(k) <= window + 1 for c, k in ours)


def test_requests_move_trailing_space_and_split_the_whole_encoding(tok):
    assert split_trailing_space("Answer: \n", "yes") == ("Answer:", " \nyes")
    eot = tok.token_to_id("<|endoftext|>")
    [r] = encode_requests(tok, [("The cat ran ", ["3 times", "4 times"])], eot)
    assert r.shared and r.contexts[0] == tok.encode("The cat ran")
    for k, cont in zip(r.continuations, [" 3 times", " 4 times"]):
        assert k == tok.encode("The cat ran" + cont)[len(r.contexts[0]):]
    [empty] = encode_requests(tok, [("", ["The dog"])], eot)
    assert empty.contexts == [[eot]] and empty.continuations == [tok.encode("The dog")]


def test_acc_norm_divides_by_characters_and_first_maximum_wins():
    # "b" is more likely in total; per character "a much longer choice" wins.
    m = mc_metrics([-20.0, -3.0, -3.0], ["a much longer choice", "b", "c"], 0)
    assert (m["pred"], m["pred_norm"], m["acc"], m["acc_norm"]) == (1, 0, 0.0, 1.0)


# ------------------------------------------------------------------------------ task files


def write_task(tmp_path, yaml_text: str, rows=None, name="t.yaml", data="data.jsonl"):
    if rows is not None:
        (tmp_path / data).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / name).write_text(yaml_text, encoding="utf-8")
    return tmp_path / name


BASE = ("task: toy\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"Q: {{q}}\"\ndoc_to_choice: choices\ndoc_to_target: label\n")
ROWS = [{"q": f"question {i}", "choices": ["yes", "no", "maybe"], "label": i % 3} for i in range(10)]


def test_task_renders_contexts_and_few_shot_examples_deterministically(tmp_path):
    path = write_task(tmp_path, BASE + "fewshot_split: test\ndescription: \"Answer.\\n\\n\"\n", ROWS)
    task = load_task(path)
    items = task.items(limit=4, num_fewshot=2)
    assert [it.doc_id for it in items] == [0, 1, 2, 3] and items[0].choices == ["yes", "no", "maybe"]
    for it in items:
        assert it.context.startswith("Answer.\n\nQ: question ") and it.context.endswith(f"Q: question {it.doc_id}")
        assert it.context.count("\n\n") == 3 and f"Q: question {it.doc_id} " not in it.context  # never its own example
    assert [it.context for it in task.items(limit=4, num_fewshot=2)] == [it.context for it in items]
    assert items[0].continuations(task.target_delimiter) == [" yes", " no", " maybe"]


def test_num_fewshot_follows_lm_evals_rule(tmp_path):
    task = load_task(write_task(tmp_path, BASE + "num_fewshot: 0\n", ROWS))
    assert task.effective_fewshot(None) == (0, None)
    shots, note = task.effective_fewshot(3)
    assert shots == 0 and "ignored" in note
    task = load_task(write_task(tmp_path, BASE + "num_fewshot: 2\nfewshot_split: test\n", ROWS, name="u.yaml"))
    assert task.effective_fewshot(None) == (2, None) and task.effective_fewshot(5) == (5, None)


@pytest.mark.parametrize("change,needle", [
    (lambda y: y.replace("output_type: multiple_choice", "output_type: generate_until"), "output_type"),
    (lambda y: y + "process_results: !function utils.process\n", "!function"),
    (lambda y: y + "generation_kwargs: {}\n", "generation_kwargs: not supported"),
    (lambda y: y.replace("doc_to_choice: choices\n", ""), "doc_to_choice: missing"),
    (lambda y: y.replace("dataset_path: json", "dataset_path: super_glue"), "dataset_path"),
    (lambda y: y.replace("test_split: test", "test_split: train"), "test_split: no split 'train'"),
    (lambda y: y.replace("data.jsonl", "missing.jsonl"), "dataset_kwargs.data_files.test: no such file"),
    (lambda y: y + "metric_list:\n  - metric: f1\n", "metric_list[0].metric"),
    (lambda y: y + "fewshot_config:\n  samples: []\n", "fewshot_config.samples"),
    (lambda y: y.replace('"Q: {{q}}"', '"Q: {{q}"'), "doc_to_text: not a valid Jinja2 template"),
    (lambda y: "- just a list\n", "YAML mapping"),
])
def test_unsupported_or_missing_keys_are_named(tmp_path, change, needle):
    path = write_task(tmp_path, change(BASE), ROWS)
    with pytest.raises(TaskError) as e:
        load_task(path).items()
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("rows,yaml_change,needle", [
    (ROWS[:3] + [{"choices": ["a", "b"], "label": 0}], None, "data.jsonl record 4: doc_to_text: 'q' is undefined"),
    (ROWS[:5] + [{"q": "x", "choices": ["a", "b"], "label": 2}], None,
     "data.jsonl record 6: doc_to_target: label 2 is out of range (the record has 2 choices, 0-1)"),
    (ROWS[:2] + [{"q": "x", "choices": "a b", "label": 0}], None, "record 3: doc_to_choice: expected a non-empty list"),
    (ROWS[:2] + [{"q": "x", "choices": ["a"], "label": 0, "answer": "zzz"}],
     lambda y: y.replace("doc_to_target: label", "doc_to_target: \"{{answer}}\""), "record 1: doc_to_target: 'answer' is undefined"),
    (ROWS[:1] + [{"q": "x", "choices": ["a"], "label": 0}],
     lambda y: y.replace('"Q: {{q}}"', '"{{q | regex_replace(\'(\', \'\')}}"'), "record 1: doc_to_text: error"),
])
def test_bad_records_name_file_record_and_key(tmp_path, rows, yaml_change, needle):
    path = write_task(tmp_path, (yaml_change or (lambda y: y))(BASE), rows)
    with pytest.raises(TaskError) as e:
        load_task(path).items()
    assert needle in str(e.value), str(e.value)


def test_empty_and_non_utf8_data_files_are_refused(tmp_path):
    path = write_task(tmp_path, BASE, [])
    with pytest.raises(TaskError, match="data.jsonl: empty data file"):
        load_task(path)
    (tmp_path / "data.jsonl").write_bytes(b'{"q": "caf\xe9"}\n')
    with pytest.raises(TaskError, match=r"data.jsonl: not UTF-8 text \(byte offset 10:"):
        load_task(path)
    (tmp_path / "data.jsonl").write_text('{"q": 1}\n{"q": \n', encoding="utf-8")
    with pytest.raises(TaskError, match="data.jsonl: line 2: not valid JSON"):
        load_task(path)


def test_text_files_are_read_exactly_or_refused(tmp_path):
    (tmp_path / "a.txt").write_bytes("line one\r\nkanji 漢字\n".encode())
    assert read_text(tmp_path / "a.txt") == "line one\r\nkanji 漢字\n"
    (tmp_path / "b.txt").write_bytes(b"ok then \xff\xfe")
    with pytest.raises(TextError, match=r"b.txt: not UTF-8 text \(byte offset 8"):
        read_text(tmp_path / "b.txt")
    (tmp_path / "c.txt").write_bytes(b"")
    with pytest.raises(TextError, match="c.txt: empty file"):
        read_text(tmp_path / "c.txt")


# ------------------------------------------------------------------------------ results and comparison


def test_comparison_knows_which_way_is_better():
    def results(acc, bpb, n=50, size=1000):
        return {"tasks": {"t": {"acc": acc, "acc_norm": 0.40, "n": n, "num_fewshot": 0}},
                "bpb": {"v.txt": {"bits_per_byte": bpb, "bytes": size}}}

    before, better, worse = results(0.30, 2.0), results(0.35, 1.9), results(0.35, 2.1)
    rows = compare(flatten(before), flatten(better))
    assert verdict(rows) == "improved" and {r["figure"]: r["better"] for r in rows} == {
        "t acc": True, "t acc_norm": None, "v.txt bits_per_byte": True}
    assert verdict(compare(flatten(better), flatten(before))) == "regressed"
    assert verdict(compare(flatten(before), flatten(worse))) == "mixed"
    assert verdict(compare(flatten(before), flatten(before))) == "unchanged"
    assert describe_change(rows).startswith("improved: t acc 0.3000 -> 0.3500 (+0.0500); v.txt bits_per_byte")
    # Figures measured on other items (another limit, other text) are not compared.
    assert compare(flatten(before), flatten(results(0.9, 1.0, n=60, size=999))) == []


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tok, model):
    """A run directory in hataori's own checkpoint format."""
    root = tmp_path_factory.mktemp("eval-run")
    tok.save(str(root / "tokenizer.json"))
    ckpt.save_checkpoint(root / "run" / "checkpoints", 1, model, torch.optim.AdamW(model.parameters()), {},
                         root / "tokenizer.json", keep=1)
    return root / "run"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.stderr + result.stdout, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_cli_writes_results_items_and_a_table(tmp_path, run_dir):
    task = write_task(tmp_path, BASE, ROWS)
    (tmp_path / "valid.txt").write_text("The fox ran 3 times around the tree.\n" * 9, encoding="utf-8")
    out = tmp_path / "res" / "results.json"
    r = cli("eval", "--checkpoint", run_dir, "--task", task, "--bpb", tmp_path / "valid.txt", "--limit", 6,
            "--batch-size", 4, "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    results = json.loads(out.read_text())
    assert results["model"] == str(run_dir)
    t = results["tasks"]["toy"]
    assert t["n"] == 6 and t["num_fewshot"] == 0 and 0 <= t["acc"] <= 1 and 0 <= t["acc_norm"] <= 1
    b = results["bpb"]["valid.txt"]
    assert b["bytes"] == 37 * 9 and b["tokens"] > 0
    assert b["bits_per_byte"] == pytest.approx(-b["loglikelihood"] / math.log(2) / b["bytes"])
    assert b["bits_per_char"] == pytest.approx(b["bits_per_byte"])  # ASCII: one byte per character
    rows = [json.loads(line) for line in items_path(out).read_text().splitlines()]
    assert [r["doc_id"] for r in rows if "task" in r] == list(range(6))
    assert all(len(r["loglikelihoods"]) == 3 and r["gold"] == ROWS[r["doc_id"]]["label"] for r in rows if "task" in r)
    assert sum(r["acc"] for r in rows if "task" in r) / 6 == t["acc"]
    table = r.stdout.split("\nresults:")[0]
    assert "toy" in table and "acc_norm" in table and "valid.txt" in table and "bits/byte" in table
    assert f"results: {out}" in r.stdout


def test_cli_errors_are_one_line(tmp_path, run_dir):
    assert_one_error_line(cli("eval", "--checkpoint", run_dir), "nothing to evaluate")
    bad = write_task(tmp_path, BASE + "repeats: 3\n", ROWS)
    assert_one_error_line(cli("eval", "--checkpoint", run_dir, "--task", bad), str(bad), "repeats: not supported")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert_one_error_line(cli("eval", "--checkpoint", run_dir, "--bpb", tmp_path / "latin1.txt"),
                          "latin1.txt: not UTF-8 text (byte offset 3")
    good = write_task(tmp_path, BASE, ROWS, name="good.yaml")
    assert_one_error_line(cli("eval", "--checkpoint", tmp_path, "--task", good), "not a run directory")


def test_a_classifier_is_not_evaluated(tmp_path, tok):
    from model.classifier import GPTClassifier

    torch.manual_seed(0)
    classifier = GPTClassifier(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=24, labels=["a", "b"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    ckpt.save_checkpoint(tmp_path / "clf" / "checkpoints", 1, classifier, torch.optim.AdamW(classifier.parameters()), {},
                         tmp_path / "tokenizer.json", keep=1)
    task = write_task(tmp_path, BASE, ROWS)
    assert_one_error_line(cli("eval", "--checkpoint", tmp_path / "clf", "--task", task),
                          "a classifier (labels a, b), not a language model")


# ------------------------------------------------------------------------------ the shipped tasks


def test_shipped_tasks_load_and_render():
    from pathlib import Path

    evals = Path(__file__).resolve().parents[1] / "evals"
    jcqa = load_task(evals / "jcommonsenseqa" / "jcommonsenseqa.yaml")
    assert (jcqa.name, len(jcqa.splits["validation"]), len(jcqa.splits["train"])) == ("jcommonsenseqa", 1119, 1000)
    [item] = jcqa.items(limit=1, num_fewshot=0)
    assert item.context == "質問：電子機器で使用される最も主要な電子回路基板の事をなんと言う？\n答え："
    assert item.choices[item.gold] == "マザーボード" and item.continuations(jcqa.target_delimiter)[2] == "マザーボード"
    assert all(len(it.choices) == 5 for it in jcqa.items(num_fewshot=3))
    lines = load_task(evals / "shakespeare" / "shakespeare_next_line.yaml")
    items = lines.items(num_fewshot=1)
    assert len(items) == 1000 and all(len(it.choices) == 4 for it in items)
    assert items[0].context.endswith("\n\nFirst Citizen:\nWe are accounted poor citizens, the patricians good.\n"
                                     "What authority surfeits on would relieve us: if they")  # after one example
    assert lines.target_delimiter == "\n" and lines.exclude_eval_doc


def test_shipped_data_is_what_the_readme_says(data_dir):
    import subprocess
    import sys
    from pathlib import Path

    evals = Path(__file__).resolve().parents[1] / "evals"
    assert (evals / "jcommonsenseqa" / "valid-v1.3.json").read_bytes() == (data_dir / "jglue" / "jcommonsenseqa-v1.3-valid.json").read_bytes()
    train = (data_dir / "jglue" / "jcommonsenseqa-v1.3-train.json").read_bytes()
    assert (evals / "jcommonsenseqa" / "train-v1.3-first1000.json").read_bytes() == b"".join(train.splitlines(keepends=True)[:1000])
    r = subprocess.run([sys.executable, str(evals / "shakespeare" / "build.py"), str(data_dir / "tinyshakespeare.txt"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
