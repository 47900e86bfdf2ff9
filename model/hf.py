"""transformers interop: read a Hugging Face GPT-2 checkpoint directory, write ours as one.

HF's GPT-2 uses Conv1D layers whose weights are stored transposed relative to `nn.Linear`; its old
checkpoints also carry attention-mask buffers (`attn.bias`, `attn.masked_bias`) that are not
weights. Our embedding is padded to a multiple of 64 rows; the export trims it to the vocabulary.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.capacity import check_capacity
from model.config import EOT, TOKENIZER_FILE, GPTConfig
from model.files import read_json
from model.gpt import GPT
from model.lora import LoRALinear, merge_lora
from model.shard_format import write_atomic, write_bytes_atomic, write_json_atomic
from tokenizer_rs import Tokenizer

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
BUFFERS = (".attn.bias", ".attn.masked_bias")  # not c_attn.bias


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the tensors or fields."""


def config_from_hf(hf: Any, source: str = "config.json") -> GPTConfig:
    """Our GPTConfig from a transformers GPT-2 config.json; a missing or ill-typed field is named."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{source}: not a JSON object")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not gpt2")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{source}: activation_function {hf['activation_function']!r} is not the tanh GELU")
    fields = {}
    for ours, theirs in (("vocab_size", "vocab_size"), ("context_length", "n_positions"), ("n_layer", "n_layer"),
                         ("n_head", "n_head"), ("n_embd", "n_embd")):
        value = hf.get(theirs)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{source}: {theirs} is {value!r}, not a positive whole number")
        fields[ours] = value
    if hf.get("n_inner") not in (None, 4 * fields["n_embd"]):
        raise CheckpointError(f"{source}: n_inner {hf['n_inner']} is not 4 * n_embd")
    epsilon = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 < epsilon < 1:
        raise CheckpointError(f"{source}: layer_norm_epsilon {epsilon!r} is not a small positive number")
    try:
        return GPTConfig(**fields, layer_norm_epsilon=epsilon)
    except ValueError as e:
        raise CheckpointError(f"{source}: {str(e).splitlines()[-1].strip()}") from None


def load_hf_gpt2(directory: str | Path) -> GPT:
    """A GPT built from a transformers GPT-2 directory (config.json + model.safetensors)."""
    directory = Path(directory)
    try:
        hf_config = read_json(directory / "config.json", "transformers config")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no model.safetensors (pytorch_model.bin is not read: it needs unpickling)")
    config = config_from_hf(hf_config, str(directory / "config.json"))
    check_capacity(config, torch.device("cpu"), training=False, source=str(directory / "config.json"))
    model = GPT(config)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: not readable safetensors ({e})") from None
    state = {}
    for key, tensor in tensors.items():
        key = key.removeprefix("transformer.")
        if key.endswith(BUFFERS) or key == "lm_head.weight":
            continue  # mask buffers; the head is tied to wte
        if key.endswith(CONV1D):
            tensor = tensor.t()
        state[key if key.startswith("lm_head") else f"transformer.{key}"] = tensor
    wte = state.get("transformer.wte.weight")
    if wte is not None and wte.dim() == 2 and wte.shape[0] < model.config.padded_vocab_size:
        pad = torch.zeros(model.config.padded_vocab_size - wte.shape[0], wte.shape[1], dtype=wte.dtype)
        state["transformer.wte.weight"] = torch.cat([wte, pad])
    load_state_strict(model, state, str(weights))
    return model


def load_state_strict(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads weights, naming every missing, unexpected or mis-shaped tensor."""
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {"lm_head.weight"})
    shapes = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:8]) + (" ..." if len(shapes) > 8 else ""))
        if missing:
            parts.append("missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
        raise CheckpointError(f"{source}: does not fit this architecture ({model.config.n_layer} layers, "
                              f"n_embd {model.config.n_embd}): " + " | ".join(parts))
    model.load_state_dict(state, strict=False)


def export_hf_gpt2(model: GPT, directory: str | Path, tokenizer_json: str | Path | None = None) -> Path:
    """Writes `directory` so that `transformers.GPT2LMHeadModel.from_pretrained(directory)` loads
    it, and (with our tokenizer.json beside it) `AutoTokenizer.from_pretrained(directory)` too."""
    if model.config.labels is not None:
        raise CheckpointError("a classifier has no language-model head: only language models export to GPT2LMHeadModel")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        model = merge_lora(copy.deepcopy(model))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tensors = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied
        t = tensor.detach().cpu()
        if key == "transformer.wte.weight":
            t = t[: cfg.vocab_size]
        if key.endswith(CONV1D):
            t = t.t()
        tensors[key] = t.contiguous().clone()
    # Every file goes through temp + fsync + rename, config.json last: a directory that has a
    # config.json never has half-written weights beside it.
    write_atomic(directory / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length, "n_ctx": cfg.context_length,
        "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
        "layer_norm_epsilon": cfg.layer_norm_epsilon, "initializer_range": 0.02,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": None, "eos_token_id": None,
    }
    if tokenizer_json is not None:
        write_bytes_atomic(directory / TOKENIZER_FILE, [Path(tokenizer_json).read_bytes()])
        eot = Tokenizer.from_file(str(tokenizer_json)).token_to_id(EOT)
        hf_config["bos_token_id"] = hf_config["eos_token_id"] = eot
        special = {"eos_token": EOT, "bos_token": EOT} if eot is not None else {}
        write_json_atomic(directory / "tokenizer_config.json",
                          {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.context_length, **special})
    write_json_atomic(directory / "config.json", hf_config)
    return directory
