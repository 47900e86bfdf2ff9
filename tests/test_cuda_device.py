"""Checks that need a CUDA GPU (marked `cuda`; skipped without one). `make gpu-check`
(bench/gpu_check.py) runs them on a GPU machine: the chunked loss against the plain one in fp32
and under bf16 autocast, torch.compile of the GPT with the chunked loss, pretraining under bf16
with an exact resume, greedy generation with and without the cache, and transformers parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fault_support import tiny_dataset

from model import loop
from model.chunked_loss import linear_cross_entropy
from model.config import GPTConfig
from model.generate import generate
from model.gpt import GPT
from model.pretrain import PretrainTask, TrainConfig

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEVICE = "cuda"  # a name, so that the module can be dry-run on the CPU by replacing it
CUDA = torch.device(DEVICE)


def grads_of(fn, h, weight, targets):
    h = h.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = fn(h, weight, targets)
    loss.backward()
    return loss.detach().float(), h.grad, weight.grad


def plain(h, weight, targets):
    return F.cross_entropy(F.linear(h, weight[:1000]).float(), targets, ignore_index=-100)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3000, 64, generator=g).to(CUDA)
    weight = (torch.randn(1024, 64, generator=g) * 0.3).to(CUDA)
    targets = torch.randint(0, 1000, (3000,), generator=g)
    targets[::5] = -100
    return h, weight, targets.to(CUDA)


def test_chunked_loss_equals_plain_in_fp32(inputs):
    torch.backends.cuda.matmul.allow_tf32 = False
    want = grads_of(plain, *inputs)
    got = grads_of(lambda h, w, t: linear_cross_entropy(h, w, t, 1000, chunk_rows=700), *inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunked_loss_under_bf16_autocast_is_close_and_fp32(inputs):
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        want = grads_of(plain, *inputs)
        got = grads_of(lambda h, w, t: linear_cross_entropy(h, w, t, 1000, chunk_rows=700), *inputs)
    assert got[2].dtype == torch.float32 and got[1].dtype == torch.float32
    assert abs(float(got[0]) - float(want[0])) < 1e-2 * float(want[0])
    assert (got[2] - want[2].float()).abs().max() < 5e-2 * want[2].float().abs().max()


def test_compiled_gpt_with_the_chunked_loss_equals_eager():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=1000, context_length=32)).to(CUDA)
    x = torch.randint(0, 1000, (4, 32), device=CUDA)
    y = torch.roll(x, -1, 1)
    y[0, :10] = -100
    _, eager = model(x, y)
    eager.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    _, compiled = torch.compile(model)(x, y)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], atol=1e-5, rtol=1e-4, msg=n)


DOCS = [f"Report {i}: the river rose {i % 6} feet and the ferry crossed {i % 4} times." for i in range(300)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("cuda-data"), DOCS, vocab=300)


def run(dataset: Path, out: Path, max_steps: int, **kw) -> list[dict]:
    cfg = TrainConfig(data=dataset, out=out, preset="tiny", batch_size=8, context_length=32, device=DEVICE, max_steps=max_steps,
                      warmup_steps=2, lr=3e-3, eval_interval=4, checkpoint_interval=4, sample_tokens=8, progress=False, **kw)
    dist = loop.Distributed(DEVICE)
    loop.fit(cfg, PretrainTask(cfg, dist), dist)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_in_bf16_resumes_with_the_same_losses(dataset, tmp_path):
    straight = run(dataset, tmp_path / "straight", 8)
    assert len(straight) == 8 and straight[-1]["loss"] < straight[0]["loss"]
    assert all(r["tokens_per_s"] > 0 for r in straight) and "val_loss" in straight[3]
    # As if killed after step 5: the run directory without its step-8 checkpoint.
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-000008")
    resumed = run(dataset, tmp_path / "resumed", 8)  # from the step-4 checkpoint
    assert [r["step"] for r in resumed] == list(range(8))
    for a, b in zip(resumed, straight):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a["step"], a["loss"], b["loss"])


def test_plain_and_chunked_training_agree_on_cuda(dataset, tmp_path):
    chunked = run(dataset, tmp_path / "chunked", 4, dtype="float32", loss="chunked")
    plain_run = run(dataset, tmp_path / "plain", 4, dtype="float32", loss="plain")
    for a, b in zip(chunked, plain_run):
        assert abs(a["loss"] - b["loss"]) < 1e-4


def test_generation_on_cuda_cached_equals_uncached_and_the_cpu():
    torch.manual_seed(1)
    model = GPT(GPTConfig.preset("tiny", vocab_size=500, context_length=24)).eval()
    prompt = [5, 6, 7, 8]
    on_cpu = list(generate(model, prompt, 40, temperature=0.0))
    model.to(CUDA)
    cached = list(generate(model, prompt, 40, temperature=0.0))
    assert cached == list(generate(model, prompt, 40, temperature=0.0, use_cache=False))
    assert sum(a == b for a, b in zip(cached, on_cpu)) >= 30  # same weights; float order may flip a near-tie
    sampled = list(generate(model, prompt, 30, temperature=0.9, top_k=40, seed=3))
    assert sampled == list(generate(model, prompt, 30, temperature=0.9, top_k=40, seed=3, use_cache=False))


def test_transformers_parity_on_cuda(tmp_path):
    import transformers

    from model.hf import export_hf_gpt2

    torch.backends.cuda.matmul.allow_tf32 = False
    ours = GPT(GPTConfig.preset("tiny", vocab_size=1000)).eval()
    export_hf_gpt2(ours, tmp_path)
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).to(CUDA).eval()
    ours.to(CUDA)
    x = torch.randint(0, 1000, (2, 40), device=CUDA)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x).logits, atol=1e-4, rtol=1e-4)
