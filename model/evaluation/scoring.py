"""Batched log-likelihoods of continuations, as lm-eval's causal backend defines them, computed
with less work:

- the choices of one item share its context: the context runs through the model once, its
  key/value cache is copied to one row per choice, and only the choices' tokens run after it;
- items whose contexts have the same length share one forward pass (so no padding is ever
  attended to), up to `batch_size` continuations per pass;
- the LM head and log-softmax run only where a continuation token is predicted, not over the
  whole window as in lm-eval;
- bf16 autocast on CUDA (fp32 on the CPU, where the differential tests hold us to lm-eval).

An item whose context + continuation does not fit the window (`context_length + 1` tokens, as
lm-eval counts) is scored the way lm-eval scores it, left-truncated, one row per choice, and
reported as truncated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.evaluation.requests import Request
from model.gpt import GPT


@dataclass
class Scored:
    """One item's result: per choice, the summed log-likelihood and whether greedy decoding gives it."""

    loglikelihoods: list[float]
    greedy: list[bool]
    truncated: bool = False


class Scorer:
    def __init__(self, model: GPT, batch_size: int = 16, progress: Callable[[int], None] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.window = model.config.context_length
        self.vocab = model.config.vocab_size
        self.device = next(model.parameters()).device
        self.progress = progress or (lambda n: None)

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fits(self, request: Request) -> bool:
        return all(len(c) + len(k) <= self.window + 1 for c, k in zip(request.contexts, request.continuations))

    @torch.inference_mode()
    def score(self, requests: list[Request]) -> list[Scored]:
        """Every item's choices; progress is reported in continuations."""
        for i, r in enumerate(requests):
            for k in r.continuations:
                if len(k) > self.window:
                    raise ValueError(f"item {i}: a continuation of {len(k)} tokens is longer than the "
                                     f"model's {self.window}-token window")
        results: list[Scored | None] = [None] * len(requests)
        shared = [i for i, r in enumerate(requests) if r.shared and self.fits(r)]
        in_shared = set(shared)
        rest = [i for i in range(len(requests)) if i not in in_shared]
        for batch in self._shared_batches(requests, shared):
            for i, scored in zip(batch, self._score_shared([requests[i] for i in batch])):
                results[i] = scored
        rows = [(c, k) for i in rest for c, k in zip(requests[i].contexts, requests[i].continuations)]
        flat = iter(self.score_pairs(rows))
        for i in rest:
            got = [next(flat) for _ in requests[i].continuations]
            results[i] = Scored([g[0] for g in got], [g[1] for g in got], truncated=not self.fits(requests[i]))
        return results  # type: ignore[return-value]

    def _shared_batches(self, requests: list[Request], order: list[int]) -> Iterator[list[int]]:
        """Runs of items with equal context length, at most `batch_size` continuations each (one
        item at least), longest contexts first so a memory problem shows at once."""
        order = sorted(order, key=lambda i: -len(requests[i].contexts[0]))
        batch: list[int] = []
        rows = 0
        for i in order:
            n = len(requests[i].continuations)
            if batch and (len(requests[i].contexts[0]) != len(requests[batch[0]].contexts[0]) or rows + n > self.batch_size):
                yield batch
                batch, rows = [], 0
            batch.append(i)
            rows += n
        if batch:
            yield batch

    def _score_shared(self, items: list[Request]) -> list[Scored]:
        model = self.model
        context = torch.tensor([r.contexts[0] for r in items], device=self.device)
        owner = [i for i, r in enumerate(items) for _ in r.continuations]  # item of each choice row
        conts = [k for r in items for k in r.continuations]
        with self.autocast():
            hidden, cache = model.hidden_states(context, use_cache=True)
        # The context's last position predicts every choice's first token.
        states = [hidden[:, -1][torch.tensor(owner, device=self.device)]]
        targets = [k[0] for k in conts]
        token_row = list(range(len(conts)))
        longer = [j for j, k in enumerate(conts) if len(k) > 1]
        if longer:
            width = max(len(conts[j]) - 1 for j in longer)
            inputs = torch.zeros(len(longer), width, dtype=torch.long, device=self.device)
            for row, j in enumerate(longer):
                inputs[row, : len(conts[j]) - 1] = torch.tensor(conts[j][:-1])
            index = torch.tensor([owner[j] for j in longer], device=self.device)
            past = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]
            with self.autocast():
                after, _ = model.hidden_states(inputs, past=past)
            rows, cols = [], []
            for row, j in enumerate(longer):
                n = len(conts[j]) - 1
                rows += [row] * n
                cols += range(n)
                targets += conts[j][1:]
                token_row += [j] * n
            states.append(after[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)])
        logp, greedy = self._token_scores(torch.cat(states), targets)
        sums, all_greedy = _per_row(logp, greedy, token_row, len(conts))
        self.progress(len(conts))
        out, start = [], 0
        for r in items:
            n = len(r.continuations)
            out.append(Scored(sums[start:start + n], all_greedy[start:start + n]))
            start += n
        return out

    @torch.inference_mode()
    def score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context, continuation) rows scored one row each, as lm-eval scores them: the last
        `context_length + 1` tokens of context + continuation, the final one dropped as input."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        inputs = [(c + k)[-(self.window + 1):][:-1] for c, k in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = len(inputs[batch[0]])
            tokens = torch.zeros(len(batch), width, dtype=torch.long, device=self.device)
            rows, cols, targets, token_row = [], [], [], []
            for row, i in enumerate(batch):
                inp, cont = inputs[i], pairs[i][1]
                tokens[row, : len(inp)] = torch.tensor(inp)
                rows += [row] * len(cont)
                cols += range(len(inp) - len(cont), len(inp))
                targets += cont
                token_row += [row] * len(cont)
            with self.autocast():
                hidden, _ = self.model.hidden_states(tokens)
            states = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
            logp, greedy = self._token_scores(states, targets)
            sums, all_greedy = _per_row(logp, greedy, token_row, len(batch))
            for row, i in enumerate(batch):
                results[i] = (sums[row], all_greedy[row])
            self.progress(len(batch))
        return results  # type: ignore[return-value]

    def _token_scores(self, states: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each target token and whether it is the argmax, from final hidden states."""
        with self.autocast():  # the head's real rows only: the padding rows are never scored
            logits = F.linear(states, self.model.lm_head.weight[: self.vocab])
        logits = logits.float()
        target = torch.tensor(targets, device=self.device)
        logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
        return logp, logits.argmax(dim=-1) == target


def _per_row(logp: torch.Tensor, greedy: torch.Tensor, token_row: list[int], n_rows: int) -> tuple[list[float], list[bool]]:
    """Sums of token log-probabilities per row (in float32, as lm-eval sums them), and all-greedy flags."""
    index = torch.tensor(token_row, device=logp.device)
    sums = torch.zeros(n_rows, dtype=torch.float32, device=logp.device).index_add_(0, index, logp)
    misses = torch.zeros(n_rows, dtype=torch.long, device=logp.device).index_add_(0, index, (~greedy).long())
    return [float(s) for s in sums.cpu()], [bool(m == 0) for m in misses.cpu()]
