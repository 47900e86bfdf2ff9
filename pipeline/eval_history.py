"""The evaluation history of each config name, kept in the artifact store
(`<artifacts>/history/<name>.jsonl`, one run per line, the newest last, the last N kept), so that
a scheduled run can say whether its models improved or regressed since the run before."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from model.files import write_bytes_atomic

HISTORY = "history"
MAX_LINE_BYTES = 1 << 20


def history_path(store_root: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "run"
    return Path(store_root) / HISTORY / f"{safe}.jsonl"


def read_history(store_root: Path, name: str) -> list[dict[str, Any]]:
    """Entries, oldest first; lines that are not ours (damaged, oversized) are skipped, not trusted."""
    path = history_path(store_root, name)
    if not path.is_file():
        return []
    entries = []
    with open(path, "rb") as f:
        for line in f:
            if len(line) > MAX_LINE_BYTES:
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("models"), dict):
                entries.append(entry)
    return entries


def append_history(store_root: Path, name: str, entry: dict[str, Any], keep: int) -> None:
    """Adds `entry` and keeps the newest `keep` (the file is rewritten atomically)."""
    entries = (read_history(store_root, name) + [entry])[-keep:]
    path = history_path(store_root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, [json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in entries])
