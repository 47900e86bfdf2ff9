"""LoRA: an adapted model starts out as the base model, only adapters (and a classifier's head)
train, merging gives back plain linear layers with the same logits, checkpoints round-trip, and
exports (library and `hataori export`) load in transformers with matching logits."""

from __future__ import annotations

import copy
import shutil
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import transformers
from safetensors.torch import load_file
from typer.testing import CliRunner

from model import checkpoint as ckpt
from model.config import GPTConfig, LoRASpec
from model.finetune.classify import ClassifyConfig, ClassifyTask
from model.finetune.instruct import InstructConfig, InstructTask, finetune_instruct
from model.templates import format_prompt
from model.lora import LoRALinear, apply_lora, merge_lora
from model.gpt import GPT
from model.hf import export_hf_gpt2, load_hf_gpt2
from model.loop import Distributed
from pipeline.cli import app
from tokenizer_rs import Tokenizer

RECORDS = [{"instruction": f"Repeat the word {w}.", "input": "", "output": w}
           for w in ["apple", "river", "stone", "cloud", "green", "music", "bread", "light"]]
TARGETS = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(vocab: int = 300, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny", vocab_size=vocab, **kw)).eval()


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def train_adapters(model: nn.Module, steps: int = 15, vocab: int = 300) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (4, 24), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        _, loss = model(x, torch.roll(x, -1, dims=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    texts = [format_prompt(r) + r["output"] for r in RECORDS] * 2 + ["the film was good", "the film was bad"]
    tok = Tokenizer.train(iter(texts), 400, show_progress=False)
    tok.save(str(root / "tokenizer.json"))
    export_hf_gpt2(tiny(tok.vocab_size, context_length=128), root / "base", root / "tokenizer.json")
    (root / "data.json").write_text(json.dumps(RECORDS))
    (root / "reviews.tsv").write_text("label\ttext\n" + "".join(
        f"{'pos' if i % 2 else 'neg'}\tthe film was {'good' if i % 2 else 'bad'} {i}\n" for i in range(40)))
    return {"root": root, "tok": tok, "base": root / "base", "data": root / "data.json"}


def test_adapted_model_equals_the_base_before_training():
    base = tiny()
    adapted = apply_lora(copy.deepcopy(base), LoRASpec(rank=4, alpha=8))
    wrapped = lora_modules(adapted)
    assert {name.split(".", 3)[-1] for name in wrapped} == TARGETS and len(wrapped) == 8  # 4 per block, 2 blocks
    assert all(m.scale == 2.0 and torch.count_nonzero(m.lora_b) == 0 for m in wrapped.values())
    assert all(torch.count_nonzero(m.lora_a) > 0 for m in wrapped.values())
    x = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        assert torch.equal(adapted(x)[0], base(x)[0])


def test_only_adapters_require_grad():
    model = apply_lora(tiny(), LoRASpec(rank=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert len(trainable) == 16
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(tiny(), LoRASpec(targets=["nothing_here"]))


def test_trainable_parameters_are_a_small_fraction():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("small", vocab_size=1000))
    full = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoRASpec(rank=4))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # r * (in + out) for each adapted layer: c_attn 256->768, attn.c_proj 256->256, c_fc 256->1024, mlp.c_proj 1024->256.
    assert trainable == 4 * 4 * ((256 + 768) + (256 + 256) + (256 + 1024) + (1024 + 256))
    assert trainable < 0.03 * full


def test_merge_after_training_gives_the_same_logits_and_plain_linears():
    base = tiny()
    model = apply_lora(copy.deepcopy(base), LoRASpec(rank=4))
    model.config = model.config.model_copy(update={"lora": LoRASpec(rank=4)})
    frozen = {n: m.base.weight.detach().clone() for n, m in lora_modules(model).items()}
    train_adapters(model)
    assert all(torch.count_nonzero(m.lora_b) > 0 for m in lora_modules(model).values())
    assert all(torch.equal(m.base.weight, frozen[n]) for n, m in lora_modules(model).items())  # W never trains
    x = torch.randint(0, 300, (3, 20))
    with torch.no_grad():
        adapted = model(x)[0]
        assert not torch.allclose(adapted, base(x)[0], atol=1e-3)  # the adapters did something
        merged = merge_lora(model)
        assert torch.allclose(merged(x)[0], adapted, atol=1e-5)
    assert merged.config.lora is None and not lora_modules(merged)
    for name, module in merged.named_modules():
        if name.split(".", 3)[-1] in TARGETS:
            assert type(module) is nn.Linear, name
    assert not any("lora" in k or ".base." in k for k in merged.state_dict())


def test_lora_checkpoint_round_trips_and_exports_to_transformers(tmp_path):
    config = GPTConfig.preset("tiny", vocab_size=300, lora=LoRASpec(rank=4, alpha=4))
    torch.manual_seed(0)
    model = ckpt.build_model(config)
    assert len(lora_modules(model)) == 8
    train_adapters(model)
    root = ckpt.save_checkpoint(tmp_path / "checkpoints", 3, model,
                                torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]), {}, None, 1)
    assert any(k.endswith("lora_b") for k in load_file(str(root / "model.safetensors")))
    loaded = ckpt.load_model(root).eval()
    assert loaded.config.lora == LoRASpec(rank=4, alpha=4) and len(lora_modules(loaded)) == 8
    x = torch.randint(0, 300, (2, 30))
    with torch.no_grad():
        expected = model(x)[0]
        assert torch.equal(loaded(x)[0], expected)

    export_hf_gpt2(loaded, tmp_path / "hf")
    assert len(lora_modules(loaded)) == 8 and loaded.config.lora is not None  # the export merged a copy
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert not any("lora" in k or ".base." in k for k in exported)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, expected, atol=1e-4)


def test_export_merges_adapters_applied_without_config(tmp_path):
    model = apply_lora(tiny(), LoRASpec(rank=4))
    train_adapters(model)
    export_hf_gpt2(model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x)[0], atol=1e-4)


def test_instruct_task_with_lora_trains_only_adapters(env, tmp_path):
    cfg = InstructConfig(base=env["base"], data=env["data"], out=tmp_path / "run", lora=LoRASpec(rank=2),
                         val_fraction=0.25, test_fraction=0.25, batch_size=2, device="cpu", progress=False)
    task = InstructTask(cfg, Distributed("cpu"))
    trainable = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert task.model.config.lora == LoRASpec(rank=2)


def test_classifier_with_lora_trains_adapters_and_head(env, tmp_path):
    cfg = ClassifyConfig(base=env["base"], data=env["root"] / "reviews.tsv", out=tmp_path / "run",
                         lora=LoRASpec(rank=2), device="cpu", progress=False)
    task = ClassifyTask(cfg, Distributed("cpu"))
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if n.endswith(("lora_a", "lora_b"))}
    assert len(adapters) == 16
    assert trainable - adapters == {"score.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}


def test_lora_fine_tune_exports_with_matching_logits(env, tmp_path):
    run = tmp_path / "run"
    cfg = InstructConfig(base=env["base"], data=env["data"], out=run, lora=LoRASpec(rank=4, alpha=8),
                         val_fraction=0.25, test_fraction=0.25, max_steps=12, batch_size=2, lr=1e-2, warmup_steps=1,
                         eval_interval=12, checkpoint_interval=12, max_new_tokens=4, device="cpu", progress=False)
    finetune_instruct(cfg)
    directory = ckpt.latest_valid(run / "checkpoints")
    assert json.loads((directory / "config.json").read_text())["lora"] == {"rank": 4, "alpha": 8.0,
                                                                          "targets": ["c_attn", "c_proj", "c_fc"]}
    # The base weights stayed frozen; the adapters trained.
    weights = load_file(str(directory / "model.safetensors"))
    base = load_hf_gpt2(env["base"]).state_dict()
    for name, tensor in weights.items():
        if ".base." in name:
            assert torch.equal(tensor, base[name.replace(".base.", ".")]), name
        elif name.endswith(("lora_a", "lora_b")):
            assert torch.count_nonzero(tensor) > 0, name  # B starts at zero: non-zero means it trained
        else:
            assert torch.equal(tensor, base[name]), name

    r = CliRunner().invoke(app, ["export", "--checkpoint", str(run), str(tmp_path / "hf")])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and "lora" not in hf_config
    assert hf_config["eos_token_id"] == env["tok"].token_to_id("<|endoftext|>")
    assert not any("lora" in k or ".base." in k for k in load_file(str(tmp_path / "hf" / "model.safetensors")))
    ours, _ = ckpt.load_pretrained(run)
    assert len(lora_modules(ours)) == 8
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, env["tok"].vocab_size, (2, 40))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, ours.eval()(x)[0], atol=1e-4)

    # A later fine-tune from the LoRA run starts from the merged weights.
    task = InstructTask(cfg.model_copy(update={"base": run, "lora": None, "out": tmp_path / "again"}), Distributed("cpu"))
    assert not lora_modules(task.model) and task.model.config.lora is None
    with torch.no_grad():
        assert torch.allclose(task.model.eval()(x)[0], hf(x).logits, atol=1e-4)


def test_lora_instruct_run_resumes_exactly(env, tmp_path):
    """A LoRA run on a base with dropout, cut back to its step-5 checkpoint (as a kill at step 8 leaves it),
    finishes with the same loss at every step and the same weights as the uninterrupted run."""
    torch.manual_seed(2)
    model = GPT(GPTConfig.preset("tiny", vocab_size=env["tok"].vocab_size, context_length=128, dropout=0.1))
    ckpt.save_checkpoint(tmp_path / "base" / "checkpoints", 0, model, torch.optim.AdamW(model.parameters()), {},
                         env["root"] / "tokenizer.json", keep=1)
    run = tmp_path / "run"
    cfg = InstructConfig(base=tmp_path / "base", data=env["data"], out=run, lora=LoRASpec(rank=4),
                         val_fraction=0.25, test_fraction=0.25, max_steps=10, batch_size=2, lr=1e-2, warmup_steps=2,
                         eval_interval=3, checkpoint_interval=5, max_new_tokens=2, device="cpu", progress=False)
    finetune_instruct(cfg)
    metrics = run / "metrics.jsonl"
    full = metrics.read_text().splitlines()
    final = load_file(str(run / "checkpoints" / "step-000010" / "model.safetensors"))

    shutil.rmtree(run / "checkpoints" / "step-000010")
    metrics.write_text("".join(line + "\n" for line in full[:8]))
    summary = finetune_instruct(cfg)
    assert summary["start_step"] == 5 and summary["steps"] == 10
    again = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in again] == list(range(10))
    for before, after in zip(full, again):
        before, after = json.loads(before), json.loads(after)
        assert after["loss"] == before["loss"] and after.get("val_loss") == before.get("val_loss"), (before, after)
    resumed = load_file(str(run / "checkpoints" / "step-000010" / "model.safetensors"))
    assert resumed.keys() == final.keys() and all(torch.equal(resumed[k], final[k]) for k in final)
