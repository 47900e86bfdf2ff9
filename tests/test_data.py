"""Sharded token datasets: writer (pipeline.dataset_writer), reader and samplers (model.dataset), guards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from model.dataset import RandomWindowLoader, SlidingWindowLoader, TokenDataset
from model.shard_format import DatasetError, write_shard
from pipeline import dataset_writer as shards
from pipeline.dataset_writer import DatasetConfig, build_dataset, iter_documents
from tokenizer_rs import Tokenizer

DOCS = [f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(5 + i % 17)) for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    Tokenizer.train(iter(DOCS), 400, show_progress=False).save(str(path))
    return path


def build(tokenizer_file: Path, out: Path, docs=DOCS, **cfg) -> dict:
    config = DatasetConfig(**{"shard_tokens": 500, "val_fraction": 0.2, **cfg})
    return build_dataset(iter(docs), tokenizer_file, out, config, progress=False)


def expected_stream(tokenizer_file: Path, split: str, docs=DOCS, fraction=0.2, seed=0) -> list[int]:
    tok = Tokenizer.from_file(str(tokenizer_file))
    eot = tok.token_to_id("<|endoftext|>")
    stream: list[int] = []
    for i, d in enumerate(docs):
        if shards.is_validation(i, seed, fraction) == (split == "val"):
            stream += tok.encode(d) + [eot]
    return stream


def test_shards_hold_every_document_in_order(tokenizer_file, tmp_path):
    m = build(tokenizer_file, tmp_path / "ds")
    assert m["dtype"] == "uint16" and len(m["splits"]["train"]["shards"]) > 3
    for split in ("train", "val"):
        ds = TokenDataset(tmp_path / "ds", split, verify_digests=True)
        assert ds.tokens(0, len(ds)).tolist() == expected_stream(tokenizer_file, split)
    assert 0 < m["splits"]["val"]["documents"] < m["splits"]["train"]["documents"]
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == len(DOCS)


def test_shards_are_plain_safetensors(tokenizer_file, tmp_path):
    m = build(tokenizer_file, tmp_path / "ds")
    entry = m["splits"]["train"]["shards"][1]
    path = tmp_path / "ds" / entry["file"]
    tensors = safetensors.numpy.load_file(str(path))
    assert tensors["tokens"].dtype == np.uint16 and len(tensors["tokens"]) == entry["tokens"]
    starts = tensors["doc_starts"]
    assert len(starts) == entry["documents"] and starts[0] == 0
    eot = Tokenizer.from_file(str(tokenizer_file)).token_to_id("<|endoftext|>")
    assert all(tensors["tokens"][s - 1] == eot for s in starts[1:])  # every document ends with <|endoftext|>
    with safetensors.safe_open(str(path), "numpy") as f:
        meta = f.metadata()
    assert meta["tokenizer_sha256"] == m["tokenizer"]["sha256"] and meta["shard_index"] == "1"


def test_split_is_deterministic_and_independent_of_batching(tokenizer_file, tmp_path):
    a = build(tokenizer_file, tmp_path / "a", batch_bytes=64)
    b = build(tokenizer_file, tmp_path / "b", batch_bytes=1 << 20)
    assert [s["sha256"] for s in a["splits"]["val"]["shards"]] == [s["sha256"] for s in b["splits"]["val"]["shards"]]
    assert [s["sha256"] for s in a["splits"]["train"]["shards"]] == [s["sha256"] for s in b["splits"]["train"]["shards"]]


def test_rerun_is_cached_and_other_settings_refuse(tokenizer_file, tmp_path):
    m = build(tokenizer_file, tmp_path / "ds")
    assert build(tokenizer_file, tmp_path / "ds") == m
    with pytest.raises(DatasetError, match="overwrite"):
        build(tokenizer_file, tmp_path / "ds", shard_tokens=800)


def test_killed_build_resumes_keeping_verified_shards(tokenizer_file, tmp_path, monkeypatch):
    reference = build(tokenizer_file, tmp_path / "reference")
    real_write, calls = shards.write_shard, {"n": 0}

    def dying_write(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            path.with_name(f".{path.name}.tmp-999").write_bytes(b"half a shard")  # debris of a kill
            raise KeyboardInterrupt("killed")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(shards, "write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build(tokenizer_file, tmp_path / "ds")
    kept = sorted(p.name for p in (tmp_path / "ds").glob("*.safetensors"))
    assert len(kept) == 3 and not (tmp_path / "ds" / "manifest.json").exists()
    first = (tmp_path / "ds" / kept[0]).stat().st_mtime_ns
    # Corrupt the last finished shard: it must be rebuilt, the earlier ones kept.
    victim = tmp_path / "ds" / kept[-1]
    data = bytearray(victim.read_bytes()); data[-1] ^= 0xFF; victim.write_bytes(bytes(data))

    bystander = tmp_path / "ds" / "model.safetensors"  # a user's file in the same directory
    bystander.write_bytes(b"not ours")
    monkeypatch.setattr(shards, "write_shard", real_write)
    resumed = build(tokenizer_file, tmp_path / "ds")
    assert bystander.read_bytes() == b"not ours"
    assert (tmp_path / "ds" / kept[0]).stat().st_mtime_ns == first
    assert resumed["splits"] == reference["splits"]
    assert not list((tmp_path / "ds").glob(".*tmp*")) and not (tmp_path / "ds" / "progress.json").exists()


def test_large_vocabularies_use_uint32(tmp_path):
    from tokenizer_rs import GPT2_PATTERN  # noqa: F401  (module import check)

    base = json.loads(Tokenizer.train(iter(["ab ab"]), 258, show_progress=False).to_str())
    vocab = base["model"]["vocab"]
    for i in range(70_000):
        vocab[f"<|filler{i}|>"] = len(vocab)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(base), encoding="utf-8")
    m = build_dataset(iter(["ab ab", "ba"]), path, tmp_path / "ds", DatasetConfig(val_fraction=0.0), progress=False)
    assert m["dtype"] == "uint32"
    assert TokenDataset(tmp_path / "ds").tokens(0, 3).dtype == np.uint32


def test_guards_name_the_file(tokenizer_file, tmp_path):
    build(tokenizer_file, tmp_path / "ds")
    ds = TokenDataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="embedding has 6 rows"):
        ds.check_model(vocab_size=6)
    with pytest.raises(DatasetError, match="different tokenizer"):
        ds.check_model(vocab_size=400, tokenizer_sha256="0" * 64)
    with pytest.raises(DatasetError, match="fewer than max_length"):
        ds.check_model(vocab_size=400, max_length=len(ds))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    shard = tmp_path / "ds" / manifest["splits"]["train"]["shards"][0]["file"]
    data = shard.read_bytes()

    shard.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=f"{shard.name}.*truncated"):
        TokenDataset(tmp_path / "ds")
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    TokenDataset(tmp_path / "ds")  # same size: only the digest can tell
    with pytest.raises(DatasetError, match=f"{shard.name}.*sha256"):
        TokenDataset(tmp_path / "ds", verify_digests=True)
    tokens = np.arange(manifest["splits"]["train"]["shards"][0]["tokens"] // 2, dtype=np.uint32)
    write_shard(shard, tokens, np.zeros(1, np.int64), {})
    manifest["splits"]["train"]["shards"][0]["bytes"] = shard.stat().st_size
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=f"{shard.name}.*dtype U32, expected U16"):
        TokenDataset(tmp_path / "ds")
    shard.unlink()
    with pytest.raises(DatasetError, match=f"{shard.name}.*missing"):
        TokenDataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="no manifest.json"):
        TokenDataset(tmp_path)


def gpt_dataset_v1(token_ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """GPTDatasetV1's windows (Raschka's book, chapter 2), written from its definition."""
    return [(token_ids[i : i + max_length], token_ids[i + 1 : i + max_length + 1]) for i in range(0, len(token_ids) - max_length, stride)]


@pytest.mark.parametrize("max_length,stride", [(4, 4), (8, 1), (16, 5)])
def test_sliding_windows_are_gpt_dataset_v1(tokenizer_file, tmp_path, max_length, stride):
    build(tokenizer_file, tmp_path / "ds")
    ds = TokenDataset(tmp_path / "ds")
    reference = gpt_dataset_v1(ds.tokens(0, len(ds)).tolist(), max_length, stride)
    loader = SlidingWindowLoader(ds, batch_size=3, max_length=max_length, stride=stride, drop_last=False)
    got = [(x.tolist(), y.tolist()) for xb, yb in loader for x, y in zip(xb, yb)]
    assert got == reference
    assert all(xb.dtype == torch.int64 for xb, _ in loader)


def test_ranks_see_disjoint_batches_covering_the_epoch(tokenizer_file, tmp_path):
    build(tokenizer_file, tmp_path / "ds")
    ds = TokenDataset(tmp_path / "ds")
    single = [x[:, 0].tolist() for x, _ in SlidingWindowLoader(ds, 4, 8, shuffle=True, seed=3)]
    per_rank = [[x[:, 0].tolist() for x, _ in SlidingWindowLoader(ds, 4, 8, shuffle=True, seed=3, rank=r, world_size=3)] for r in range(3)]
    merged = [b for group in zip(*per_rank) for b in group]
    assert merged == single[: len(merged)] and len(single) - len(merged) < 3


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_state_resumes_exactly(tokenizer_file, tmp_path, prefetch):
    build(tokenizer_file, tmp_path / "ds")
    ds = TokenDataset(tmp_path / "ds")
    for make in (lambda: SlidingWindowLoader(ds, 4, 8, shuffle=True, seed=1, prefetch=prefetch),
                 lambda: RandomWindowLoader(ds, 4, 8, seed=1, prefetch=prefetch)):
        full = make()
        it = iter(full)
        uninterrupted = [next(it)[0] for _ in range(7)]
        first = make()
        it = iter(first)
        for _ in range(3):
            next(it)
        state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
        resumed = make()
        resumed.load_state_dict(state)
        it = iter(resumed)
        assert all(torch.equal(next(it)[0], expected) for expected in uninterrupted[3:])


def test_sliding_loader_epochs_reshuffle(tokenizer_file, tmp_path):
    build(tokenizer_file, tmp_path / "ds")
    loader = SlidingWindowLoader(TokenDataset(tmp_path / "ds"), 4, 8, shuffle=True, seed=1)
    e0 = [x for x, _ in loader]
    e1 = [x for x, _ in loader]
    assert loader.epoch == 2 and len(e0) == len(e1)
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))


def test_jsonl_errors_name_file_and_line(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"text": "one"}\n\n{"text": "two"}\n', encoding="utf-8")
    assert list(iter_documents([good], DatasetConfig())) == ["one", "two"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "one"}\n{"body": "two"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"b\.jsonl: line 2: field 'text'"):
        list(iter_documents([bad], DatasetConfig()))


def test_cli_build_and_info(tokenizer_file, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(DOCS), encoding="utf-8")
    cmd = [sys.executable, "-m", "pipeline.cli", "data"]
    r = subprocess.run(cmd + ["build", str(corpus), "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "ds"),
                              "--doc-split", "blank_line", "--shard-tokens", "1000", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["info", str(tmp_path / "ds")], capture_output=True, text=True)
    documents = sum(int(line.split()[3].replace(",", "")) for line in r.stdout.splitlines() if line.startswith(("train", "val")))
    assert r.returncode == 0 and documents == len(DOCS)
    r = subprocess.run(cmd + ["info", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no manifest.json" in r.stderr


def llmc_reference_bin(path: Path, tokens: list[int]) -> None:
    """An llm.c file written from its documented layout (not with our writer)."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    path.write_bytes(header.tobytes() + np.array(tokens, dtype=np.uint16).tobytes())


def test_llmc_bin_import_and_export(tokenizer_file, tmp_path):
    from pipeline.llmc import export_bins, import_bins, read_bin

    tok = Tokenizer.from_file(str(tokenizer_file))
    eot = tok.token_to_id("<|endoftext|>")
    docs = [tok.encode(d) for d in DOCS[:40]]
    stream = [t for d in docs for t in [eot] + d]  # llm.c puts <|endoftext|> before each document
    llmc_reference_bin(tmp_path / "fineweb_train_000001.bin", stream[:500])
    llmc_reference_bin(tmp_path / "fineweb_val_000000.bin", stream[500:])
    m = import_bins([tmp_path / "fineweb_val_000000.bin", tmp_path / "fineweb_train_000001.bin"], tokenizer_file, tmp_path / "ds")
    assert TokenDataset(tmp_path / "ds", "train", verify_digests=True).tokens(0, 500).tolist() == stream[:500]
    assert TokenDataset(tmp_path / "ds", "val").tokens(0, len(stream) - 500).tolist() == stream[500:]
    assert m["splits"]["train"]["documents"] == stream[:500].count(eot)
    written = export_bins(tmp_path / "ds", tmp_path / "out")
    assert [p.name for p in written] == ["hataori_train_000000.bin", "hataori_val_000000.bin"]
    assert written[0].read_bytes() == (tmp_path / "fineweb_train_000001.bin").read_bytes()
    assert read_bin(written[1]).tolist() == stream[500:]

    # An earlier export with more shards: refused without overwrite; with it, no stale shard is left
    # for a reader that globs hataori_train_*.bin to mix in.
    stale = tmp_path / "out" / "hataori_train_000007.bin"
    stale.write_bytes(written[0].read_bytes())
    with pytest.raises(DatasetError, match=r"out: already holds hataori_train_000000.bin, hataori_train_000007.bin, "
                                           r"hataori_val_000000.bin \(pass --overwrite"):
        export_bins(tmp_path / "ds", tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    again = export_bins(tmp_path / "ds", tmp_path / "out", overwrite=True)
    assert again == written and not stale.exists() and (tmp_path / "out" / "notes.txt").exists()


def test_llmc_bin_errors_name_the_file(tokenizer_file, tmp_path):
    from pipeline.llmc import import_bins, read_bin

    short = tmp_path / "train_a.bin"
    llmc_reference_bin(short, [1, 2, 3])
    short.write_bytes(short.read_bytes()[:-2])
    with pytest.raises(DatasetError, match=r"train_a\.bin: .*header promises 3 tokens"):
        read_bin(short)
    big = tmp_path / "train_b.bin"
    llmc_reference_bin(big, [1, 2, 60000])
    with pytest.raises(DatasetError, match=r"train_b\.bin: token id 60000 at position 2"):
        import_bins([big], tokenizer_file, tmp_path / "ds")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 2048)
    with pytest.raises(DatasetError, match=r"junk\.bin: magic 0"):
        read_bin(tmp_path / "junk.bin")
