"""A conversation with an instruction-tuned model: turns in the model's own prompt template, the
oldest turns dropped when the context window would overflow, replies streamed as text."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence

from model.config import EOT
from model.generate import generate
from model.templates import ALPACA_INPUT, ALPACA_TEMPLATE, format_prompt, template_of  # noqa: F401 (template_of re-exported)

TURN_SEPARATOR = "\n\n"


def prompt_budget(context: int, max_new_tokens: int) -> int:
    """Tokens a conversation's prompt may take: the window less room for the reply (at most half)."""
    return max(context - min(max_new_tokens, context // 2), 1)


def conversation_ids(encode: Callable[[str], list[int]], history: Sequence[tuple[str, str]], message: str,
                     template: str, input_template: str, budget: int) -> tuple[list[int], int]:
    """The prompt for `message` after the (user, reply) turns of `history`, each turn in the template:
    the newest turns that fit `budget` tokens, in order. Also the number of (oldest) turns left out.
    A message that alone exceeds the budget keeps its end."""
    current = encode(format_prompt({"instruction": message, "input": ""}, template, input_template))
    if len(current) >= budget:
        return current[-budget:], len(history)
    turns: list[list[int]] = []
    used = len(current)
    for user, reply in reversed(history):
        ids = encode(format_prompt({"instruction": user, "input": ""}, template, input_template) + reply + TURN_SEPARATOR)
        if used + len(ids) > budget:
            break
        turns.insert(0, ids)
        used += len(ids)
    return [t for ids in turns for t in ids] + current, len(history) - len(turns)


class Chat:
    def __init__(self, model, tokenizer, *, template: str = ALPACA_TEMPLATE, input_template: str = ALPACA_INPUT,
                 temperature: float = 0.7, top_k: int | None = 50, top_p: float | None = None,
                 max_new_tokens: int = 200, seed: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.template, self.input_template = template, input_template
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.eot = tokenizer.token_to_id(EOT)
        self.history: list[tuple[str, str]] = []
        self.dropped_turns = 0  # turns that no longer fit the window in the last prompt
        self.context = model.config.context_length

    def reset(self) -> None:
        self.history.clear()

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, allowed_special=set())

    def prompt_ids(self, message: str) -> list[int]:
        """Past turns (newest kept first) and the new message, leaving room for the reply."""
        ids, self.dropped_turns = conversation_ids(self._encode, self.history, message, self.template,
                                                   self.input_template, prompt_budget(self.context, self.max_new_tokens))
        return ids

    def reply(self, message: str) -> Iterator[str]:
        """Streams the reply as text (whole characters only) and records the turn when it ends."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = []
        for token in generate(self.model, self.prompt_ids(message), self.max_new_tokens, temperature=self.temperature,
                              top_k=self.top_k, top_p=self.top_p, seed=self.seed, stop_id=self.eot):
            text = decoder.decode(self.tokenizer.decode_bytes([token]))
            if text:
                pieces.append(text)
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            yield tail
        self.history.append((message, "".join(pieces).strip()))
