"""Reading token datasets: memory-mapped shards, guards, and resumable, DDP-aware batch samplers.

No Prefect here. The dataset is one virtual stream of tokens (the shards of a split, in order);
samplers draw (input, target) windows from it, targets shifted by one token.

- `SlidingWindowLoader`: the semantics of GPTDatasetV1 (chapter 2 of Raschka's "Build a Large
  Language Model (From Scratch)") (windows at 0, stride, 2*stride, ...
  while a full target fits), with batch_size, shuffle and drop_last.
- `RandomWindowLoader`: uniformly random windows for pretraining, an endless stream.

Both are deterministic given a seed, give each DDP rank disjoint batches, and expose
`state_dict()` / `load_state_dict()` so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np

from model.config import TOKENIZER_FILE
from model.files import read_json, sha256_file, write_json_atomic
from model.shard_format import DatasetError, open_tensor, read_manifest


class TokenDataset:
    """One split of a dataset directory, validated against its manifest on open."""

    def __init__(self, directory: str | Path, split: str = "train", *, verify_digests: bool = False):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.split = split
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise DatasetError(f"{self.directory}: no split {split!r} (have: {', '.join(splits) or 'none'})")
        entries = splits[split]["shards"]
        if not entries:
            raise DatasetError(f"{self.directory}: split {split!r} is empty")
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.entries = entries
        self.paths: list[Path] = []
        self.shards: list[np.ndarray] = []
        for e in entries:
            path = self.directory / e["file"]  # a plain name inside the directory (read_manifest checked)
            if not path.is_file():
                raise DatasetError(f"{path}: listed in the manifest but missing")
            if path.stat().st_size != e["bytes"]:
                raise DatasetError(f"{path}: {path.stat().st_size} bytes, the manifest says {e['bytes']} (truncated or replaced)")
            if verify_digests and sha256_file(path) != e["sha256"]:
                raise DatasetError(f"{path}: sha256 does not match the manifest (corrupted)")
            tokens = open_tensor(path, "tokens", self.dtype)
            if len(tokens) != e["tokens"]:
                raise DatasetError(f"{path}: {len(tokens)} tokens, the manifest says {e['tokens']}")
            self.paths.append(path)
            self.shards.append(tokens)
        self.bounds = np.cumsum([0] + [len(s) for s in self.shards])
        self.vocab_size: int = self.manifest["tokenizer"]["vocab_size"]
        self.tokenizer_sha256: str = self.manifest["tokenizer"]["sha256"]

    def tokenizer_file(self) -> Path:
        """The dataset's own copy of its tokenizer.json, which must be the one its manifest names."""
        path = self.directory / TOKENIZER_FILE
        if not path.is_file():
            raise DatasetError(f"{self.directory}: no {TOKENIZER_FILE} beside the shards (the manifest names tokenizer "
                               f"sha256 {self.tokenizer_sha256[:12]}...)")
        if sha256_file(path) != self.tokenizer_sha256:
            raise DatasetError(f"{path}: sha256 differs from the tokenizer the manifest names ({self.tokenizer_sha256[:12]}...): "
                               "the ids in the shards would mean other text")
        return path

    def verify(self, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checks every shard's sha256 against the manifest and every token id against the
        vocabulary. `record` holds what an earlier call verified (by path, size, modification time
        and digest); those shards are not read again. Returns the updated record."""
        record = dict(record or {})
        for path, entry, tokens in zip(self.paths, self.entries, self.shards):
            st = path.stat()
            known = record.get(str(path.resolve()))
            if known == {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry["sha256"], "vocab_size": self.vocab_size}:
                continue
            if sha256_file(path) != entry["sha256"]:
                raise DatasetError(f"{path}: sha256 does not match the manifest (corrupted)")
            if len(tokens) and int(tokens.max()) >= self.vocab_size:
                bad = int(np.argmax(tokens >= self.vocab_size))
                raise DatasetError(f"{path}: token id {int(tokens[bad])} at position {bad} is outside the vocabulary "
                                   f"of {self.vocab_size} (the manifest's tokenizer)")
            record[str(path.resolve())] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry["sha256"],
                                           "vocab_size": self.vocab_size}
        return record

    @staticmethod
    def split_sizes(directory: str | Path) -> dict[str, int]:
        """Tokens per split, from the manifest alone."""
        manifest = read_manifest(Path(directory))
        return {name: sum(e["tokens"] for e in split["shards"]) for name, split in manifest["splits"].items()}

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def tokens(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the split's stream, across shard boundaries."""
        k = int(np.searchsorted(self.bounds, start, side="right")) - 1
        local = start - int(self.bounds[k])
        shard = self.shards[k]
        if local + length <= len(shard):
            return shard[local : local + length]
        parts, need = [], length
        while need > 0:
            shard = self.shards[k]
            take = min(need, len(shard) - local)
            parts.append(shard[local : local + take])
            need -= take
            k, local = k + 1, 0
        return np.concatenate(parts)

    def check_model(self, vocab_size: int, tokenizer_sha256: str | None = None, max_length: int | None = None) -> None:
        """Refuses a dataset the model cannot read, before the first batch (not as an IndexError in torch)."""
        if self.vocab_size > vocab_size:
            raise DatasetError(
                f"{self.directory}: tokens come from a vocabulary of {self.vocab_size}, but the model's embedding has "
                f"{vocab_size} rows (ids up to {self.vocab_size - 1} would be out of range)"
            )
        if tokenizer_sha256 is not None and tokenizer_sha256 != self.tokenizer_sha256:
            raise DatasetError(
                f"{self.directory}: built with tokenizer sha256 {self.tokenizer_sha256[:12]}..., the model uses "
                f"{tokenizer_sha256[:12]}... (a different tokenizer)"
            )
        if max_length is not None and len(self) < max_length + 1:
            raise DatasetError(
                f"{self.directory}: split {self.split!r} has {len(self)} tokens, fewer than max_length + 1 = {max_length + 1}"
            )


def verify_once(datasets: list[TokenDataset], record_path: Path) -> None:
    """`TokenDataset.verify` for each dataset, remembering in `record_path` (a run directory's
    file) what was verified, so a resumed run does not hash terabytes again."""
    record: dict[str, Any] = {}
    if record_path.is_file():
        try:
            loaded = read_json(record_path, "verification record")
            record = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            record = {}  # unreadable: verify everything again
    before = dict(record)
    for dataset in datasets:
        record = dataset.verify(record)
    if record != before:
        write_json_atomic(record_path, record)


def _to_torch(inputs: np.ndarray, targets: np.ndarray, device: Any = None, pin: bool = False):
    import torch

    x = torch.from_numpy(inputs.astype(np.int64, copy=False))
    y = torch.from_numpy(targets.astype(np.int64, copy=False))
    if device is not None and torch.device(device).type == "cuda":
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if device is not None:
        return x.to(device), y.to(device)
    return x, y


class _Loader:
    """Shared machinery: window gathering, DDP rank, device transfer and optional prefetch."""

    def __init__(self, dataset: TokenDataset, batch_size: int, max_length: int, *, seed: int, rank: int, world_size: int,
                 device: Any, prefetch: int):
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size ({batch_size}) and max_length ({max_length}) must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        dataset.check_model(vocab_size=dataset.vocab_size, max_length=max_length)
        self.dataset, self.batch_size, self.max_length = dataset, batch_size, max_length
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device, self.prefetch = device, prefetch

    def _gather(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.max_length
        rows = np.empty((len(starts), n + 1), dtype=self.dataset.dtype)
        for i, s in enumerate(starts):
            rows[i] = self.dataset.tokens(int(s), n + 1)
        return rows[:, :-1], rows[:, 1:]

    def _produce(self, state: dict[str, int]) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, int]]]:
        """Batches from `state` on, each with the state after it; pure (does not touch self's state)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        missing = set(self._state) - set(state)
        if missing:
            raise ValueError(f"sampler state lacks {sorted(missing)}")
        self._state = {k: int(state[k]) for k in self._state}

    def __iter__(self):
        """Torch batches (inputs, targets) of shape (batch_size, max_length), int64.

        The state advances as batches are *consumed*, also with prefetching, so a checkpoint taken
        between steps resumes at exactly the next batch.
        """
        pin = self.device is not None and str(self.device).startswith("cuda")
        source = self._produce(dict(self._state))
        if self.prefetch <= 0:
            for x, y, after in source:
                self._state = after
                yield _to_torch(x, y, self.device, pin)
            return
        # A background thread assembles the next batches while the model computes.
        q: Queue = Queue(maxsize=self.prefetch)
        done = object()
        stop = threading.Event()

        def fill() -> None:
            try:
                for item in source:
                    if stop.is_set():
                        return
                    q.put(item)
            except BaseException as e:  # surfaced in the consumer
                q.put(e)
            q.put(done)

        threading.Thread(target=fill, daemon=True).start()
        try:
            while (item := q.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                x, y, after = item
                self._state = after
                yield _to_torch(x, y, self.device, pin)
        finally:
            stop.set()


class SlidingWindowLoader(_Loader):
    """GPTDatasetV1 windows (start = 0, stride, 2*stride, ... while start + max_length < len) in batches.

    Rank r of world_size takes batches r, r + world_size, ... of the epoch's batch order, so ranks
    never share a batch. State: epoch and batches consumed within it.
    """

    def __init__(self, dataset: TokenDataset, batch_size: int, max_length: int, stride: int | None = None, *,
                 shuffle: bool = False, drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: Any = None, prefetch: int = 0):
        super().__init__(dataset, batch_size, max_length, seed=seed, rank=rank, world_size=world_size, device=device, prefetch=prefetch)
        self.stride = stride or max_length
        if self.stride < 1:
            raise ValueError(f"stride must be at least 1, not {self.stride}")
        self.starts = np.arange(0, len(dataset) - max_length, self.stride, dtype=np.int64)
        self.shuffle, self.drop_last = shuffle, drop_last
        # position: batches of the epoch's global order already passed (all ranks' turns included)
        self._state = {"epoch": 0, "position": 0}
        if len(self) == 0:
            raise DatasetError(
                f"{dataset.directory}: split {dataset.split!r} ({len(dataset)} tokens) gives rank {rank} no batch of "
                f"{batch_size} windows of {max_length} tokens (stride {self.stride}, world size {world_size}, drop_last={drop_last})"
            )

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        order = self.starts
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.starts)
        full = len(order) // self.batch_size
        cut = full * self.batch_size if self.drop_last else len(order)
        return [order[i : i + self.batch_size] for i in range(0, cut, self.batch_size)]

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        total = len(self._epoch_batches(0))
        return len(range(self.rank, total, self.world_size))

    @property
    def epoch(self) -> int:
        return self._state["epoch"]

    def _produce(self, state):
        """One epoch: iterating again continues with the next epoch."""
        epoch = state["epoch"]
        batches = self._epoch_batches(epoch)
        mine = [i for i in range(state["position"], len(batches)) if i % self.world_size == self.rank]
        for n, index in enumerate(mine):
            last = n == len(mine) - 1
            after = {"epoch": epoch + 1, "position": 0} if last else {"epoch": epoch, "position": index + 1}
            yield (*self._gather(batches[index]), after)


class RandomWindowLoader(_Loader):
    """An endless stream of batches of uniformly random windows.

    Batch k of rank r is drawn from a generator seeded by (seed, k, r), so any step can be
    reproduced from the step number alone: the state is just how many batches were drawn.
    """

    def __init__(self, dataset: TokenDataset, batch_size: int, max_length: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: Any = None, prefetch: int = 0):
        super().__init__(dataset, batch_size, max_length, seed=seed, rank=rank, world_size=world_size, device=device, prefetch=prefetch)
        self._state = {"step": 0}
        self.high = len(dataset) - max_length  # exclusive bound of a window start

    @property
    def step(self) -> int:
        return self._state["step"]

    def batch_numpy(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        return self._gather(rng.integers(0, self.high, size=self.batch_size))

    def _produce(self, state):
        step = state["step"]
        while True:
            yield (*self.batch_numpy(step), {"step": step + 1})
            step += 1
