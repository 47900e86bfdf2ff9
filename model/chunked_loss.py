"""Linear head + cross-entropy over chunks of tokens: the loss of `h @ W[:V].T` without ever holding
the (tokens x vocabulary) logits.

The plain path (`F.cross_entropy(lm_head(h), targets)`) writes N x V logits, reads them back for
the log-softmax, keeps them for the backward and writes an N x V gradient: at GPT-2's vocabulary
that is 200 KB per token in fp32, several GB per batch on a GPU and most of the step's memory
traffic on a CPU. Here the forward walks over `chunk_rows` tokens at a time: the chunk's logits,
their softmax (in place, one exp per logit), the loss, and (when a gradient is wanted) softmax minus
one-hot turned straight into the chunk's gradient with respect to h and accumulated into W's, all
in one reused buffer. The backward only scales those gradients by the incoming one. This is the
idea behind Liger Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy, written with
plain torch ops.

Conventions follow `F.cross_entropy(..., ignore_index=-100, reduction="mean")`: the mean over the
targets that are not ignored. Where every target is ignored, F.cross_entropy gives NaN (0 / 0);
this gives a loss of 0 and zero gradients, so one fully masked fine-tuning batch cannot poison
the weights.

When `weight` has padding rows past the vocabulary (GPT pads to a multiple of 64), the matmuls use
all rows, because aligned shapes are much faster (on the CPU the head's forward matmul ran about
2x faster at 50,304 columns than at 50,257), and the padded columns are set to -inf before the
softmax: they are never scored, their probability is exactly 0, and so is their gradient.

Under autocast (bf16 on CUDA, or on the CPU when asked) the matmuls run in the autocast dtype,
while the softmax, the loss and W's gradient are fp32.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100

# Logit elements per chunk (64 MB in fp32 on a CPU, 256 MB on a GPU): big enough to keep the matmuls
# efficient, a small part of a batch's logits. Each chunk also adds its gradient into the whole
# (vocabulary x width) weight gradient, so a chunk has at least 2 x width rows, or that traffic
# would outweigh the logits' (bench/loss_bench.py --sweep, BENCHMARKS.md).
CPU_CHUNK_ELEMENTS = 1 << 24
CUDA_CHUNK_ELEMENTS = 1 << 26


def default_chunk_rows(columns: int, width: int, device: torch.device) -> int:
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CPU_CHUNK_ELEMENTS
    return max(1, budget // columns, 2 * width)


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return h.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, vocab_size: int, chunk_rows: int):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = _compute_dtype(h)
        with torch.autocast(h.device.type, enabled=False):
            loss, grad_h, grad_w = _chunked(h, weight, targets, vocab_size, chunk_rows, dtype, need_h, need_w)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def _chunked(h, weight, targets, vocab_size, chunk_rows, dtype, need_h, need_w):
    """Loss and (when asked) gradients: (scalar, N x d or None, weight-shaped fp32 or None)."""
    n, columns = h.size(0), weight.size(0)
    hc, w = h.to(dtype), weight.to(dtype)
    valid = targets != IGNORE_INDEX
    safe_targets = torch.where(valid, targets, 0).unsqueeze(1)
    # Each counted row weighs 1 / (rows counted), or 0 when none are: a tensor, so no host sync.
    n_valid = valid.sum()
    scale = torch.where(n_valid > 0, 1.0 / n_valid.clamp(min=1).float(), 0.0)
    row_weight = (valid.float() * scale).unsqueeze(1)
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
    chunks = max(1, -(-n // chunk_rows))
    rows = max(1, -(-n // chunks))  # at most chunk_rows, the chunks as even as they can be
    logits = torch.empty(rows, columns, dtype=dtype, device=h.device)
    probs = logits if dtype == torch.float32 else torch.empty(rows, columns, dtype=torch.float32, device=h.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        c = stop - start
        h_chunk, t_chunk, r_chunk = hc[start:stop], safe_targets[start:stop], row_weight[start:stop]
        z, p = logits[:c], probs[:c]
        torch.mm(h_chunk, w.t(), out=z)
        if dtype != torch.float32:
            p.copy_(z)
        if columns > vocab_size:
            p[:, vocab_size:] = float("-inf")  # padding: never scored
        # log-sum-exp without a second exp pass: the largest probability is exp(m - lse), m being
        # the largest logit, so lse = m - log(max softmax). (amax is a fast vectorised read;
        # max-with-indices is not.)
        top = p.amax(dim=1, keepdim=True)
        target_logit = p.gather(1, t_chunk)
        torch.softmax(p, dim=1, out=p)
        lse = top - p.amax(dim=1, keepdim=True).log()
        loss = loss + ((lse - target_logit) * r_chunk).sum()
        if not (need_h or need_w):
            continue
        # d loss / d logits = (softmax - one_hot) * row weight; the row weight is applied to the
        # small side of each matmul (d columns) instead of to the chunk's V columns.
        p.scatter_add_(1, t_chunk, torch.full_like(r_chunk, -1.0))
        d_logits = p if dtype == torch.float32 else z.copy_(p)
        if need_h:
            if grad_h.dtype == dtype:
                torch.mm(d_logits, w, out=grad_h[start:stop])
            else:
                grad_h[start:stop] = torch.mm(d_logits, w)
            grad_h[start:stop].mul_(r_chunk.to(grad_h.dtype))
        if need_w:
            weighted = h_chunk * r_chunk.to(dtype)
            if dtype == torch.float32:
                grad_w.addmm_(d_logits.t(), weighted)
            else:
                grad_w.add_(torch.mm(d_logits.t(), weighted))
    return loss, grad_h, grad_w


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight[:vocab_size].T` against `targets` (-100 = ignored), equal to
    `F.cross_entropy(h @ weight[:vocab_size].T, targets, ignore_index=-100)` but computed `chunk_rows`
    tokens at a time. `h` is (..., d) and `targets` the matching (...); `weight` may have padding rows
    past `vocab_size` (never scored; their gradient is zero). Gradients flow to h and weight.
    """
    vocab_size = weight.size(0) if vocab_size is None else vocab_size
    if not 0 < vocab_size <= weight.size(0):
        raise ValueError(f"vocab_size {vocab_size} is not in 1..{weight.size(0)} (the weight's rows)")
    h2 = h.reshape(-1, h.size(-1))
    t1 = targets.reshape(-1)
    if t1.numel() != h2.size(0):
        raise ValueError(f"{t1.numel()} targets for {h2.size(0)} hidden states")
    rows = chunk_rows or default_chunk_rows(weight.size(0), weight.size(1), h.device)
    if rows <= 0:
        raise ValueError(f"chunk_rows must be positive, not {rows}")
    if not (torch.is_grad_enabled() and (h2.requires_grad or weight.requires_grad)):
        # Evaluation: the loss alone. (Inside autograd.Function.forward, needs_input_grad says True
        # under no_grad as well, and the gradients would be computed for nothing.)
        dtype = _compute_dtype(h2)
        with torch.autocast(h2.device.type, enabled=False):
            return _chunked(h2, weight, t1, vocab_size, rows, dtype, False, False)[0]
    return _LinearCrossEntropy.apply(h2, weight, t1, vocab_size, rows)
