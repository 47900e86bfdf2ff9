"""The GPT: configuration errors, transformers interop (logits both ways), KV cache."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import transformers

from model.config import GPTConfig
from model.gpt import GPT
from model import hf
from model.hf import CheckpointError, export_hf_gpt2, load_hf_gpt2, load_state_strict

torch.manual_seed(0)


def hf_model(vocab=300, ctx=32, n_embd=48, n_layer=2, n_head=4) -> transformers.GPT2LMHeadModel:
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must be divisible by n_head \(12\)"):
        GPTConfig(n_embd=100, n_head=12)
    with pytest.raises(ValueError, match="n_lyer"):
        GPTConfig(n_lyer=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        GPTConfig.preset("gpt5")
    model = GPT(GPTConfig.preset("tiny", vocab_size=100))
    with pytest.raises(ValueError, match="longer than the context length 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_presets_and_padding():
    cfg = GPTConfig.preset("gpt2")
    assert cfg.padded_vocab_size == 50304
    model = GPT(GPTConfig.preset("tiny", vocab_size=300))
    logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape[-1] == 300  # padded rows (300..319) are never scored or sampled
    assert model.transformer.wte.weight.shape[0] == 320
    assert model.lm_head.weight is model.transformer.wte.weight


def test_hf_checkpoint_loads_with_identical_logits(tmp_path):
    ref = hf_model()
    ref.save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path).eval()
    x = torch.randint(0, 300, (3, 20))
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], ref(x).logits, atol=1e-4)


def test_export_loads_in_transformers_with_identical_logits(tmp_path, data_dir):
    ours = GPT(GPTConfig.preset("tiny", vocab_size=50257)).eval()
    export_hf_gpt2(ours, tmp_path, tokenizer_json=data_dir / "gpt2" / "tokenizer.json")
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 50257, (2, 30))
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], ref(x).logits, atol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    from tokenizer_rs import Tokenizer

    assert tok("Hello world")["input_ids"] == Tokenizer.from_file(str(data_dir / "gpt2" / "tokenizer.json")).encode("Hello world")
    # And back again: our loader reads what we exported.
    again = load_hf_gpt2(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(x)[0], ours(x)[0])


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    export_hf_gpt2(GPT(GPTConfig.preset("tiny", vocab_size=100)), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_then_disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a tensor")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf, "save_file", half_then_disk_full)
    with pytest.raises(OSError, match=r"while writing .*model\.safetensors \(is the disk full\?\)"):
        export_hf_gpt2(GPT(GPTConfig.preset("tiny", vocab_size=100, n_embd=128)), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file, nothing half-written
    assert load_hf_gpt2(tmp_path).config.n_embd == 64


def test_mismatched_checkpoint_names_tensors():
    small = GPT(GPTConfig.preset("tiny", vocab_size=100))
    wide = GPT(GPTConfig.preset("tiny", vocab_size=100, n_embd=128))
    with pytest.raises(CheckpointError, match=r"transformer\.wpe\.weight: \(64, 128\) in the checkpoint, \(64, 64\)"):
        load_state_strict(small, wide.state_dict(), "other.safetensors")
    deep = GPT(GPTConfig.preset("tiny", vocab_size=100, n_layer=3))
    with pytest.raises(CheckpointError, match=r"unexpected: transformer\.h\.2\."):
        load_state_strict(small, deep.state_dict(), "other.safetensors")


def test_kv_cache_matches_full_forward():
    model = GPT(GPTConfig.preset("tiny", vocab_size=100)).eval()
    x = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        full, _ = model(x)
        logits, _, cache = model(x[:, :5], use_cache=True)
        steps = [logits]
        for t in range(5, 12):
            logits, _, cache = model(x[:, t : t + 1], past=cache, use_cache=True)
            steps.append(logits)
        chunked, _, _ = model(x[:, 9:], past=[(k[:, :, :9], v[:, :, :9]) for k, v in cache], use_cache=True)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert torch.allclose(chunked, full[:, 9:], atol=1e-5)


def test_generation_cache_equals_no_cache_and_seeds_repeat():
    from model.generate import generate

    torch.manual_seed(1)
    model = GPT(GPTConfig.preset("tiny", vocab_size=100, context_length=16)).eval()
    prompt = [1, 2, 3]
    for kw in ({"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "seed": 7}, {"temperature": 1.0, "top_p": 0.8, "seed": 3}):
        with_cache = list(generate(model, prompt, 40, **kw))  # 43 tokens: the 16-token window slides
        without = list(generate(model, prompt, 40, use_cache=False, **kw))
        assert with_cache == without and len(with_cache) == 40
    a = list(generate(model, prompt, 20, temperature=1.0, seed=5))
    assert a == list(generate(model, prompt, 20, temperature=1.0, seed=5))
    assert a != list(generate(model, prompt, 20, temperature=1.0, seed=6))
    greedy = list(generate(model, prompt, 30, temperature=0.0))
    first_new = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    stopped = list(generate(model, prompt, 30, temperature=0.0, stop_id=greedy[first_new]))
    assert stopped == greedy[:first_new]


def test_top_k_and_top_p_restrict_choices():
    from model.generate import sample_next

    logits = torch.tensor([5.0, 4.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits.clone(), 1.0, 2, None, g) for _ in range(200)} == {0, 1}
    # p(0) ~ 0.72, p(0) + p(1) ~ 0.99: top_p 0.5 keeps only token 0.
    assert {sample_next(logits.clone(), 1.0, None, 0.5, g) for _ in range(100)} == {0}
