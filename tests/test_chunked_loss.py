"""The chunked linear + cross-entropy (model/chunked_loss.py) against the plain path: logits from
the head, then F.cross_entropy. Loss and gradients must agree within 1e-5, with ignored (-100)
targets, odd chunk sizes, padded weights, frozen weights, through a GPT with tied embeddings, and
over whole training runs (LoopConfig.loss chunked vs plain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fault_support import tiny_dataset

from model import loop
from model.chunked_loss import default_chunk_rows, linear_cross_entropy
from model.config import GPTConfig
from model.gpt import GPT
from model.pretrain import PretrainTask, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATOL = 1e-5


def plain(h, weight, targets, vocab_size):
    return F.cross_entropy(F.linear(h, weight[:vocab_size]), targets, ignore_index=-100)


def loss_and_grads(fn, h, weight, targets, vocab_size, **kw):
    h = h.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = fn(h, weight, targets, vocab_size, **kw)
    loss.backward()
    return loss.detach(), h.grad, weight.grad


def inputs(n=37, d=16, vocab=100, padded=128, ignored_every=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    weight = torch.randn(padded, d, generator=g) * 0.5
    targets = torch.randint(0, vocab, (n,), generator=g)
    if ignored_every:
        targets[::ignored_every] = -100
    return h, weight, targets


@pytest.mark.parametrize("chunk_rows", [1, 5, 7, 36, 37, 1000])
@pytest.mark.parametrize("vocab, padded", [(100, 128), (100, 100), (61, 64)])
def test_loss_and_grads_equal_the_plain_path(chunk_rows, vocab, padded):
    h, weight, targets = inputs(vocab=vocab, padded=padded)
    want = loss_and_grads(plain, h, weight, targets, vocab)
    got = loss_and_grads(linear_cross_entropy, h, weight, targets, vocab, chunk_rows=chunk_rows)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert torch.count_nonzero(got[2][vocab:]) == 0  # padding rows: never scored, no gradient


def test_large_logits_stay_exact():
    # Logit gaps of ~100 push the target's probability below fp32's smallest normal number: the
    # loss must come from the log-sum-exp, not from log(probability).
    h, weight, targets = inputs(ignored_every=0)
    weight = weight * 40
    want = loss_and_grads(plain, h, weight, targets, 100)
    got = loss_and_grads(linear_cross_entropy, h, weight, targets, 100, chunk_rows=8)
    assert want[0] > 80
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=ATOL * float(want[0]), rtol=1e-6)


def test_all_targets_ignored_gives_zero_loss_and_zero_grads():
    h, weight, targets = inputs()
    targets[:] = -100
    assert torch.isnan(plain(h, weight, targets, 100))  # F.cross_entropy: 0 / 0
    loss, gh, gw = loss_and_grads(linear_cross_entropy, h, weight, targets, 100, chunk_rows=8)
    assert loss.item() == 0.0
    assert torch.count_nonzero(gh) == 0 and torch.count_nonzero(gw) == 0


def test_backward_scales_by_the_incoming_gradient_and_a_frozen_weight_gets_none():
    h, weight, targets = inputs()
    h1 = h.clone().requires_grad_()
    (linear_cross_entropy(h1, weight, targets, 100, chunk_rows=6) * 0.25).backward()  # weight frozen (LoRA)
    _, gh, _ = loss_and_grads(linear_cross_entropy, h, weight, targets, 100, chunk_rows=6)
    torch.testing.assert_close(h1.grad, gh * 0.25, atol=1e-7, rtol=0)
    weight.requires_grad_()
    with torch.no_grad():  # evaluation: the loss alone, no graph
        loss = linear_cross_entropy(h, weight, targets, 100)
        torch.testing.assert_close(loss, plain(h, weight, targets, 100), atol=ATOL, rtol=0)
        assert loss.grad_fn is None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # and in the autocast dtype
        assert abs(linear_cross_entropy(h, weight, targets, 100) - plain(h, weight, targets, 100)) < 2e-2 * loss


def test_batched_shapes_and_bad_arguments():
    h, weight, targets = inputs(n=24)
    torch.testing.assert_close(linear_cross_entropy(h.view(4, 6, 16), weight, targets.view(4, 6), 100),
                               plain(h, weight, targets, 100), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="23 targets for 24 hidden states"):
        linear_cross_entropy(h, weight, targets[:23], 100)
    with pytest.raises(ValueError, match="vocab_size 129 is not in 1..128"):
        linear_cross_entropy(h, weight, targets, 129)
    with pytest.raises(ValueError, match="chunk_rows must be positive"):
        linear_cross_entropy(h, weight, targets, 100, chunk_rows=-1)
    assert default_chunk_rows(50304, 64, torch.device("cpu")) == 333  # 64 MB of fp32 logits, not a batch's
    assert default_chunk_rows(50304, 768, torch.device("cpu")) == 1536  # at least twice the width


def test_bf16_autocast_matmuls_with_fp32_softmax_and_grads():
    h, weight, targets = inputs(n=64, d=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, gh, gw = loss_and_grads(linear_cross_entropy, h, weight, targets, 100, chunk_rows=16)
    ref = loss_and_grads(plain, h, weight, targets, 100)  # fp32 reference
    assert loss.dtype == torch.float32 and gh.dtype == torch.float32 and gw.dtype == torch.float32
    assert abs(loss - ref[0]) < 2e-2 * ref[0]
    assert (gw - ref[2]).abs().max() < 5e-2 * ref[2].abs().max()


def gpt_loss_and_grads(chunked: bool, x, y, dropout=0.0):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=300, context_length=16, dropout=dropout))
    model.chunked_loss = chunked
    model.loss_chunk_rows = 7  # several chunks, the last one short
    torch.manual_seed(1)
    _, loss = model(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_a_gpt_gets_the_same_loss_and_grads_with_ignored_targets():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 300, (3, 16), generator=g)
    y = torch.roll(x, -1, 1)
    y[0, :9] = -100  # a masked prompt
    y[2, 12:] = -100  # padding after the end of a response
    loss_c, grads_c = gpt_loss_and_grads(True, x, y)
    loss_p, grads_p = gpt_loss_and_grads(False, x, y)
    torch.testing.assert_close(loss_c, loss_p, atol=ATOL, rtol=0)
    assert grads_c.keys() == grads_p.keys() and "transformer.wte.weight" in grads_c
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_p[name], atol=ATOL, rtol=0, msg=name)
    wte = grads_c["transformer.wte.weight"]  # tied: the head's gradient reaches the embedding
    assert torch.count_nonzero(wte[:300].abs().sum(1)) == 300 and torch.count_nonzero(wte[300:]) == 0


def test_logits_without_targets_cover_the_real_vocabulary_contiguously():
    model = GPT(GPTConfig.preset("tiny", vocab_size=300, context_length=16)).eval()
    x = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        logits, loss = model(x)
        full = model.lm_head(model.hidden_states(x)[0])
    assert loss is None and logits.shape == (2, 5, 300) and logits.is_contiguous()
    torch.testing.assert_close(logits, full[..., :300], atol=1e-6, rtol=0)


DOCS = [f"Entry {i}: the kettle boiled {i % 9} times and the lamp flickered {i % 4} times." for i in range(300)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("chunked-loss"), DOCS, vocab=290)


@pytest.mark.slow
def test_training_logs_the_same_losses_with_either_path(dataset, tmp_path):
    losses = {}
    for path in ("chunked", "plain"):
        cfg = TrainConfig(data=dataset, out=tmp_path / path, preset="tiny", batch_size=4, context_length=16, device="cpu",
                          max_steps=6, warmup_steps=1, lr=3e-3, eval_interval=3, checkpoint_interval=100, sample_tokens=0,
                          progress=False, loss=path, model={"dropout": 0.1})
        dist = loop.Distributed("cpu")
        task = PretrainTask(cfg, dist)
        loop.fit(cfg, task, dist)
        assert task.model.chunked_loss == (path == "chunked")
        records = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
        losses[path] = [(r["loss"], r.get("val_loss")) for r in records]
    assert len(losses["chunked"]) == 6
    for (a, va), (b, vb) in zip(losses["chunked"], losses["plain"]):
        assert abs(a - b) <= ATOL and (va is None) == (vb is None)
        if va is not None:
            assert abs(va - vb) <= ATOL
