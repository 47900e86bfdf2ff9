"""The GPT (GPT-2 architecture): token + learned position embeddings, pre-LayerNorm blocks of causal
self-attention and a tanh-GELU MLP, a final LayerNorm, and an LM head tied to the token embedding.

Attention goes through `scaled_dot_product_attention` (flash attention on CUDA). `forward` can take
and return a key/value cache, so generation feeds one new token per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.chunked_loss import linear_cross_entropy
from model.config import GPTConfig

class KVBuffer:
    """One layer's keys and values in buffers allocated once for `capacity` positions: each step
    writes its new keys in place instead of concatenating (and copying) the whole past. The
    buffers take the batch, heads and dtype of the first keys written."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores (B, H, T, hd) new keys and values; returns views of everything stored so far."""
        start, stop = self.length, self.length + k.size(2)
        if stop > self.capacity:
            raise ValueError(f"the key/value cache holds {self.capacity} positions, not {stop}")
        if self.k is None or self.k.shape[:2] != k.shape[:2] or self.k.dtype != k.dtype or self.k.device != k.device:
            shape = (k.size(0), k.size(1), self.capacity, k.size(3))
            self.k = torch.empty(shape, dtype=k.dtype, device=k.device)
            self.v = torch.empty(shape, dtype=v.dtype, device=v.device)
        self.k[:, :, start:stop] = k
        self.v[:, :, start:stop] = v
        self.length = stop
        return self.k[:, :, :stop], self.v[:, :, :stop]


# A key/value cache: per layer, the past keys and values as tensors (returned by forward with
# use_cache, then concatenated step by step) or a preallocated KVBuffer (GPT.new_kv_cache).
KVCache = list[tuple[torch.Tensor, torch.Tensor]] | list[KVBuffer]


def _past_length(past) -> int:
    if not past:
        return 0
    return past.length if isinstance(past, KVBuffer) else past[0].size(2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | KVBuffer | None = None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        cached = _past_length(past)
        if isinstance(past, KVBuffer):
            k, v = past.append(k, v)
        elif past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # With a cache, the T new queries sit at the end of the sequence: each sees every cached
        # key plus the new keys up to itself. A single new token (the usual case) sees everything.
        if cached == 0 or T == 1:
            mask, causal = None, cached == 0
        else:
            total = k.size(2)
            mask = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=total - T)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (past if isinstance(past, KVBuffer) else (k, v))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, past=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.context_length, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        # How forward(idx, targets) scores: True = model.chunked_loss (the head and the loss over
        # chunks of tokens, the full logits never held; faster and far smaller), False = the plain
        # logits + F.cross_entropy. The training loop sets it from LoopConfig.loss. Not saved.
        self.chunked_loss = True
        self.loss_chunk_rows: int | None = None  # None: model.chunked_loss's default for the device
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden_states(self, idx: torch.Tensor, past: KVCache | None = None, use_cache: bool = False):
        """The trunk: final-LayerNorm hidden states (B, T, n_embd) and, with `use_cache`, the cache."""
        B, T = idx.shape
        start = _past_length(past[0]) if past else 0
        if start + T > self.config.context_length:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context length {self.config.context_length}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        presents: KVCache = []
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, past[i] if past else None)
            if use_cache:
                presents.append(present)
        return self.transformer.ln_f(x), presents

    def new_kv_cache(self) -> list[KVBuffer]:
        """An empty preallocated cache of `context_length` positions, for `forward(past=...)`."""
        return [KVBuffer(self.config.context_length) for _ in self.transformer.h]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                past: KVCache | None = None, use_cache: bool = False, last_only: bool = False):
        """(logits, loss): logits over the real vocabulary (the padding rows are never scored) and,
        with `targets`, the mean cross-entropy (targets of -100 are ignored). With `targets` and
        `chunked_loss` (the default) the logits are never materialised and come back as None.
        With `use_cache`, also the key/value cache; with `last_only`, the last position's logits
        only (all that sampling needs)."""
        x, presents = self.hidden_states(idx, past, use_cache)
        if last_only:
            x = x[:, -1:]
        if targets is not None and self.chunked_loss:
            logits = None
            loss = linear_cross_entropy(x, self.lm_head.weight, targets, self.config.vocab_size, self.loss_chunk_rows)
        else:
            logits = self.logits(x)
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return (logits, loss, presents) if use_cache else (logits, loss)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head over the real vocabulary: the first vocab_size rows of the tied weight, so the
        result is contiguous (slicing padded logits afterwards costs a copy of all of them)."""
        return F.linear(x, self.lm_head.weight[: self.config.vocab_size])

    def flops_per_token(self, context: int) -> float:
        """Training FLOPs per token (forward + backward): 6N + attention (PaLM appendix B)."""
        cfg = self.config
        return 6 * self.num_parameters() + 12 * cfg.n_layer * cfg.n_embd * context
