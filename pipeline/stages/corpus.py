"""Corpus: fetch every source, unpack archives, clean (Aozora markup, normalization, exact
duplicates, short documents) and write the documents to `documents.jsonl`."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import CorpusConfig, SourceConfig
from pipeline.dataset_writer import DatasetConfig, expand_inputs, iter_documents
from pipeline.download import fetch, unpack
from pipeline.stages.base import BuildContext, Stage

DOCUMENTS = "documents.jsonl"
ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz")


def local_digest(source: SourceConfig) -> str | None:
    """Content digest of a local source (file or directory), so an edited file changes the key."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(source.url or "")
    if source.url is None or parsed.scheme not in ("", "file"):
        return None
    path = Path(url2pathname(parsed.path) if parsed.scheme == "file" else source.url)
    if not path.exists():
        return None  # the stage will report it
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path if path.is_dir() else path.parent).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _source_documents(source: SourceConfig, downloads: Path, progress: bool) -> Iterator[str]:
    if source.hf_dataset is not None:
        import datasets

        data = datasets.load_dataset(source.hf_dataset, source.hf_config, split=source.hf_split)
        if source.text_field not in data.column_names:
            raise ValueError(f"dataset {source.hf_dataset}: no field {source.text_field!r} (has {', '.join(data.column_names)})")
        yield from (r for r in data[source.text_field] if isinstance(r, str))
        return
    path = fetch(source.url, downloads, sha256=source.sha256, progress=progress)
    if path.is_file() and path.name.lower().endswith(ARCHIVES):
        target = downloads / f"{path.name}.d"
        files = unpack(path, target)
    else:
        files = expand_inputs([path])
    if source.aozora:
        from pipeline.aozora import read_aozora

        for f in sorted(files):
            if f.suffix in (".txt", ""):
                yield read_aozora(str(f))
        return
    docs_config = DatasetConfig(doc_split=source.doc_split, text_field=source.text_field)
    yield from iter_documents(sorted(f for f in files if f.suffix in (".txt", ".jsonl", ".json")), docs_config)


def run(config: CorpusConfig, upstream: list[dict[str, Any]], out_dir: Path, *, downloads: Path, progress: bool = True) -> dict[str, Any]:
    seen: set[bytes] = set()
    stats = {"documents": 0, "characters": 0, "duplicates": 0, "too_short": 0, "sources": len(config.sources)}
    tmp = out_dir / f".{DOCUMENTS}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as out:
        for source in config.sources:
            for doc in _source_documents(source, downloads, progress):
                if config.normalizer:
                    doc = unicodedata.normalize(config.normalizer.upper(), doc)
                if len(doc.strip()) < config.min_chars:
                    stats["too_short"] += 1
                    continue
                if config.dedupe:
                    digest = hashlib.blake2b(doc.encode(), digest_size=16).digest()
                    if digest in seen:
                        stats["duplicates"] += 1
                        continue
                    seen.add(digest)
                out.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                stats["documents"] += 1
                stats["characters"] += len(doc)
        out.flush()
        os.fsync(out.fileno())
    if stats["documents"] == 0:
        tmp.unlink()
        raise ValueError("the corpus is empty after cleaning: no documents from any source")
    tmp.replace(out_dir / DOCUMENTS)
    return stats


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
