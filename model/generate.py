"""Text generation: greedy, temperature, top-k and top-p sampling, with a KV cache."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from model.gpt import GPT


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> int:
    """One token from the last position's logits (1-D)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the smallest set reaching top_p
        logits[order[drop]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(model: GPT, prompt: list[int], max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_id: int | None = None, use_cache: bool = True) -> Iterator[int]:
    """Yields new token ids one at a time (so callers can stream), stopping at `stop_id`.

    The same seed gives the same tokens. With the cache, each step feeds only the new token; when the
    context window is full, the window slides and the cache is rebuilt from the last tokens.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    ctx = model.config.context_length
    tokens = list(prompt)
    cache = None
    for _ in range(max_new_tokens):
        if use_cache and cache is not None and len(tokens) <= ctx:
            logits, _, cache = model(torch.tensor([tokens[-1:]], device=device), past=cache, use_cache=True)
        else:
            window = torch.tensor([tokens[-ctx:]], device=device)
            if use_cache:
                logits, _, cache = model(window, use_cache=True)
            else:
                logits, _ = model(window)
        nxt = sample_next(logits[0, -1].cpu(), temperature, top_k, top_p, generator)
        if stop_id is not None and nxt == stop_id:
            return
        tokens.append(nxt)
        if use_cache and cache is not None and len(tokens) > ctx:
            cache = None  # the window slides: rebuild from the last ctx tokens next step
        yield nxt
