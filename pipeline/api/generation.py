"""One request's sequences (its choices) on the engine, seen from the event loop: text deltas as
they come, stop strings applied, finish reasons, token counts, and cancellation that frees the
rows at once (a client that leaves, a stop string found)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

from model.batched import Emitted, Sampling
from pipeline.api.engine import Engine, EngineStopped, Job, QueueFull
from pipeline.api.errors import APIError
from pipeline.api.text import TextStream


@dataclass
class Choice:
    index: int
    key: int
    text: TextStream
    tokens: int = 0
    finish: str | None = None


@dataclass
class Delta:
    index: int
    text: str
    finish: str | None


class GenerationFailed(Exception):
    pass


@dataclass
class Generation:
    engine: Engine
    tokenizer: object
    prompts: list[list[int]]  # one per choice
    samplings: list[Sampling]
    stops: list[str]
    choices: list[Choice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[int, Emitted | BaseException]] = asyncio.Queue()
        jobs = [Job(prompt, sampling, partial(self._sink, i))
                for i, (prompt, sampling) in enumerate(zip(self.prompts, self.samplings))]
        try:
            keys = self.engine.submit(jobs)
        except QueueFull as e:
            raise APIError(503, f"the server is busy: {e}; try again shortly", code="queue_full") from None
        except EngineStopped as e:
            raise APIError(503, str(e), code="shutting_down") from None
        self.choices = [Choice(i, key, TextStream(self.tokenizer, self.stops)) for i, key in enumerate(keys)]

    def _sink(self, index: int, item: Emitted | BaseException) -> None:  # on the decoding thread
        self._loop.call_soon_threadsafe(self._events.put_nowait, (index, item))

    async def deltas(self) -> AsyncIterator[Delta]:
        """Each choice's new text as it comes; a choice's last delta carries its finish reason."""
        try:
            open_choices = len(self.choices)
            while open_choices:
                index, item = await self._events.get()
                choice = self.choices[index]
                if choice.finish:
                    continue  # stopped by a stop string; the row's last events arrive late
                if isinstance(item, BaseException):
                    raise GenerationFailed(f"generation failed: {item}") from item
                text = ""
                if item.token is not None:
                    choice.tokens += 1
                    text = choice.text.feed(item.token)
                if choice.text.stopped:
                    choice.finish = "stop"
                    self.engine.cancel([choice.key])
                elif item.finish:
                    choice.finish = item.finish
                    text += choice.text.finish()
                if choice.finish:
                    open_choices -= 1
                if text or choice.finish:
                    yield Delta(index, text, choice.finish)
        finally:
            self.cancel()

    async def run(self) -> None:
        """Until every choice has finished (the non-streaming case)."""
        async for _ in self.deltas():
            pass

    def cancel(self) -> None:
        """Frees the rows (and queue places) of the choices still going; idempotent."""
        unfinished = [c.key for c in self.choices if c.finish is None]
        for c in self.choices:
            c.finish = c.finish or "cancelled"
        if unfinished:
            self.engine.cancel(unfinished)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)
