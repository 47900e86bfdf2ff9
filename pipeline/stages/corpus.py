"""Corpus: fetch every source, unpack archives, clean (Aozora markup, normalization, exact
duplicates, short documents) and write the documents to `documents.jsonl`."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.files import disk_error
from pipeline.aozora import read_aozora
from pipeline.config import CorpusConfig, SourceConfig
from pipeline.dataset_writer import DatasetConfig, iter_documents
from pipeline.download import cache_dir, fetch, local_path, unpack
from pipeline.stages.base import BuildContext, Stage

DOCUMENTS = "documents.jsonl"
ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz")
READABLE = (".txt", ".json", ".jsonl")


def local_digest(source: SourceConfig) -> str | None:
    """Content digest of a local source (file or directory), so an edited file changes the key."""
    path = local_path(source.url) if source.url is not None else None
    if path is None or not path.exists():
        return None  # remote (keyed by URL and sha256), or missing (the stage will report it)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path if path.is_dir() else path.parent).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def source_files(source: SourceConfig, downloads: Path, progress: bool) -> list[Path]:
    """The files a url source stands for. A file named directly is read whatever its suffix (JSON
    Lines for .json/.jsonl, text otherwise); directories and archives contribute their .txt, .json
    and .jsonl files, and one that has none is an error."""
    path = fetch(source.url, downloads, sha256=source.sha256, progress=progress)
    if path.is_file() and path.name.lower().endswith(ARCHIVES):
        members = unpack(path, cache_dir(source.url, downloads) / f"{path.name}.d")
        where = f"the archive {path.name}"
    elif path.is_file():
        return [path]
    else:
        members = [p for p in path.rglob("*") if p.is_file()]
        where = f"the directory {path}"
    readable = sorted(f for f in members if f.suffix.lower() in READABLE)
    if not readable:
        kinds = sorted({f.suffix or "(no suffix)" for f in members})
        raise ValueError(f"{source.url}: {where} holds no {', '.join(READABLE)} files"
                         + (f" (it has {', '.join(kinds[:8])})" if kinds else " (it is empty)"))
    return readable


def _source_documents(source: SourceConfig, downloads: Path, progress: bool) -> Iterator[str]:
    if source.hf_dataset is not None:
        import datasets  # heavy; only for sources that need it

        data = datasets.load_dataset(source.hf_dataset, source.hf_config, split=source.hf_split)
        if source.text_field not in data.column_names:
            raise ValueError(f"dataset {source.hf_dataset}: no field {source.text_field!r} (has {', '.join(data.column_names)})")
        for i, row in enumerate(data[source.text_field]):
            if not isinstance(row, str):
                raise ValueError(f"dataset {source.hf_dataset}: row {i}: field {source.text_field!r} is {type(row).__name__}, not text")
            yield row
        return
    files = source_files(source, downloads, progress)
    if source.aozora:
        for f in files:
            yield read_aozora(str(f))
        return
    yield from iter_documents(files, DatasetConfig(doc_split=source.doc_split, text_field=source.text_field))


def _name(source: SourceConfig, index: int) -> str:
    return f"corpus.sources.{index} ({source.url or source.hf_dataset})"


def run(config: CorpusConfig, upstream: list[dict[str, Any]], out_dir: Path, *, downloads: Path, progress: bool = True) -> dict[str, Any]:
    """Every source read (or refused by name: one that gives no document is an error), cleaned and
    written to documents.jsonl atomically."""
    seen: set[bytes] = set()
    stats = {"documents": 0, "characters": 0, "duplicates": 0, "too_short": 0, "sources": len(config.sources)}
    final = out_dir / DOCUMENTS
    tmp = out_dir / f".{DOCUMENTS}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for index, source in enumerate(config.sources):
                counts = {"read": 0, "kept": 0, "duplicates": 0}
                for doc in _source_documents(source, downloads, progress):
                    counts["read"] += 1
                    if config.normalizer:
                        doc = unicodedata.normalize(config.normalizer.upper(), doc)
                    if len(doc.strip()) < config.min_chars:
                        stats["too_short"] += 1
                        continue
                    if config.dedupe:
                        digest = hashlib.blake2b(doc.encode(), digest_size=16).digest()
                        if digest in seen:
                            counts["duplicates"] += 1
                            continue
                        seen.add(digest)
                    _write(out, json.dumps({"text": doc}, ensure_ascii=False) + "\n", final)
                    counts["kept"] += 1
                    stats["characters"] += len(doc)
                _account(source, index, counts)
                stats["documents"] += counts["kept"]
                stats["duplicates"] += counts["duplicates"]
            _write(out, "", final, sync=True)
        if stats["documents"] == 0:
            raise ValueError("the corpus is empty after cleaning: no document is at least min_chars "
                             f"({config.min_chars}) long")
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return stats


def _write(out, text: str, final: Path, sync: bool = False) -> None:
    """Writes to documents.jsonl's temp file; a failed write names the file (and a full disk)."""
    try:
        out.write(text)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:
        raise disk_error(e, final) from None


def _account(source: SourceConfig, index: int, counts: dict[str, int]) -> None:
    """A source that gives nothing is refused by name; one whose documents were all seen before
    (another source, the same text) is said in a warning."""
    if counts["read"] == 0:
        raise ValueError(f"{_name(source, index)}: gave no documents (empty files, or no text in the field "
                         f"{source.text_field!r})")
    if counts["kept"] == 0 and counts["duplicates"]:
        warnings.warn(f"{_name(source, index)}: all {counts['duplicates']} of its documents duplicate earlier ones "
                      "and were dropped (dedupe)", stacklevel=2)


def documents(corpus_dir: Path) -> Iterator[str]:
    with open(corpus_dir / DOCUMENTS, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def key_config(cfg) -> dict[str, Any]:
    """The corpus section, plus the content digest of every local source (an edited file rebuilds)."""
    data = cfg.corpus.model_dump(mode="json")
    for source, raw in zip(cfg.corpus.sources, data["sources"]):
        raw["content_sha256"] = local_digest(source)
    return data


STAGE = Stage("corpus", (), key_config,
              lambda ctx, out: run(ctx.config.corpus, [], out, downloads=ctx.downloads, progress=ctx.progress))
