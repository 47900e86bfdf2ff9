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

    The same seed gives the same tokens. With the cache (preallocated for the context window, so a
    step writes its keys in place rather than copying the past), each step feeds only the new token;
    when the context window is full, the window slides and the cache is refilled from the last
    tokens. Only the last position's logits are computed. Greedy decoding picks the token on the
    model's device, so only the chosen id crosses to the host.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    ctx = model.config.context_length
    tokens = list(prompt)
    cache = model.new_kv_cache() if use_cache else None
    for _ in range(max_new_tokens):
        if cache is not None and cache[0].length > 0:
            logits, _, _ = model(torch.tensor([tokens[-1:]], device=device), past=cache, use_cache=True, last_only=True)
        else:
            window = torch.tensor([tokens[-ctx:]], device=device)
            if cache is not None:
                logits, _, _ = model(window, past=cache, use_cache=True, last_only=True)
            else:
                logits, _ = model(window, last_only=True)
        last = logits[0, -1]
        if temperature <= 0:
            nxt = int(torch.argmax(last))
        else:
            nxt = sample_next(last.cpu(), temperature, top_k, top_p, generator)
        if stop_id is not None and nxt == stop_id:
            return
        tokens.append(nxt)
        if cache is not None and len(tokens) > ctx:
            for layer in cache:  # the window slides: refill the buffers from the last ctx tokens next step
                layer.length = 0
        yield nxt
