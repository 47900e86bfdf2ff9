"""The decoding thread: one `BatchedDecoder` (model.batched), fed from a bounded queue.

Requests are submitted from the web server's event loop and wait in the queue for a free row;
between two decoding steps the thread frees the rows of cancelled requests (a client that went
away, a stop string found), lets waiting requests join, then advances every active row by one
token and hands each token to its request's `sink`. torch releases the GIL inside its kernels, so
the event loop keeps serving while a step runs.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from model.batched import BatchedDecoder, Emitted, Sampling

log = logging.getLogger("hataori.api")


class QueueFull(Exception):
    pass


class EngineStopped(Exception):
    pass


@dataclass
class Job:
    """One sequence to generate. `sink` receives `Emitted` events, or an exception that ended it;
    it is called on the decoding thread and must not block."""

    prompt: list[int]
    sampling: Sampling
    sink: Callable[[Emitted | BaseException], None]
    key: int = -1


class Engine:
    def __init__(self, decoder: BatchedDecoder, max_queue: int):
        self.decoder = decoder
        self.max_queue = max_queue
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: dict[int, Job] = {}
        self._cancelled: set[int] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failed: str | None = None  # why the decoding thread stopped, if it did
        self.steps = 0  # decoding steps so far (for /health)
        self.tokens = 0  # tokens generated so far

    # ------------------------------------------------------------ called from other threads

    def submit(self, jobs: list[Job]) -> list[int]:
        """Queues the jobs (all or none); their keys. QueueFull when they would not fit."""
        with self._cond:
            if self._stopping:
                raise EngineStopped(self.failed or "the server is shutting down")
            # Jobs beyond the free rows wait; at most max_queue of them.
            free = self.decoder.max_batch - len(self._running)
            if len(self._waiting) + len(jobs) > self.max_queue + free:
                raise QueueFull(f"{len(self._running)} sequences are decoding and {len(self._waiting)} waiting "
                                f"(the queue holds {self.max_queue})")
            for job in jobs:
                job.key = next(self._ids)
                self._waiting.append(job)
            self._cond.notify()
            return [job.key for job in jobs]

    def cancel(self, keys: list[int]) -> None:
        """Drops the jobs: waiting ones at once, running ones before the next step (their rows freed)."""
        with self._cond:
            self._cancelled.update(keys)
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"active": len(self._running), "queued": len(self._waiting), "max_batch": self.decoder.max_batch,
                    "max_queue": self.max_queue, "steps": self.steps, "tokens": self.tokens}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hataori-decoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------ the decoding thread

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # a bug: say so, fail what is pending, refuse what comes
            log.exception("the decoding thread stopped")
            with self._cond:
                self._stopping = True
                self.failed = f"the decoding thread stopped: {e}"
            self._fail_all(EngineStopped(self.failed))

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._waiting or self._running or self._cancelled):
                    self._cond.wait()
                if self._stopping:
                    break
                cancelled, self._cancelled = self._cancelled, set()
                self._waiting = deque(job for job in self._waiting if job.key not in cancelled)
            for key in cancelled:
                self._finish(key)
            self._admit()
            if self._running:
                self._step()
        self._fail_all(EngineStopped("the server is shutting down"))

    def _admit(self) -> None:
        while self.decoder.free_slots:
            with self._cond:
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running[job.key] = job
            try:
                self._deliver(self.decoder.join(job.key, job.prompt, job.sampling))
            except Exception as e:  # a bad prompt that slipped past the checks: that request fails alone
                self._finish(job.key, e)

    def _step(self) -> None:
        try:
            emitted = self.decoder.step()
        except Exception as e:  # out of memory, say: every running request fails, the server goes on
            log.exception("decoding step failed")
            for key in list(self._running):
                self._finish(key, e)
            return
        self.steps += 1
        for event in emitted:
            self._deliver(event)

    def _deliver(self, event: Emitted) -> None:
        job = self._running.get(event.key)
        if job is None:
            return
        if event.token is not None:
            self.tokens += 1
        _call(job.sink, event)
        if event.finish:
            with self._cond:
                self._running.pop(event.key, None)

    def _finish(self, key: int, error: BaseException | None = None) -> None:
        self.decoder.leave(key)
        with self._cond:
            job = self._running.pop(key, None)
        if job is not None and error is not None:
            _call(job.sink, error)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            jobs = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
            self._running.clear()
        for job in jobs:
            self.decoder.leave(job.key)
            _call(job.sink, error)


def _call(sink: Callable, item) -> None:
    try:
        sink(item)
    except Exception:  # a sink whose event loop has closed: nothing to tell
        log.debug("a request's sink failed", exc_info=True)
