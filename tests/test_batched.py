"""model.batched.BatchedDecoder against model.generate: requests of different lengths and sampling
settings joining and leaving a running batch produce, row by row, the tokens `generate` gives
each alone (greedy, temperature, top-k, top-p, seeds, stop ids, the end of the window)."""

from __future__ import annotations

import random

import pytest
import torch

from model.batched import LENGTH, STOP, BatchedDecoder, Sampling
from model.config import GPTConfig
from model.generate import generate
from model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB, STOP_ID = 300, 7


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny", vocab_size=VOCAB, context_length=48)).eval()


def alone(model: GPT, prompt: list[int], s: Sampling) -> list[int]:
    """What generate gives, up to the end of the window (where it would slide and the decoder stops)."""
    room = model.config.context_length + 1 - len(prompt)
    return list(generate(model, prompt, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                         seed=s.seed, stop_id=next(iter(s.stop_ids), None)))[:room]


def run_batched(decoder: BatchedDecoder, requests: list[tuple[list[int], Sampling]], stagger: int = 0,
                drop: dict[int, int] | None = None) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Requests join as rows free up (every `stagger` steps at most one, when > 0); `drop[i] = n`
    makes request i leave after n tokens, as a client that went away."""
    drop = drop or {}
    out = {i: [] for i in range(len(requests))}
    finish: dict[int, str] = {}
    waiting = list(range(len(requests)))
    steps = 0

    def record(e) -> None:
        if e.token is not None:
            out[e.key].append(e.token)
        if e.finish:
            finish[e.key] = e.finish
        elif e.key in drop and len(out[e.key]) >= drop[e.key]:
            assert decoder.leave(e.key)
            finish[e.key] = "dropped"

    while len(finish) < len(requests):
        if waiting and decoder.free_slots and (stagger == 0 or steps % stagger == 0):
            for i in (waiting[:decoder.free_slots] if stagger == 0 else waiting[:1]):
                waiting.remove(i)
                record(decoder.join(i, *requests[i]))
        for e in decoder.step():
            record(e)
        steps += 1
        assert len(decoder.rows) <= decoder.max_batch
    assert decoder.rows == [] and decoder.free_slots == decoder.max_batch
    return out, finish


def random_requests(n: int, seed: int, context: int = 48) -> list[tuple[list[int], Sampling]]:
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        prompt = [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 30))]
        requests.append((prompt, Sampling(max_new_tokens=rng.randrange(1, 40), temperature=rng.choice([0.0, 0.7, 1.3]),
                                          top_k=rng.choice([None, 1, 20]), top_p=rng.choice([None, 0.5, 0.95]),
                                          seed=1000 + i, stop_ids=frozenset({STOP_ID}))))
    return requests


@pytest.mark.parametrize("max_batch,stagger", [(4, 0), (3, 2), (8, 1)])
def test_every_row_generates_what_generate_gives_it_alone(model, max_batch, stagger):
    requests = random_requests(14, seed=max_batch)
    out, finish = run_batched(BatchedDecoder(model, max_batch), requests, stagger)
    for i, (prompt, s) in enumerate(requests):
        expected = alone(model, prompt, s)
        assert out[i] == expected, f"request {i}"
        window_full = len(prompt) + len(expected) == model.config.context_length + 1
        assert finish[i] == (LENGTH if len(expected) == s.max_new_tokens or window_full else STOP), f"request {i}"


def test_a_seed_gives_the_same_text_alone_and_in_a_batch(model):
    requests = random_requests(6, seed=99)
    lone = {i: run_batched(BatchedDecoder(model, 1), [r])[0][0] for i, r in enumerate(requests)}
    together, _ = run_batched(BatchedDecoder(model, 6), requests)
    assert together == lone
    # Without a seed, two runs differ (the rows draw from their own fresh generators).
    free = [(p, Sampling(max_new_tokens=30, temperature=1.5)) for p, _ in requests[:2]]
    a, _ = run_batched(BatchedDecoder(model, 2), free)
    b, _ = run_batched(BatchedDecoder(model, 2), free)
    assert a != b


def test_rows_that_leave_early_do_not_disturb_the_others(model):
    requests = [(p, Sampling(max_new_tokens=30, temperature=0.0)) for p, _ in random_requests(8, seed=5)]
    out, finish = run_batched(BatchedDecoder(model, 4), requests, drop={0: 2, 2: 5, 5: 1})
    for i, (prompt, s) in enumerate(requests):
        expected = alone(model, prompt, s)
        if i in (0, 2, 5):
            assert finish[i] == "dropped" and out[i] == expected[: len(out[i])]
        else:
            assert out[i] == expected


def test_generation_ends_where_the_window_is_full(model):
    ctx = model.config.context_length
    prompt = list(range(10, 10 + ctx - 5))
    decoder = BatchedDecoder(model, 2)
    out, finish = run_batched(decoder, [(prompt, Sampling(max_new_tokens=100, temperature=0.0))])
    # Five positions are left; the token sampled after the last one is still produced.
    assert len(out[0]) == 6 and finish[0] == LENGTH
    assert out[0] == alone(model, prompt, Sampling(max_new_tokens=6, temperature=0.0))
    first = decoder.join("whole", list(range(ctx)), Sampling(max_new_tokens=10, temperature=0.0))
    assert first.token is not None and first.finish == LENGTH and decoder.rows == []


def test_bad_requests_are_refused_before_a_row_is_taken(model):
    decoder = BatchedDecoder(model, 1)
    with pytest.raises(ValueError, match="longer than the 48-token context"):
        decoder.join("a", [1] * 49, Sampling(max_new_tokens=1))
    with pytest.raises(ValueError, match=f"token id {VOCAB} is outside the vocabulary"):
        decoder.join("a", [1, VOCAB], Sampling(max_new_tokens=1))
    with pytest.raises(ValueError, match="at least one token"):
        decoder.join("a", [], Sampling(max_new_tokens=1))
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    assert decoder.free_slots == 1
    decoder.join("a", [1, 2], Sampling(max_new_tokens=5, temperature=0.0))
    with pytest.raises(RuntimeError, match="no free row"):
        decoder.join("b", [1], Sampling(max_new_tokens=5))
    assert decoder.leave("a") and not decoder.leave("a") and decoder.free_slots == 1
