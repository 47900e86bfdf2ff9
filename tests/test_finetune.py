"""Fine-tuning: records (JSON, JSONL, TSV, CSV, JCommonsenseQA), splits, the epoch sampler, the
instruction collate (end-of-text handling), templates, metrics, the classifier head and its frozen
blocks, instruction tuning end to end on a tiny model, exact resume after SIGKILL, and the CLI."""

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
from safetensors.torch import load_file
from typer.testing import CliRunner

from model import checkpoint as ckpt
from model.config import GPTConfig
from model.classifier import GPTClassifier
from model.classifier import collate as classify_collate
from model.finetune.classify import ClassifyConfig, finetune_classify
from model.finetune.common import split_records
from model.finetune.records import EpochSampler, FinetuneDataError, read_records, split_indices
from model.finetune.instruct import InstructConfig, InstructTask, collate, encode_examples, finetune_instruct, load_instructions
from model.templates import ALPACA_TEMPLATE, format_prompt
from model.finetune.metrics import classification_scores, exact_match, rouge_l
from model.generate import generate
from model.gpt import GPT
from model.hf import export_hf_gpt2
from model.loop import Distributed
from pipeline.cli import app
from tokenizer_rs import Tokenizer

INSTRUCTIONS = [
    {"instruction": "Name the color of the sky.", "input": "", "output": "The sky is blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5."},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Give the opposite word.", "input": "hot", "output": "cold"},
]
GOOD = ["good", "great", "lovely", "happy", "fine", "nice"]
BAD = ["bad", "awful", "sad", "ugly", "poor", "nasty"]


def reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choice(GOOD if label == "pos" else BAD, 2)
        out.append((label, f"the film was {words[0]} and {words[1]}"))
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tokenizer trained on the fixtures' texts (with <|endoftext|>) and a tiny base model exported
    as a transformers GPT-2 directory beside it."""
    root = tmp_path_factory.mktemp("finetune")
    texts = [format_prompt(r) + r["output"] for r in INSTRUCTIONS] * 3 + [t for _, t in reviews(40)]
    tok = Tokenizer.train(iter(texts), 400, show_progress=False)
    assert tok.token_to_id("<|endoftext|>") is not None
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=128))
    export_hf_gpt2(model, root / "base", root / "tokenizer.json")
    (root / "instructions.json").write_text(json.dumps(INSTRUCTIONS))
    (root / "reviews.tsv").write_text("label\ttext\n" + "".join(f"{lab}\t{t}\n" for lab, t in reviews(60)))
    return {"root": root, "tok": tok, "tokenizer_json": root / "tokenizer.json", "base": root / "base",
            "eot": tok.token_to_id("<|endoftext|>")}


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *needles: str) -> str:
    """Exit status 2, a single `error:` line on stderr naming every needle, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ------------------------------------------------------------------------------------------ records


def test_json_array_and_jsonl_give_the_same_records(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(INSTRUCTIONS, indent=2))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n\n" for r in INSTRUCTIONS))
    (tmp_path / "c.json").write_text("".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))  # JSON Lines in .json
    assert read_records(tmp_path / "a.json") == INSTRUCTIONS
    assert read_records(tmp_path / "b.jsonl") == INSTRUCTIONS
    assert read_records(tmp_path / "c.json") == INSTRUCTIONS
    assert load_instructions(tmp_path / "b.jsonl") == INSTRUCTIONS


def test_missing_field_names_the_record_and_field(tmp_path):
    records = [dict(r) for r in INSTRUCTIONS]
    del records[2]["output"]
    (tmp_path / "bad.json").write_text(json.dumps(records))
    with pytest.raises(FinetuneDataError, match=r"bad\.json: record 3: missing field 'output'"):
        load_instructions(tmp_path / "bad.json")
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in records[:1]) + "\n[1, 2]\n")
    with pytest.raises(FinetuneDataError, match=r"bad\.jsonl: record 2 is a list"):
        read_records(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text(json.dumps(records[0]) + "\n{oops\n")
    with pytest.raises(FinetuneDataError, match=r"broken\.jsonl: line 2: not valid JSON"):
        read_records(tmp_path / "broken.jsonl")


def test_tsv_without_header_keeps_stray_quotes(tmp_path):
    path = tmp_path / "sms.tsv"
    path.write_text('ham\tHe said "hi and left\nspam\tWIN "big" now\n\nham\tok\n')
    records = read_records(path, columns=["label", "text"])
    assert records == [{"label": "ham", "text": 'He said "hi and left'}, {"label": "spam", "text": 'WIN "big" now'},
                       {"label": "ham", "text": "ok"}]
    path.write_text("ham\tfine\nspam\ttoo\tmany\n")
    with pytest.raises(FinetuneDataError, match=r"sms\.tsv: record 2: 3 fields, expected 2 \(label, text\)"):
        read_records(path, columns=["label", "text"])


def test_csv_with_header(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('text,label\n"good, really good",pos\nbad,neg\n"two\nlines",pos\n')
    assert read_records(path) == [{"text": "good, really good", "label": "pos"}, {"text": "bad", "label": "neg"},
                                  {"text": "two\nlines", "label": "pos"}]


@pytest.mark.data
def test_sms_spam_collection_parses_all_5574_records(data_dir):
    records = read_records(data_dir / "SMSSpamCollection.tsv", columns=["label", "text"])
    assert len(records) == 5574
    assert sum(r["label"] == "spam" for r in records) == 747
    assert {r["label"] for r in records} == {"ham", "spam"}
    quoted = [r["text"] for r in records if '"' in r["text"]]
    assert quoted and all("\n" not in t and "\t" not in t for t in quoted)


def test_jcommonsenseqa_records_become_instructions(tmp_path):
    rec = {"q_id": 1, "question": "水を出すときに捻るものは？", "choice0": "蛇口", "choice1": "ハンドル",
           "choice2": "流し", "choice3": "釘", "choice4": "食器棚", "label": 0}
    (tmp_path / "q.json").write_text(json.dumps(rec, ensure_ascii=False) + "\n" + json.dumps({**rec, "label": 3}) + "\n")
    first, second = load_instructions(tmp_path / "q.json")
    assert first["output"] == "蛇口" and second["output"] == "釘"
    assert "水を出すときに捻るものは？" in first["input"] and all(c in first["input"] for c in ("蛇口", "食器棚"))
    (tmp_path / "bad.json").write_text(json.dumps({**rec, "label": 7}) + "\n")
    with pytest.raises(FinetuneDataError, match=r"bad\.json: record 1: field 'label' is '7', not 0-4"):
        load_instructions(tmp_path / "bad.json")


@pytest.mark.data
def test_jcommonsenseqa_file_auto_converts(data_dir):
    path = data_dir / "jglue" / "jcommonsenseqa-v1.3-valid.json"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    examples = load_instructions(path)
    assert len(examples) == len(raw) == 1119
    for r, e in zip(raw, examples):
        assert e["output"] == r[f"choice{r['label']}"]
        assert r["question"] in e["input"]


# ------------------------------------------------------------------------------------------ splits


def test_split_indices_are_a_deterministic_partition():
    a = split_indices(1000, 0.05, 0.1, seed=7)
    b = split_indices(1000, 0.05, 0.1, seed=7)
    c = split_indices(1000, 0.05, 0.1, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    together = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(together.tolist()) == list(range(1000))
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (850, 50, 100)


@pytest.mark.data
def test_instruction_data_splits_85_5_10(data_dir, tmp_path):
    cfg = InstructConfig(base=tmp_path, data=data_dir / "instruction-data.json", out=tmp_path / "run")
    load = lambda p: load_instructions(p, cfg.format)  # noqa: E731
    splits = split_records(cfg, load)
    assert {k: len(v) for k, v in splits.items()} == {"train": 935, "val": 55, "test": 110}
    again = split_records(cfg, load)
    assert again == splits
    other = split_records(cfg.model_copy(update={"seed": 1}), load)
    assert other["test"] != splits["test"]
    outputs = [e["output"] for part in splits.values() for e in part]
    assert sorted(outputs) == sorted(r["output"] for r in json.loads((data_dir / "instruction-data.json").read_text()))


def test_empty_split_is_a_clear_error(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(INSTRUCTIONS))  # 4 records: 5% of them is no record
    cfg = InstructConfig(base=tmp_path, data=tmp_path / "d.json", out=tmp_path / "run")
    with pytest.raises(FinetuneDataError, match=r"the val split is empty: .*d\.json gives it no records.*val_fraction"):
        split_records(cfg, load_instructions)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(FinetuneDataError, match="the train split is empty"):
        split_records(cfg.model_copy(update={"data": tmp_path / "empty.json", "val_data": tmp_path / "d.json",
                                             "test_data": tmp_path / "d.json"}), load_instructions)


# ------------------------------------------------------------------------------------------ sampler


def test_epoch_sampler_is_deterministic_and_covers_each_epoch():
    a, b = EpochSampler(20, 4, seed=3), EpochSampler(20, 4, seed=3)
    batches = [a.next() for _ in range(10)]
    assert all(np.array_equal(x, b.next()) for x in batches)
    assert a.epoch == 2.0
    for epoch in (batches[:5], batches[5:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(20))
    assert not all(np.array_equal(x, y) for x, y in zip(batches[:5], batches[5:]))  # reshuffled
    assert not np.array_equal(EpochSampler(20, 4, seed=4).next(), batches[0])  # another seed, another order
    with pytest.raises(FinetuneDataError, match="fewer than one batch"):
        EpochSampler(5, 4, seed=0, world_size=2)


def test_epoch_sampler_ranks_are_disjoint():
    ranks = [EpochSampler(22, 3, seed=1, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].per_epoch == ranks[1].per_epoch == 3  # 22 // 6: the partial remainder is dropped
    for _ in range(2):  # two epochs
        taken = [np.concatenate([s.next() for _ in range(3)]).tolist() for s in ranks]
        assert len(set(taken[0])) == len(set(taken[1])) == 9
        assert not set(taken[0]) & set(taken[1])


def test_epoch_sampler_resumes_from_its_state():
    first = EpochSampler(17, 4, seed=9)
    for _ in range(6):  # into the second epoch (4 batches per epoch)
        first.next()
    state = json.loads(json.dumps(first.state_dict()))  # survives state.json
    expected = [first.next() for _ in range(7)]
    resumed = EpochSampler(17, 4, seed=9)
    resumed.load_state_dict(state)
    assert all(np.array_equal(x, resumed.next()) for x in expected)


# ------------------------------------------------------------------------------------------ collate


def test_collate_pads_with_eot_and_keeps_only_the_first_eot_as_target():
    eot = 99
    items = [([1, 2, 3, 4, 5, eot], 3), ([6, 7, eot], 2), ([8, 9, 10, 11, 12, 13, 14, eot], 4)]
    x, y = collate(items, eot, mask_prompt=False)
    assert x.shape == y.shape == (3, 7)
    assert x.tolist() == [[1, 2, 3, 4, 5, eot, eot], [6, 7, eot, eot, eot, eot, eot], [8, 9, 10, 11, 12, 13, 14]]
    assert y.tolist() == [[2, 3, 4, 5, eot, -100, -100], [7, eot, -100, -100, -100, -100, -100],
                          [9, 10, 11, 12, 13, 14, eot]]
    # The model learns to stop: exactly one end-of-text target per sequence.
    assert ((y == eot).sum(dim=1) == 1).all()


def test_collate_mask_prompt_masks_exactly_the_prompt_targets():
    eot = 99
    items = [([1, 2, 3, 4, 5, eot], 3), ([6, 7, eot], 2)]
    x, y = collate(items, eot, mask_prompt=True)
    # Targets predicting prompt tokens (ids[1:prompt_len]) are masked; the response and its eot are not.
    assert y.tolist() == [[-100, -100, 4, 5, eot], [-100, eot, -100, -100, -100]]
    assert x.tolist() == [[1, 2, 3, 4, 5], [6, 7, eot, eot, eot]]


def test_encoded_examples_end_in_one_eot_even_when_the_text_spells_it(env):
    tok, eot = env["tok"], env["eot"]
    cfg = InstructConfig(base=env["base"], data=env["root"], out=env["root"])
    examples = INSTRUCTIONS + [{"instruction": "Say the token.", "input": "", "output": "<|endoftext|> is literal"}]
    encoded, truncated = encode_examples(examples, tok, eot, cfg, limit=128)
    assert truncated == 0
    for (ids, prompt_len), e in zip(encoded, examples):
        prompt = tok.encode(format_prompt(e), allowed_special=set())
        assert prompt_len == len(prompt) and ids[:prompt_len] == prompt
        assert ids[-1] == eot and ids.count(eot) == 1
        assert tok.decode(ids[prompt_len:-1]) == e["output"]
    x, y = collate(encoded, eot, mask_prompt=False)
    assert ((y == eot).sum(dim=1) == 1).all()


def test_truncation_counts_and_warns(env, tmp_path):
    tok, eot = env["tok"], env["eot"]
    cfg = InstructConfig(base=env["base"], data=env["root"], out=env["root"])
    lengths = [len(ids) for ids, _ in encode_examples(INSTRUCTIONS, tok, eot, cfg, limit=1000)[0]]
    limit = sorted(lengths)[1]  # the two longest are cut
    encoded, truncated = encode_examples(INSTRUCTIONS, tok, eot, cfg, limit=limit - 1)
    assert truncated == sum(n > limit for n in lengths) >= 2
    assert max(len(ids) for ids, _ in encoded) == limit
    cfg = InstructConfig(base=env["base"], data=env["root"] / "instructions.json", val_data=env["root"] / "instructions.json",
                         test_data=env["root"] / "instructions.json", out=tmp_path / "run", max_length=20, batch_size=4,
                         device="cpu")
    with pytest.warns(UserWarning) as caught:
        task = InstructTask(cfg, Distributed("cpu"))
    assert [str(w.message) for w in caught] == [f"4 of 4 {name} examples were longer than 20 tokens and were truncated"
                                                for name in ("train", "val")]
    assert max(len(ids) for ids, _ in task.encoded["train"]) == 21  # inputs and targets: 20 tokens each


# ------------------------------------------------------------------------------------------ templates


def test_alpaca_template_with_and_without_input():
    head = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n")
    assert format_prompt(INSTRUCTIONS[0]) == head + "Name the color of the sky.\n\n### Response:\n"
    assert format_prompt(INSTRUCTIONS[1]) == head + "Add the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    assert format_prompt({"instruction": "Q", "input": "I"}, "<{instruction}|{input}>", " in={input}") == "<Q| in=I>"
    assert format_prompt({"instruction": "Q", "input": ""}, "<{instruction}|{input}>", " in={input}") == "<Q|>"


def test_template_missing_a_placeholder_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match=r"template lacks the placeholder\(s\) \{instruction\}"):
        InstructConfig(base=tmp_path, data=tmp_path, out=tmp_path, template="Answer: {input}")
    with pytest.raises(ValueError, match=r"input_template lacks the placeholder\(s\) \{input\}"):
        InstructConfig(base=tmp_path, data=tmp_path, out=tmp_path, input_template="Input:")
    assert InstructConfig(base=tmp_path, data=tmp_path, out=tmp_path).template == ALPACA_TEMPLATE


# ------------------------------------------------------------------------------------------ metrics


def test_classification_scores_on_a_hand_made_example():
    labels = ["a", "b", "c"]
    actual = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    s = classification_scores(predicted, actual, labels)
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: actual, columns: predicted
    assert s["n"] == 6 and s["accuracy"] == pytest.approx(4 / 6)
    assert s["f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # A label never predicted nor present counts as F1 0 in the macro average.
    s = classification_scores([0, 1], [0, 1], ["x", "y", "z"])
    assert s["accuracy"] == 1.0 and s["macro_f1"] == pytest.approx(2 / 3)


def test_rouge_l_and_exact_match_on_hand_made_examples():
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("The Cat", "the cat") == 1.0
    assert rouge_l("dog", "the cat") == 0.0
    # precision 2/2, recall 2/4: F1 = 2/3
    assert rouge_l("the cat", "the big fat cat") == pytest.approx(2 / 3)
    # Japanese is scored by characters: 5 of 6 in common.
    assert rouge_l("猫が好きです", "犬が好きです") == pytest.approx(5 / 6)
    assert rouge_l("東京", "京都") == pytest.approx(0.5)
    assert rouge_l("", "") == 1.0 and rouge_l("", "x") == 0.0
    assert exact_match("  The sky is  blue. ", "the sky is blue.")
    assert exact_match("ＡＢＣ１", "abc1")  # NFKC: full-width letters and digits
    assert exact_match("蛇口", "蛇口") and not exact_match("蛇口", "蛇")
    assert not exact_match("The sky is blue", "The sky is blue.")


# ------------------------------------------------------------------------------------------ classifier


def test_classifier_reads_the_last_real_token():
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig.preset("tiny", vocab_size=100, labels=["a", "b", "c"])).eval()
    seqs = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
    x, lengths, _ = classify_collate([(s, 0) for s in seqs])
    with torch.no_grad():
        batched = model(x, lengths)
        assert batched.shape == (3, 3)
        for row, s in enumerate(seqs):
            alone = model(torch.tensor([s]), torch.tensor([len(s)]))
            padded = model(torch.tensor([s + [42, 43, 44]]), torch.tensor([len(s)]))  # anything after the end
            assert torch.allclose(alone, batched[row : row + 1], atol=1e-6)
            assert torch.allclose(alone, padded, atol=1e-6)
        # ... and it is the last real token that counts, not the first or a padding position.
        changed = model(torch.tensor([[5, 6, 7, 9]]), torch.tensor([4]))
        assert not torch.allclose(changed, batched[0:1], atol=1e-4)


def classify_cfg(env, out: Path, **kw) -> ClassifyConfig:
    return ClassifyConfig(base=env["base"], data=env["root"] / "reviews.tsv", out=out, device="cpu", progress=False,
                          **{"max_steps": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_interval": 4,
                             "checkpoint_interval": 4, **kw})


def base_state(env) -> dict[str, torch.Tensor]:
    from model.hf import load_hf_gpt2

    return {k: v for k, v in load_hf_gpt2(env["base"]).state_dict().items() if k != "lm_head.weight"}


def test_trainable_blocks_1_trains_only_the_last_block_and_head(env, tmp_path):
    summary = finetune_classify(classify_cfg(env, tmp_path / "run"))
    assert summary["steps"] == 4 and summary["labels"] == ["neg", "pos"]
    directory = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    trained = load_file(str(directory / "model.safetensors"))
    base = base_state(env)
    assert set(trained) == set(base) | {"score.weight"}
    for name, before in base.items():
        same = torch.equal(trained[name], before)
        if name.startswith(("transformer.h.1.", "transformer.ln_f.")):
            assert not same, f"{name} should have trained"
        else:  # block 0, embeddings
            assert same, f"{name} should be frozen"
    config = json.loads((directory / "config.json").read_text())
    assert config["labels"] == ["neg", "pos"]  # label names survive in the checkpoint
    scores = json.loads((tmp_path / "run" / "eval" / "scores.json").read_text())
    assert scores["test"]["n"] == 12 and scores["val"]["n"] == 6
    assert len(scores["test"]["confusion"]) == 2 and sum(map(sum, scores["test"]["confusion"])) == 12


def test_trainable_blocks_all_trains_everything(env, tmp_path):
    finetune_classify(classify_cfg(env, tmp_path / "run", trainable_blocks="all"))
    trained = load_file(str(ckpt.latest_valid(tmp_path / "run" / "checkpoints") / "model.safetensors"))
    unchanged = [name for name, before in base_state(env).items() if torch.equal(trained[name], before)]
    assert unchanged == []


def test_label_unseen_in_training_names_the_record(env, tmp_path):
    val = tmp_path / "val.tsv"
    val.write_text("label\ttext\npos\tthe film was good\nmeh\tthe film was fine and sad\n")
    with pytest.raises(FinetuneDataError, match=r"val\.tsv: record 2: label 'meh' was not seen in training \(labels: neg, pos\)"):
        finetune_classify(classify_cfg(env, tmp_path / "run", val_data=val))


def test_classify_cli_trains_and_classifies(env, tmp_path):
    run = tmp_path / "run"
    r = cli("finetune", "classify", "--base", env["base"], "--data", env["root"] / "reviews.tsv", "--out", run,
            "--device", "cpu", "--no-progress", "--batch-size", "8", "--lr", "0.003", "--set", "max_steps=30",
            "--set", "warmup_steps=2", "--set", "eval_interval=10", "--set", "checkpoint_interval=30")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "test: accuracy" in r.stdout and "actual \\ predicted" in r.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(30))
    assert [row["step"] for row in rows if "val_accuracy" in row] == [9, 19, 29]

    r = cli("classify", "--checkpoint", run, "the film was awful and sad")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    label, prob = r.stdout.strip().split("\t")
    assert label in {"neg", "pos"} and 0.0 <= float(prob) <= 1.0
    r = cli("classify", "--checkpoint", run, "the film was good", "the film was bad and poor")
    lines = r.stdout.strip().splitlines()
    assert r.exit_code == 0 and len(lines) == 2
    for line, text in zip(lines, ["the film was good", "the film was bad and poor"]):
        label, prob, echoed = line.split("\t")
        assert label in {"neg", "pos"} and 0.0 <= float(prob) <= 1.0 and echoed == text
    # A language model is not a classifier, and a classifier neither chats nor exports as GPT2LMHeadModel.
    assert_clean_failure(cli("classify", "--checkpoint", env["base"], "hello"), "not a classifier")
    assert_clean_failure(cli("chat", "--checkpoint", run), "a classifier")
    assert_clean_failure(cli("export", "--checkpoint", run, tmp_path / "hf"), "classifier")


# ------------------------------------------------------------------------------------------ end to end


def test_instruction_tuning_overfits_and_learns_to_stop(env, tmp_path):
    data = env["root"] / "instructions.json"
    cfg = InstructConfig(base=env["base"], data=data, val_data=data, test_data=data, out=tmp_path / "run",
                         max_steps=100, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=5, weight_decay=0.0,
                         eval_interval=50, checkpoint_interval=100, max_new_tokens=40, device="cpu", progress=False)
    summary = finetune_instruct(cfg)
    run = tmp_path / "run"
    assert summary["steps"] == 100 and summary["examples"] == {"train": 4, "val": 4, "test": 4}

    rows = [json.loads(line) for line in (run / "eval" / "test_responses.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == [e["output"] for e in INSTRUCTIONS]
    assert all(set(r) >= {"instruction", "input", "output", "response", "exact_match", "rouge_l"} for r in rows)
    assert all(r["response"] == r["output"] and r["exact_match"] and r["rouge_l"] == 1.0 for r in rows), rows
    scores = json.loads((run / "eval" / "scores.json").read_text())
    assert scores == {"n": 4, "exact_match": 1.0, "rouge_l": 1.0}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert [m["step"] for m in metrics if "val_loss" in m] == [49, 99] and val[-1] < 0.5

    # Generation stops by itself: the response, then <|endoftext|>, well before max_new_tokens.
    model, directory = ckpt.load_pretrained(run)
    tok, eot = env["tok"], env["eot"]
    for example in INSTRUCTIONS:
        prompt = tok.encode(format_prompt(example), allowed_special=set())
        stopped = list(generate(model, prompt, 40, temperature=0.0, stop_id=eot))
        assert tok.decode(stopped) == example["output"]
        assert len(stopped) < 40
        unstopped = list(generate(model, prompt, len(stopped) + 1, temperature=0.0))
        assert unstopped == stopped + [eot]
    state = json.loads((directory / "state.json").read_text())
    assert state["finetune"]["task"] == "instruct" and state["finetune"]["config"]["template"] == ALPACA_TEMPLATE


# ------------------------------------------------------------------------------------------ resume


def hataori_classify(base: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "finetune", "classify", "--base", str(base), "--data", str(data),
            "--out", str(out), "--device", "cpu", "--no-progress", "--batch-size", "4", "--lr", "0.003",
            "--trainable-blocks", "all", "--set", "max_steps=30", "--set", "checkpoint_interval=10",
            "--set", "eval_interval=7", "--set", "warmup_steps=3"]


def step_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_loss_at_every_step(env, tmp_path):
    # A base in our checkpoint format with dropout, so the resumed run must also restore the RNG stream.
    torch.manual_seed(1)
    model = GPT(GPTConfig.preset("tiny", vocab_size=env["tok"].vocab_size, context_length=64, dropout=0.1))
    ckpt.save_checkpoint(tmp_path / "base" / "checkpoints", 0, model, torch.optim.AdamW(model.parameters()), {},
                         env["tokenizer_json"], keep=1)
    data = env["root"] / "reviews.tsv"
    child_env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # The uninterrupted reference runs in this process, through the library, with the CLI's settings.
    finetune_classify(ClassifyConfig(base=tmp_path / "base", data=data, out=tmp_path / "reference", device="cpu",
                                     progress=False, batch_size=4, lr=0.003, trainable_blocks="all", max_steps=30,
                                     checkpoint_interval=10, eval_interval=7, warmup_steps=3))

    run = tmp_path / "killed"
    proc = subprocess.Popen(hataori_classify(tmp_path / "base", data, run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=child_env)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for _ in metrics.open()) >= 13:  # past the step-10 checkpoint
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    proc.stderr.close()
    done = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert done and "step-000010" <= done[-1] < "step-000030"

    resumed = subprocess.run(hataori_classify(tmp_path / "base", data, run), capture_output=True, text=True,
                             env=child_env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / done[-1]}" in resumed.stdout
    ref, got = step_losses(tmp_path / "reference"), step_losses(run)
    assert sorted(got) == list(range(30))
    assert got == ref  # bit-identical, every step, before and after the kill
    assert (run / "eval" / "scores.json").read_text() == (tmp_path / "reference" / "eval" / "scores.json").read_text()


def torchrun_finetune(task: str, *args) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipeline.cli", "finetune", task, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("adapters", [[], ["--set", "lora={rank=4, alpha=8}"]], ids=["last-block", "lora"])
def test_torchrun_two_ranks_train_like_one_process_with_twice_the_batch(env, tmp_path, adapters):
    # Rank r takes every other batch of the same shuffled order, so 2 ranks x 4 examples see, step by
    # step, exactly the 8 examples one process with batch 8 sees; DDP's averaged gradient is then the
    # same gradient, and the logged losses must agree to rounding.
    data = env["root"] / "reviews.tsv"
    common = ["--base", env["base"], "--data", data, "--device", "cpu", "--no-progress", "--lr", "0.003",
              "--set", "max_steps=8", "--set", "warmup_steps=2", "--set", "eval_interval=4",
              "--set", "checkpoint_interval=8", *adapters]
    single = cli("finetune", "classify", "--out", tmp_path / "one", "--batch-size", "8", *common)
    assert single.exit_code == 0, (single.stdout, single.stderr, single.exception)
    r = torchrun_finetune("classify", "--out", tmp_path / "ddp", "--batch-size", "4", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("classifier in ") == 1 and r.stdout.count("test: accuracy") == 1  # rank 0 reports
    one, ddp = step_losses(tmp_path / "one"), step_losses(tmp_path / "ddp")
    assert sorted(ddp) == list(range(8))  # logged once per step
    assert [ddp[k] for k in sorted(ddp)] == pytest.approx([one[k] for k in sorted(one)], rel=1e-4, abs=1e-5)
    assert [c.name for c in ckpt.list_checkpoints(tmp_path / "ddp" / "checkpoints")] == ["step-000008"]
    scores = json.loads((tmp_path / "ddp" / "eval" / "scores.json").read_text())
    assert set(scores) >= {"val", "test", "majority_label"}


@pytest.mark.slow
def test_torchrun_two_ranks_instruction_tuning(env, tmp_path):
    data = env["root"] / "instructions.json"
    run = tmp_path / "run"
    r = torchrun_finetune("instruct", "--base", env["base"], "--data", data, "--val-data", data, "--test-data", data,
                          "--out", run, "--device", "cpu", "--no-progress", "--batch-size", "2", "--lr", "0.003",
                          "--set", "max_steps=6", "--set", "eval_interval=3", "--set", "checkpoint_interval=6",
                          "--set", "max_new_tokens=8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("fine-tuned to step 6") == 1
    assert sorted(step_losses(run)) == list(range(6))
    rows = (run / "eval" / "test_responses.jsonl").read_text().splitlines()
    assert len(rows) == len(INSTRUCTIONS)  # every test example answered once, by rank 0


# ------------------------------------------------------------------------------------------ CLI errors


def test_cli_missing_field_is_one_line_naming_file_record_field(env, tmp_path):
    records = [dict(r) for r in INSTRUCTIONS] * 10
    records[6] = {"instruction": "x", "input": ""}
    (tmp_path / "bad.json").write_text(json.dumps(records))
    r = cli("finetune", "instruct", "--base", env["base"], "--data", tmp_path / "bad.json", "--out", tmp_path / "run",
            "--device", "cpu", "--no-progress")
    assert_clean_failure(r, str(tmp_path / "bad.json"), "record 7", "'output'")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_bad_inputs_exit_2_with_one_line(env, tmp_path):
    base, out = env["base"], tmp_path / "run"
    assert_clean_failure(cli("finetune", "instruct", "--base", base, "--data", tmp_path / "nope.json", "--out", out,
                             "--device", "cpu"), "nope.json", "no such file")
    assert_clean_failure(cli("finetune", "instruct", "--base", tmp_path / "nobase", "--data", env["root"] / "instructions.json",
                             "--out", out, "--device", "cpu"), "nobase")
    assert_clean_failure(cli("finetune", "instruct", "--base", base, "--data", env["root"] / "instructions.json", "--out", out,
                             "--set", "template=Answer: {input}"), "template", "{instruction}")
    assert_clean_failure(cli("finetune", "instruct", "--base", base, "--data", env["root"] / "instructions.json", "--out", out,
                             "--device", "cpu", "--no-progress"), "the val split is empty")
    (tmp_path / "rows.tsv").write_text("label\ttext\npos\tgood\nneg\tbad\textra\n")
    assert_clean_failure(cli("finetune", "classify", "--base", base, "--data", tmp_path / "rows.tsv", "--out", out,
                             "--device", "cpu", "--no-progress"), "rows.tsv", "record 2", "3 fields")
    assert_clean_failure(cli("finetune", "classify", "--base", base, "--data", env["root"] / "reviews.tsv", "--out", out,
                             "--text-field", "review", "--device", "cpu", "--no-progress"),
                         "reviews.tsv", "record 1", "'review'")
    assert_clean_failure(cli("finetune", "classify", "--base", base, "--data", env["root"] / "reviews.tsv", "--out", out,
                             "--trainable-blocks", "last"), "--trainable-blocks", "'last'")
    assert not (out / "checkpoints").exists()


def test_cli_tokenizer_differing_from_the_base_names_both(env, tmp_path):
    other = tmp_path / "other-tokenizer.json"
    Tokenizer.train(iter(["something else entirely"] * 5), 300, show_progress=False).save(str(other))
    r = cli("finetune", "instruct", "--base", env["base"], "--data", env["root"] / "instructions.json",
            "--out", tmp_path / "run", "--device", "cpu", "--no-progress", "--set", f"tokenizer={other}")
    assert_clean_failure(r, str(other), str(env["base"] / "tokenizer.json"), "differs")
    # The same file passes the check (and training then stops at the empty val split, a data error).
    r = cli("finetune", "instruct", "--base", env["base"], "--data", env["root"] / "instructions.json",
            "--out", tmp_path / "run", "--device", "cpu", "--no-progress", "--set", f"tokenizer={env['tokenizer_json']}")
    assert_clean_failure(r, "the val split is empty")


def test_cli_non_utf8_data_names_the_file(env, tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("label\ttext\npos\tcaf\xe9 good\nneg\tbad\n".encode("latin-1"))
    r = cli("finetune", "classify", "--base", env["base"], "--data", path, "--out", tmp_path / "run",
            "--device", "cpu", "--no-progress")
    assert_clean_failure(r, "latin1.tsv")


def test_cli_rerun_of_a_finished_instruct_run(env, tmp_path):
    data = env["root"] / "instructions.json"
    args = ["finetune", "instruct", "--base", env["base"], "--data", data, "--out", tmp_path / "run", "--device", "cpu",
            "--no-progress", "--batch-size", "4", "--set", "max_steps=2", "--set", "max_new_tokens=2",
            "--set", f"val_data={data}", "--set", f"test_data={data}"]
    first = cli(*args)
    assert first.exit_code == 0 and "fine-tuned to step 2" in first.stdout, (first.stdout, first.exception)
    again = cli(*args)  # "rerunning it resumes from the last checkpoint": here, the final one
    assert again.exception is None, repr(again.exception)
    assert again.exit_code == 0 and "fine-tuned to step 2" in again.stdout


def test_balance_leaves_a_separate_test_file_alone(env, tmp_path):
    from model.finetune.classify import ClassifyTask

    (tmp_path / "test.tsv").write_text("label\ttext\n" + "".join(
        f"{'pos' if i % 4 == 0 else 'neg'}\tthe film was {'good' if i % 4 == 0 else 'bad'}\n" for i in range(20)))
    task = ClassifyTask(classify_cfg(env, tmp_path / "run", balance=True, test_data=tmp_path / "test.tsv"),
                        Distributed("cpu"))
    assert len(task.splits["train"]) + len(task.splits["val"]) == 60  # `data` is balanced already: 30 and 30
    assert len(task.splits["test"]) == 20  # the test file as given: 5 pos, 15 neg


def test_jcommonsenseqa_instruction_tuning_end_to_end(data_dir, tmp_path):
    """JGLUE JCommonsenseQA as instruction data through the CLI: a Japanese tokenizer (ja preset), a
    tiny base, `hataori finetune instruct` on the train file with the validation file as test set."""
    train_file = data_dir / "jglue" / "jcommonsenseqa-v1.3-train.json"
    valid_file = data_dir / "jglue" / "jcommonsenseqa-v1.3-valid.json"
    train = tmp_path / "train.json"
    train.write_text("".join(train_file.read_text(encoding="utf-8").splitlines(keepends=True)[:96]), encoding="utf-8")
    test = tmp_path / "test.json"
    test.write_text("".join(valid_file.read_text(encoding="utf-8").splitlines(keepends=True)[:6]), encoding="utf-8")
    texts = [format_prompt(e) + e["output"] for e in load_instructions(train)]
    tok = Tokenizer.train(iter(texts * 2), 600, pretokenizer="ja", special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    export_hf_gpt2(GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=256)), tmp_path / "base",
                   tmp_path / "tokenizer.json")
    r = cli("finetune", "instruct", "--base", tmp_path / "base", "--data", train, "--test-data", test,
            "--out", tmp_path / "run", "--device", "cpu", "--no-progress", "--mask-prompt",
            "--set", "max_steps=8", "--set", "max_new_tokens=8", "--set", "batch_size=8")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "test_responses.jsonl").read_text(encoding="utf-8").splitlines()]
    first = json.loads(test.read_text(encoding="utf-8").splitlines()[0])
    assert len(rows) == 6 and rows[0]["output"] == first[f"choice{first['label']}"]
    assert rows[0]["input"].startswith("質問：" + first["question"])
    scores = json.loads((tmp_path / "run" / "eval" / "scores.json").read_text())
    assert scores["n"] == 6 and 0.0 <= scores["exact_match"] <= 1.0
