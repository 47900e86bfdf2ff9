"""Batched decoding: many independent generations advanced together, one token each per step.

`BatchedDecoder` holds a key/value cache of fixed size (max_batch rows x the context window) for a
`GPT`. A request joins between steps (its prompt is run through the model alone, exactly as
`model.generate` does, and its cache copied into a free row), every `step()` feeds each active
row's last token at that row's own position, with a key mask hiding the other rows' longer pasts,
and a row leaves when it stops, runs out of tokens or is dropped by the caller. Active rows are
kept in the first rows of the cache (a leaving row's place is filled by the last one), so a step
works on a view of the cache, never a copy.

Each row has its own sampling settings and its own `torch.Generator`, drawn from in the same order
as `model.generate` draws from its own, through the same `sample_next`: a seed gives the same
tokens whether the request runs alone or beside others, and the same tokens as `hataori generate`.
("Same" up to float rounding: a batch multiplies matrices of another shape than a lone request, so
logits can differ in the last bits, which changes a token only where two candidates tie that
closely.) No scheduler here: the caller decides who joins and when.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.generate import sample_next
from model.gpt import GPT

STOP = "stop"  # the row sampled one of its stop ids
LENGTH = "length"  # the row produced max_new_tokens, or filled the context window


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens (`model.generate`'s arguments)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")


@dataclass
class Emitted:
    """What one row did in a join or a step: a new token (None when it sampled a stop id) and,
    when the row has just finished (and left), why."""

    key: Hashable
    token: int | None
    finish: str | None = None


@dataclass
class _Row:
    key: Hashable
    sampling: Sampling
    generator: torch.Generator | None
    length: int  # prompt + tokens produced; the cache holds all but the last, which is fed next
    last: int = -1  # the token to feed next (at position length - 1)
    produced: int = 0
    tokens: list[int] = field(default_factory=list)


class BatchedDecoder:
    def __init__(self, model: GPT, max_batch: int):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        cfg = model.config
        if getattr(cfg, "labels", None) is not None:
            raise ValueError("a classifier has no language-model head to decode with")
        self.model = model.eval()
        self.max_batch = max_batch
        self.context = cfg.context_length
        param = next(model.parameters())
        self.device = param.device
        head_dim = cfg.n_embd // cfg.n_head
        shape = (max_batch, cfg.n_head, self.context, head_dim)
        # Allocated once: memory stays flat however many requests come and go.
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=self.device) for _ in range(cfg.n_layer)]
        self.values = [torch.zeros(shape, dtype=param.dtype, device=self.device) for _ in range(cfg.n_layer)]
        self.rows: list[_Row] = []

    # ------------------------------------------------------------------ membership

    @property
    def free_slots(self) -> int:
        return self.max_batch - len(self.rows)

    @property
    def active(self) -> list[Hashable]:
        return [row.key for row in self.rows]

    def __contains__(self, key: Hashable) -> bool:
        return any(row.key == key for row in self.rows)

    @torch.no_grad()
    def join(self, key: Hashable, prompt: list[int], sampling: Sampling) -> Emitted:
        """Runs the prompt, samples the first token and (unless that finished it) takes a row."""
        if not self.free_slots:
            raise RuntimeError("no free row: wait for one to leave")
        if key in self:
            raise ValueError(f"request {key!r} is already decoding")
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(prompt) > self.context:
            raise ValueError(f"a prompt of {len(prompt)} tokens is longer than the {self.context}-token context")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")
        # As model.generate: the whole prompt through the model with the cache on, the last logits sampled.
        logits, _, cache = self.model(torch.tensor([prompt], device=self.device), use_cache=True)
        slot = len(self.rows)
        for layer, (k, v) in enumerate(cache):
            self.keys[layer][slot, :, : len(prompt)] = k[0]
            self.values[layer][slot, :, : len(prompt)] = v[0]
        row = _Row(key, sampling, _generator(sampling.seed), length=len(prompt))
        self.rows.append(row)
        emitted = self._advance(row, logits[0, -1].cpu())
        if emitted.finish:
            self.leave(key)
        return emitted

    def leave(self, key: Hashable) -> bool:
        """Frees the row of `key` (a no-op when it is not decoding); True when one was freed."""
        index = next((i for i, row in enumerate(self.rows) if row.key == key), None)
        if index is None:
            return False
        last = len(self.rows) - 1
        if index != last:  # keep the active rows first: the last one moves into the hole
            moved = self.rows[last]
            for cache in (*self.keys, *self.values):
                cache[index, :, : moved.length - 1] = cache[last, :, : moved.length - 1]
            self.rows[index] = moved
        self.rows.pop()
        return True

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def step(self) -> list[Emitted]:
        """Feeds every active row its last token and samples the next; finished rows leave."""
        if not self.rows:
            return []
        logits = self._forward_last_tokens().cpu()
        emitted = [self._advance(row, logits[i]) for i, row in enumerate(self.rows)]
        for e in emitted:
            if e.finish:
                self.leave(e.key)
        return emitted

    def _forward_last_tokens(self) -> torch.Tensor:
        """Logits (rows, vocab) for each row's last token at its own position: GPT.hidden_states
        and CausalSelfAttention with the past read from (and the new keys written to) the cache."""
        model, n = self.model, len(self.rows)
        cfg = model.config
        heads, width = cfg.n_head, cfg.n_embd
        positions = torch.tensor([row.length - 1 for row in self.rows], device=self.device)
        tokens = torch.tensor([[row.last] for row in self.rows], device=self.device)
        span = max(row.length for row in self.rows)
        # A lone row (or rows of one length) needs no mask: the lone request then computes exactly
        # what model.generate computes. Otherwise each row sees its own past only.
        if all(row.length == self.rows[0].length for row in self.rows):
            mask = None
        else:
            mask = (torch.arange(span, device=self.device)[None, :] <= positions[:, None]).view(n, 1, 1, span)
        rows = torch.arange(n, device=self.device)
        t = model.transformer
        x = t.drop(t.wte(tokens) + t.wpe(positions)[:, None, :])
        for layer, block in enumerate(t.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(width, dim=2)
            q, k, v = (z.view(n, 1, heads, width // heads).transpose(1, 2) for z in (q, k, v))
            self.keys[layer][rows, :, positions] = k[:, :, 0]
            self.values[layer][rows, :, positions] = v[:, :, 0]
            y = F.scaled_dot_product_attention(q, self.keys[layer][:n, :, :span], self.values[layer][:n, :, :span],
                                               attn_mask=mask)
            x = x + attn.resid_dropout(attn.c_proj(y.transpose(1, 2).contiguous().view(n, 1, width)))
            x = x + block.mlp(block.ln_2(x))
        return self._head(t.ln_f(x))[:, 0]

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the real vocabulary computed as GPT.forward computes them (its `logits`
        method where the model has one), so they match model.generate's."""
        head = getattr(self.model, "logits", None)
        return head(x) if callable(head) else self.model.lm_head(x)[..., : self.model.config.vocab_size]

    def _advance(self, row: _Row, logits: torch.Tensor) -> Emitted:
        """Samples the row's next token from its last logits, in model.generate's order."""
        s = row.sampling
        token = sample_next(logits, s.temperature, s.top_k, s.top_p, row.generator)
        if token in s.stop_ids:
            return Emitted(row.key, None, STOP)
        row.last = token
        row.produced += 1
        row.tokens.append(token)
        row.length += 1
        # The token just sampled is fed next step at position length - 1; past the window there is none
        # (model.generate would slide the window there).
        done = row.produced >= s.max_new_tokens or row.length > self.context
        return Emitted(row.key, token, LENGTH if done else None)


def _generator(seed: int | None) -> torch.Generator:
    """The row's own random stream: seeded as model.generate seeds it, else from the OS (never the
    global RNG, which other rows and threads share)."""
    return torch.Generator(device="cpu").manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
