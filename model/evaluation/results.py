"""What an evaluation leaves behind and how two are compared: results.json, the per-item JSONL
beside it, the terminal table, and the figures of one run against the previous one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.files import write_bytes_atomic, write_json_atomic

# Which way is better, by figure name.
HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "bits_per_byte": False, "bits_per_char": False}


def items_path(results_path: Path) -> Path:
    """The per-item JSONL beside results.json: results.json -> results.items.jsonl."""
    return results_path.with_name(f"{results_path.stem}.items.jsonl")


def write_results(path: Path, results: dict[str, Any], items: list[dict[str, Any]]) -> Path:
    """Both files, each written atomically (the items first: results.json marks a finished run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in items]
    write_bytes_atomic(items_path(path), lines)
    write_json_atomic(path, results)
    return items_path(path)


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The figures as aligned plain-text tables (tasks, then texts)."""
    lines = []
    tasks = results.get("tasks") or {}
    if tasks:
        width = max(12, *(len(n) for n in tasks))
        lines.append(f"{'task':<{width}}  {'n':>6}  {'shots':>5}  {'acc':>14}  {'acc_norm':>14}")
        for name, t in tasks.items():
            acc = f"{_fmt(t['acc'])} ±{_fmt(t.get('acc_stderr'), 3)}"
            norm = f"{_fmt(t['acc_norm'])} ±{_fmt(t.get('acc_norm_stderr'), 3)}"
            lines.append(f"{name:<{width}}  {t['n']:>6}  {t['num_fewshot']:>5}  {acc:>14}  {norm:>14}")
    texts = results.get("bpb") or {}
    if texts:
        if lines:
            lines.append("")
        width = max(12, *(len(n) for n in texts))
        lines.append(f"{'text':<{width}}  {'bytes':>10}  {'tokens':>9}  {'bits/byte':>9}  {'bits/char':>9}")
        for name, b in texts.items():
            lines.append(f"{name:<{width}}  {b['bytes']:>10,}  {b['tokens']:>9,}  {b['bits_per_byte']:>9.4f}  "
                         f"{b['bits_per_char']:>9.4f}")
    return "\n".join(lines)


def flatten(results: dict[str, Any]) -> dict[str, list]:
    """The compared figures of one results document with what they were measured on:
    {"NAME acc": [x, "n=1119 shots=0"], "FILE bits_per_byte": [y, "bytes=52311"]}."""
    out: dict[str, list] = {}
    for name, t in (results.get("tasks") or {}).items():
        for metric in ("acc", "acc_norm"):
            out[f"{name} {metric}"] = [t[metric], f"n={t['n']} shots={t['num_fewshot']}"]
    for name, b in (results.get("bpb") or {}).items():
        out[f"{name} bits_per_byte"] = [b["bits_per_byte"], f"bytes={b['bytes']}"]
    return out


def compare(before: dict[str, list], after: dict[str, list]) -> list[dict[str, Any]]:
    """Each figure measured on the same items in both: the change and whether it is for the
    better (None: no change). Figures measured on other items (another --limit, other text) are left out."""
    rows = []
    for key, (value, basis) in after.items():
        if key not in before or before[key][1] != basis:
            continue
        old = before[key][0]
        metric = key.rsplit(" ", 1)[-1]
        delta = value - old
        better = None if abs(delta) < 1e-12 else (delta > 0) == HIGHER_IS_BETTER[metric]
        rows.append({"figure": key, "before": old, "after": value, "delta": delta, "better": better})
    return rows


def verdict(rows: list[dict[str, Any]]) -> str:
    """improved (something better, nothing worse), regressed (the reverse), mixed, or unchanged."""
    up = sum(r["better"] is True for r in rows)
    down = sum(r["better"] is False for r in rows)
    if up and not down:
        return "improved"
    if down and not up:
        return "regressed"
    return "mixed" if up else "unchanged"


def describe_change(rows: list[dict[str, Any]]) -> str:
    """One line: the verdict and every figure that moved, e.g. `improved: jcqa acc 0.21 -> 0.24 (+0.030)`."""
    moved = [r for r in rows if r["better"] is not None]
    parts = [f"{r['figure']} {r['before']:.4f} -> {r['after']:.4f} ({r['delta']:+.4f})" for r in moved]
    return f"{verdict(rows)}" + (": " + "; ".join(parts) if parts else "")
