"""Requests to token ids. A completion prompt is encoded as `hataori generate` encodes it (special
tokens recognised); a chat is rendered in the checkpoint's own instruction template, turn by turn,
as `hataori chat` renders it (model.chat.conversation_ids: the oldest turns dropped when the
window would overflow), with user text never read as special tokens."""

from __future__ import annotations

from dataclasses import dataclass

from model.chat import TURN_SEPARATOR, conversation_ids, prompt_budget
from model.templates import format_prompt
from pipeline.api.errors import APIError
from pipeline.api.schemas import ChatMessage, CompletionRequest


@dataclass(frozen=True)
class Template:
    """An instruction template: the prompt format and its input block (model.templates)."""

    prompt: str
    input: str


@dataclass
class ChatPrompt:
    ids: list[int]
    dropped_turns: int


def completion_prompts(request: CompletionRequest, tokenizer, vocab_size: int, context: int) -> list[list[int]]:
    """One list of ids per prompt of the request; a 400 naming the prompt that cannot be served."""
    prompt = request.prompt
    if isinstance(prompt, str):
        prompts = [tokenizer.encode(prompt)]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [tokenizer.encode(p) for p in prompt]
    elif all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]
    else:
        prompts = [list(p) for p in prompt]
    for i, ids in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt.{i}"
        if not ids:
            raise APIError(400, f"{where}: the prompt encodes to no tokens", param="prompt")
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise APIError(400, f"{where}: token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                           param="prompt")
        check_fits(len(ids), context, where)
    return prompts


def check_fits(prompt_tokens: int, context: int, where: str = "prompt") -> None:
    if prompt_tokens > context:
        raise APIError(400, f"{where}: {prompt_tokens} tokens is longer than the model's context of {context} tokens",
                       param="prompt" if where.startswith("prompt") else "messages", code="context_length_exceeded")


def chat_prompt(messages: list[ChatMessage], tokenizer, template: Template, context: int,
                reply_tokens: int) -> ChatPrompt:
    """The conversation in the template. System (and developer) messages open the prompt as a
    paragraph and are always kept; the other turns are (user, assistant) pairs, oldest dropped
    first; the last user message must fit with room left for the reply."""

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, allowed_special=set())

    preamble_text = TURN_SEPARATOR.join(m.text for m in messages if m.role in ("system", "developer"))
    preamble = encode(preamble_text + TURN_SEPARATOR) if preamble_text else []
    history: list[tuple[str, str]] = []
    pending_user: str | None = None
    for message in messages[:-1]:
        if message.role == "user":
            if pending_user is not None:  # two user messages in a row: the first got no reply
                history.append((pending_user, ""))
            pending_user = message.text
        elif message.role == "assistant":
            history.append((pending_user or "", message.text))
            pending_user = None
    if pending_user is not None:
        history.append((pending_user, ""))
    budget = prompt_budget(context, reply_tokens)
    last = messages[-1].text
    needed = len(preamble) + len(encode(format_prompt({"instruction": last, "input": ""}, template.prompt,
                                                      template.input)))
    if needed > budget:
        raise APIError(400, f"messages: the system messages and the last user message take {needed} tokens; the "
                            f"model's context of {context} tokens holds at most {budget} with room for the reply",
                       param="messages", code="context_length_exceeded")
    ids, dropped = conversation_ids(encode, history, last, template.prompt, template.input, budget - len(preamble))
    return ChatPrompt(preamble + ids, dropped)
