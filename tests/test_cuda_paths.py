"""The CUDA-only branches of the training loop, exercised on the CPU: CI never has a GPU, so the
decisions those branches make (peak FLOP/s for MFU, bf16 autocast, fused AdamW, the out-of-memory
advice, pinned host copies) are checked here by faking the device where torch allows it."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from model import dataset as data_mod
from model import loop
from model.config import GPTConfig
from model.gpt import GPT
from model.pretrain import PretrainTask, TrainConfig
from pipeline.dataset_writer import DatasetConfig, build_dataset
from tokenizer_rs import Tokenizer

DOCS = [f"Line {i}: a small corpus for the loop, {i % 11} words and {i % 3} commas." for i in range(300)]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda-paths")
    Tokenizer.train(iter(DOCS), 280, show_progress=False).save(str(root / "tokenizer.json"))
    build_dataset(iter(DOCS), root / "tokenizer.json", root / "ds", DatasetConfig(val_fraction=0.1), progress=False)
    return root / "ds"


def tiny_run(dataset: Path, out: Path, **kw) -> TrainConfig:
    settings = dict(preset="tiny", batch_size=4, context_length=16, device="cpu", max_steps=2, warmup_steps=1,
                    eval_interval=2, checkpoint_interval=100, sample_tokens=0, progress=False)
    return TrainConfig(data=dataset, out=out, **{**settings, **kw})


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA H100 80GB HBM3", 989e12),  # SXM: the reference figure
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA L4", 121e12),
    ("Tesla T4", None),  # unknown parts report no MFU rather than a wrong one
])
def test_peak_flops_by_device_name(monkeypatch, name, flops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert loop.peak_flops(CUDA) == flops


def test_no_peak_and_no_mfu_on_the_cpu():
    assert loop.peak_flops(torch.device("cpu")) is None


def test_mfu_is_model_flops_over_the_device_peak(dataset, tmp_path, monkeypatch):
    peak = 1e9
    monkeypatch.setattr(loop, "peak_flops", lambda device: peak)
    cfg = tiny_run(dataset, tmp_path / "run")
    dist = loop.Distributed("cpu")
    task = PretrainTask(cfg, dist)
    loop.fit(cfg, task, dist)
    records = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["mfu"] == pytest.approx(task.flops_per_token() * r["tokens_per_s"] / peak, rel=1e-9)
        assert 0 < r["mfu"]


def test_flops_per_token_of_gpt2_124m():
    # 6 N (N = parameters without the position table, tied head counted once) + 12 L d T (attention).
    with torch.device("meta"):  # shapes only: no 500 MB of weights
        model = GPT(GPTConfig.preset("gpt2"))
    n = sum(p.numel() for p in model.parameters()) - 1024 * 768
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024
    assert 0.85e9 < model.flops_per_token(1024) < 0.86e9


@pytest.mark.parametrize("dtype, device, expected", [
    ("auto", "cpu", None),
    ("float32", "cpu", None),
    ("float32", "cuda", None),
    ("auto", "cuda", ("cuda", torch.bfloat16)),
    ("bfloat16", "cuda", ("cuda", torch.bfloat16)),
    ("bfloat16", "cpu", ("cpu", torch.bfloat16)),
])
def test_bf16_autocast_is_the_cuda_default(tmp_path, dtype, device, expected):
    make = loop.autocast_for(loop.LoopConfig(out=tmp_path, dtype=dtype), torch.device(device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available... Disabling autocast" on this machine
        ctx = make()
    if expected is None:
        assert isinstance(ctx, contextlib.nullcontext)
    else:
        assert (ctx.device, ctx.fast_dtype) == expected


def test_bf16_autocast_runs_the_model_in_bf16_on_the_cpu(tmp_path):
    model = GPT(GPTConfig.preset("tiny", vocab_size=64))
    make = loop.autocast_for(loop.LoopConfig(out=tmp_path, dtype="bfloat16"), torch.device("cpu"))
    x = torch.randint(0, 64, (2, 8))
    with make():
        logits, _ = model(x)
        _, loss = model(x, x)  # the chunked loss: matmuls in bf16, softmax and loss in fp32
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert model.transformer.wte.weight.grad.dtype == torch.float32  # master weights stay fp32


def test_adamw_is_fused_on_cuda_and_decays_only_matrices(tmp_path):
    model = GPT(GPTConfig.preset("tiny", vocab_size=64))
    model.transformer.h[0].requires_grad_(False)
    cfg = loop.LoopConfig(out=tmp_path, weight_decay=0.1)
    on_cuda = loop.make_optimizer(model, cfg, CUDA)  # CPU tensors: torch has a fused CPU kernel too
    on_cpu = loop.make_optimizer(model, cfg, torch.device("cpu"))
    assert on_cuda.defaults["fused"] is True and on_cpu.defaults["fused"] is True  # the CPU has a fused kernel too
    decayed, plain = on_cuda.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    frozen = {id(p) for p in model.transformer.h[0].parameters()}
    optimized = [p for g in on_cuda.param_groups for p in g["params"]]
    assert not frozen & {id(p) for p in optimized}
    assert len(optimized) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("where", ["loss", "evaluate"])
def test_cuda_out_of_memory_says_which_batch_size_to_lower(dataset, tmp_path, where):
    cfg = tiny_run(dataset, tmp_path / "run", batch_size=3)
    dist = loop.Distributed("cpu")
    task = PretrainTask(cfg, dist)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    setattr(task, where, out_of_memory)
    with pytest.raises(RuntimeError) as err:
        loop.fit(cfg, task, dist)
    assert str(err.value).startswith("CUDA out of memory at batch_size 3: lower batch_size")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no allocator dump chained on


def test_batches_for_cuda_are_pinned_and_copied_without_blocking(monkeypatch):
    calls = []

    def fake_pin(self):
        calls.append("pin")
        return self

    def fake_to(self, *args, **kwargs):
        calls.append(("to", args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    inputs = np.arange(8, dtype=np.uint16).reshape(2, 4)
    x, y = data_mod._to_torch(inputs, inputs + 1, "cuda", pin=True)
    assert calls == ["pin", "pin", ("to", ("cuda",), {"non_blocking": True}), ("to", ("cuda",), {"non_blocking": True})]
    assert x.dtype == torch.int64 and y.tolist() == (inputs + 1).tolist()
    calls.clear()
    data_mod._to_torch(inputs, inputs + 1, "cpu", pin=False)
    assert calls == [("to", ("cpu",), {}), ("to", ("cpu",), {})]  # no pinning, a plain copy
