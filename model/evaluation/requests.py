"""From text to token requests, exactly as lm-eval's causal backend forms them (TemplateLM
`loglikelihood` and `_encode_pair`):

- trailing white space of the context moves to the front of the continuation;
- context + continuation is encoded as one string and the continuation is what follows the
  context's own encoding (so a token that spans the boundary is counted in the continuation);
- an empty context becomes the prefix token (<|endoftext|>), unless the continuation already
  starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass


class RequestError(ValueError):
    """A context/continuation pair that leaves nothing to score."""


@dataclass
class Request:
    """One item: each choice's context and continuation tokens. The contexts are one and the same
    except, rarely, with an empty context (a continuation that starts with the prefix token)."""

    contexts: list[list[int]]
    continuations: list[list[int]]

    @property
    def shared(self) -> bool:
        return all(c == self.contexts[0] for c in self.contexts[1:])


def split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def encode_requests(tokenizer, pairs: list[tuple[str, list[str]]], prefix_id: int | None) -> list[Request]:
    """Requests for (context, continuations) pairs. A continuation that encodes to nothing raises
    RequestError with the pair's index."""
    moved = [[split_trailing_space(ctx, cont) for cont in conts] if ctx else None for ctx, conts in pairs]
    # Encode in two batched calls: every (moved) context once per distinct text, every whole string.
    contexts = sorted({c for group in moved if group for c, _ in group})
    context_ids = dict(zip(contexts, tokenizer.encode_batch(contexts))) if contexts else {}
    wholes = [c + k for group in moved if group for c, k in group]
    whole_ids = iter(tokenizer.encode_batch(wholes)) if wholes else iter(())
    out = []
    for index, ((ctx, conts), group) in enumerate(zip(pairs, moved)):
        if group is None:  # empty context
            encoded = [_empty_context(tokenizer, cont, prefix_id, index) for cont in conts]
        else:
            encoded = []
            for c, _ in group:
                ids = context_ids[c]
                encoded.append((ids, next(whole_ids)[len(ids):]))
        for _, cont in encoded:
            if not cont:
                raise RequestError(f"item {index}: a continuation encodes to no tokens after its context")
        out.append(Request([list(c) for c, _ in encoded], [list(k) for _, k in encoded]))
    return out


def _empty_context(tokenizer, continuation: str, prefix_id: int | None, index: int) -> tuple[list[int], list[int]]:
    ids = tokenizer.encode(continuation)
    if prefix_id is None:
        raise RequestError(f"item {index}: an empty context needs the tokenizer's <|endoftext|> token as a prefix, and it has none")
    if ids and ids[0] == prefix_id:
        return ids[:1], ids[1:]
    return [prefix_id], ids
