"""Hostile datasets: a manifest or shard header that lies, token ids beyond the vocabulary, bit
flips, a swapped tokenizer. Each is refused naming the file (and field, id or position) before
the first batch; nothing is read outside the dataset directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fault_support import edit_manifest, rewrite_header, tiny_dataset
from model import dataset as dataset_module
from model.dataset import TokenDataset, verify_once
from model.shard_format import DatasetError, read_header, write_shard


@pytest.fixture
def ds(tmp_path) -> Path:
    return tiny_dataset(tmp_path)


def first_shard(ds: Path, split: str = "train") -> Path:
    return ds / json.loads((ds / "manifest.json").read_text())["splits"][split]["shards"][0]["file"]


def test_a_manifest_entry_pointing_outside_is_refused(ds, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(first_shard(ds), other / "train-00000.safetensors")
    edit_manifest(ds, lambda m: m["splits"]["train"]["shards"][0].update(file="../other/train-00000.safetensors"))
    with pytest.raises(DatasetError, match=r"points outside the directory"):
        TokenDataset(ds, "train")
    edit_manifest(ds, lambda m: m["splits"]["train"]["shards"][0].update(file=str(other / "train-00000.safetensors")))
    with pytest.raises(DatasetError, match=r"points outside the directory"):
        TokenDataset(ds, "train")


def test_a_symlinked_shard_leading_outside_is_refused(ds, tmp_path):
    shard = first_shard(ds)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    with pytest.raises(DatasetError, match=r"a link to .*outside the directory"):
        TokenDataset(ds, "train")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["splits"]["train"]["shards"][0].update(tokens="many"), r"splits\.train\.shards\.0\.tokens"),
    (lambda m: m["splits"]["train"]["shards"][0].pop("sha256"), r"splits\.train\.shards\.0\.sha256"),
    (lambda m: m.update(dtype="float64"), r"dtype"),
    (lambda m: m["tokenizer"].update(vocab_size=-3), r"tokenizer\.vocab_size"),
    (lambda m: m.update(splits=[1, 2]), r"splits"),
])
def test_malformed_manifest_fields_are_named(ds, edit, message):
    edit_manifest(ds, edit)
    with pytest.raises(DatasetError, match=message):
        TokenDataset(ds, "train")


def test_a_manifest_that_is_not_json_names_its_line(ds):
    (ds / "manifest.json").write_text('{"format_version": 1,\n  "splits": [\n')
    with pytest.raises(DatasetError, match=r"manifest\.json: invalid JSON at line 3"):
        TokenDataset(ds, "train")


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["tokens"].update(shape=[h["tokens"]["shape"][0] + 5]), r"shape .* needs"),
    (lambda h: h["tokens"].update(dtype="F64"), r"dtype 'F64'"),
    (lambda h: h["tokens"].update(data_offsets=[0, h["tokens"]["data_offsets"][1] - h["tokens"]["data_offsets"][0]]),
     r"overlap"),
    (lambda h: h["tokens"].update(data_offsets=[5, 3]), r"data_offsets"),
    (lambda h: h.update(__metadata__={"x": 1}), r"__metadata__"),
    (lambda h: h.update(tokenz=h.pop("tokens")), r"no tensor named 'tokens'"),
])
def test_every_shard_header_field_is_checked(ds, edit, message):
    shard = first_shard(ds)
    rewrite_header(shard, edit)
    with pytest.raises(DatasetError, match=message):
        dataset_module.open_tensor(shard, "tokens")


def test_a_huge_header_length_is_refused_before_reading(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    with pytest.raises(DatasetError, match="header length"):
        read_header(path)


def test_bytes_after_the_last_tensor_are_refused(ds):
    shard = first_shard(ds)
    with open(shard, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(DatasetError, match="bytes after the last tensor"):
        read_header(shard)


def test_a_truncated_validation_shard_is_an_error(ds):
    shard = first_shard(ds, "val")
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"val-00000\.safetensors: .* bytes, the manifest says"):
        TokenDataset(ds, "val")


def test_token_ids_beyond_the_vocabulary_are_found_before_training(ds):
    shard = first_shard(ds)
    tokens = np.array(dataset_module.open_tensor(shard, "tokens"))
    tokens[17] = 65535
    write_shard(shard, tokens, np.array([0]), {"format_version": "1"})
    manifest = json.loads((ds / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][0]
    from model.files import sha256_file

    entry.update(bytes=shard.stat().st_size, sha256=sha256_file(shard))  # a consistent manifest: only the ids lie
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"train-00000\.safetensors: token id 65535 at position 17 is outside the vocabulary of 300"):
        TokenDataset(ds, "train").verify()


def test_flipped_bytes_in_the_token_data_are_found(ds):
    shard = first_shard(ds)
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256 does not match the manifest"):
        TokenDataset(ds, "train").verify()


def test_a_replaced_tokenizer_is_found(ds, tmp_path):
    (ds / "tokenizer.json").write_text((ds / "tokenizer.json").read_text().replace('"fox"', '"cat"', 1) + " ")
    with pytest.raises(DatasetError, match="sha256 differs from the tokenizer the manifest names"):
        TokenDataset(ds, "train").tokenizer_file()
    (ds / "tokenizer.json").unlink()
    with pytest.raises(DatasetError, match="no tokenizer.json beside the shards"):
        TokenDataset(ds, "train").tokenizer_file()


def test_digests_are_read_once_per_run_directory(ds, tmp_path, monkeypatch):
    hashed = []
    real = dataset_module.sha256_file
    monkeypatch.setattr(dataset_module, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    record = tmp_path / "run" / "verified.json"
    record.parent.mkdir()
    train, val = TokenDataset(ds, "train"), TokenDataset(ds, "val")
    verify_once([train, val], record)
    first = len(hashed)
    assert first == len(train.paths) + len(val.paths) and record.is_file()
    verify_once([TokenDataset(ds, "train"), TokenDataset(ds, "val")], record)  # a resume: nothing read again
    assert len(hashed) == first
    shard = first_shard(ds)
    os.utime(shard)  # touched: this one shard is checked again
    verify_once([TokenDataset(ds, "train")], record)
    assert hashed[first:] == [shard.name]
