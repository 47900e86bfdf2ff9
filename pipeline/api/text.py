"""Token ids to streamed text: whole UTF-8 characters only (a token can end inside one, as in
`hataori generate`), and stop strings cut out. Text that could be the start of a stop string is
held back until the next token shows whether it is one, so a client never sees a stop string or
text after it."""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False  # a stop string was found: nothing more is emitted
        self.parts: list[str] = []

    def feed(self, token: int) -> str:
        """The text `token` completes that is safe to show now ("" if none)."""
        if self.stopped:
            return ""
        return self._release(self._held + self._decoder.decode(self.tokenizer.decode_bytes([token])), final=False)

    def finish(self) -> str:
        """What is left when generation ends: held-back text and an incomplete character (as U+FFFD)."""
        if self.stopped:
            return ""
        return self._release(self._held + self._decoder.decode(b"", final=True), final=True)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _release(self, buffer: str, final: bool) -> str:
        cut = min((i for i in (buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            out = buffer[:cut]
        else:
            keep = 0 if final else self._possible_stop_start(buffer)
            out, self._held = buffer[: len(buffer) - keep], buffer[len(buffer) - keep:]
        if out:
            self.parts.append(out)
        return out

    def _possible_stop_start(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest
