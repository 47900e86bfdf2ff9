"""Sharded datasets: build throughput against raw encode_batch, loader tokens/s against a
nanoGPT-style get_batch, memory on GBs of shards, and what verifying a 1 GB dataset costs a run.
Everything side by side in one run.

    .venv/bin/python bench/data_bench.py [--quick] [--gb 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from model.dataset import RandomWindowLoader, TokenDataset, verify_once  # noqa: E402
from model.files import sha256_file  # noqa: E402
from model.shard_format import FORMAT_VERSION, shard_name, write_json_atomic, write_shard  # noqa: E402
from pipeline.dataset_writer import DatasetConfig, build_dataset  # noqa: E402
from tokenizer_rs import Tokenizer  # noqa: E402


def documents(quick: bool) -> list[str]:
    """English books and Japanese works, split into paragraphs-ish documents (~4 KB)."""
    text = "".join(p.read_text(encoding="utf-8") for p in common.gutenberg_paths())
    ja = common.aozora_path().read_text(encoding="utf-8")
    if quick:
        text, ja = text[:600_000], ja[:300_000]
    return common.chunk_lines(text) + common.chunk_lines(ja)


def bench_build(tmp: Path, quick: bool) -> None:
    _, _, gpt2_json = common.gpt2_files()
    tok = Tokenizer.from_file(str(gpt2_json))
    docs = documents(quick)
    mb = common.nbytes(docs) / common.MB
    config = DatasetConfig(shard_tokens=250_000, val_fraction=0.01)
    counter = iter(range(1_000_000))

    def raw() -> None:
        # The same parallel encoding the writer does, returning Python lists (encode_batch).
        for i in range(0, len(docs), 2000):
            tok.encode_batch(docs[i : i + 2000])

    def build() -> None:
        build_dataset(iter(docs), gpt2_json, tmp / f"ds{next(counter)}", config, progress=False)

    t = common.interleaved({"encode_batch": raw, "build": build}, repeat=1 if quick else 3)
    best = {k: min(w for w, _ in v) for k, v in t.items()}
    common.print_table(
        ["corpus", "MB", "encode_batch MB/s", "build (encode + shards + manifest) MB/s", "build / encode_batch"],
        [["gutenberg + aozora, GPT-2 vocab, 2 threads", round(mb, 1), mb / best["encode_batch"], mb / best["build"],
          f"{best['encode_batch'] / best['build'] * 100:.0f}%"]],
        title="Building shards against raw encode_batch (best of runs, interleaved)",
        notes=["Target: build >= 80% of encode_batch. The writer uses encode_batch_flat (ids straight into a "
               "numpy buffer), so it can beat encode_batch, whose cost includes building Python int lists."],
    )


def synthetic_dataset(directory: Path, total_tokens: int, shard_tokens: int = 100_000_000) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries, left, index = [], total_tokens, 0
    while left > 0:
        n = min(shard_tokens, left)
        tokens = rng.integers(0, 50257, size=n, dtype=np.uint16)
        path = directory / shard_name("train", index)
        write_shard(path, tokens, np.zeros(1, np.int64), {"format_version": str(FORMAT_VERSION)})
        entries.append({"file": path.name, "tokens": n, "documents": 1, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        left, index = left - n, index + 1
    write_json_atomic(directory / "manifest.json", {
        "format_version": FORMAT_VERSION, "dtype": "uint16",
        "tokenizer": {"sha256": "0" * 64, "vocab_size": 50257, "eot_id": 50256},
        "splits": {"train": {"tokens": total_tokens, "documents": len(entries), "shards": entries}},
    })


def status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_loader(tmp: Path, quick: bool, gb: float) -> None:
    total = int((0.2 if quick else gb) * 1e9 / 2)
    directory = tmp / "synthetic"
    t0 = time.perf_counter()
    synthetic_dataset(directory, total)
    made = time.perf_counter() - t0
    ds = TokenDataset(directory)
    batch, ctx = 8, 1024
    ours = RandomWindowLoader(ds, batch, ctx, seed=0)
    torch_iter = iter(RandomWindowLoader(ds, batch, ctx, seed=0))
    # The nanoGPT get_batch idiom on one memory-mapped array per shard (a fair peer: same memmaps).
    import torch

    shards = ds.shards
    rng = np.random.default_rng(0)

    def nanogpt_get_batch():
        data = shards[rng.integers(len(shards))]
        ix = torch.randint(len(data) - ctx, (batch,))
        x = torch.stack([torch.from_numpy(data[i : i + ctx].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + ctx].astype(np.int64)) for i in ix])
        return x, y

    steps = 300 if quick else 3000
    fns = {
        "hataori numpy batches": lambda: [ours.batch_numpy(i) for i in range(steps)],
        "hataori torch batches": lambda: [next(torch_iter) for _ in range(steps)],
        "nanoGPT get_batch": lambda: [nanogpt_get_batch() for _ in range(steps)],
    }
    t = common.interleaved(fns, repeat=1 if quick else 3)
    tokens = steps * batch * ctx
    best = {k: min(w for w, _ in v) for k, v in t.items()}
    rows = [[k, tokens / best[k] / 1e6, best["nanoGPT get_batch"] / best[k]] for k in fns]
    common.print_table(["loader (batch 8 x 1024, random windows, one thread)", "M tokens/s", "vs nanoGPT get_batch"], rows,
                       title=f"Loader throughput on {total * 2 / 1e9:.1f} GB of uint16 shards (written in {made:.0f} s)",
                       notes=["Target: over 10M tokens/s on one core (GPT-2 124M on an H100 consumes ~0.5M tokens/s)."])
    # Read windows spread over the whole dataset and watch anonymous memory: the mapped shard pages
    # are page cache (RssFile, reclaimable), not process memory. The baseline is taken after the
    # throughput runs above, whose lists of kept batches the allocator may hold on to.
    import gc

    del fns, t
    gc.collect()
    anon0, file0 = status_mb("RssAnon"), status_mb("RssFile")
    rows = []
    for done in (20_000, 40_000, 60_000):
        for i in range(done - 20_000, done):
            ours.batch_numpy(steps + i)
        rows.append([f"after {done:,} batches ({done * batch * (ctx + 1) * 2 / 1e9:.1f} GB read)", round(anon0), round(status_mb("RssAnon")), round(status_mb("RssFile"))])
    common.print_table(["batches read", "RssAnon MB at start", "RssAnon MB now", "RssFile MB now (page cache)"], rows,
                       title=f"Memory stays flat: anonymous memory does not grow with the data read (RssFile at start {file0:.0f} MB)")


def bench_verify(tmp: Path, quick: bool, gb: float) -> None:
    """What checking a dataset costs a run: digests and the max-id scan once per run directory,
    then (a resumed run) only a stat per shard. The page cache is dropped where allowed, so the
    first pass reads from disk as a fresh run would."""
    total = int((0.2 if quick else gb) * 1e9 / 2)
    directory = tmp / "verify"
    synthetic_dataset(directory, total, shard_tokens=50_000_000)
    record = tmp / "run" / "verified.json"
    record.parent.mkdir()
    dropped = _drop_page_cache()
    t0 = time.perf_counter()
    opened = TokenDataset(directory)
    t1 = time.perf_counter()
    verify_once([opened], record)
    t2 = time.perf_counter()
    verify_once([TokenDataset(directory)], record)
    t3 = time.perf_counter()
    size = sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 1e9
    common.print_table(
        ["dataset", "open + header checks s", "first run: sha256 + max id s", "GB/s", "resumed run s"],
        [[f"{size:.2f} GB, {len(opened.shards)} shards", t1 - t0, t2 - t1, size / (t2 - t1), t3 - t2]],
        title="Verifying a dataset once per run directory (resumes only stat the shards)",
        notes=[f"page cache {'dropped before the first pass' if dropped else 'not dropped (no permission): the first pass may read from memory'}"],
    )


def _drop_page_cache() -> bool:
    try:
        import os

        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gb", type=float, default=2.0, help="size of the synthetic dataset for the loader benchmark")
    args = ap.parse_args()
    print("\n## Sharded datasets\n")
    with tempfile.TemporaryDirectory(prefix="hataori-data-bench-") as tmp:
        bench_build(Path(tmp), args.quick)
    with tempfile.TemporaryDirectory(prefix="hataori-data-bench-") as tmp:
        bench_loader(Path(tmp), args.quick, args.gb)
    with tempfile.TemporaryDirectory(prefix="hataori-data-bench-") as tmp:
        bench_verify(Path(tmp), args.quick, 1.0 if args.gb >= 1 else args.gb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
