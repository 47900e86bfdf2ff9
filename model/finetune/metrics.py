"""Scores for fine-tuned models: exact match and ROUGE-L for generated text; accuracy, macro-F1 and a
confusion matrix for classifiers."""

from __future__ import annotations

import re
import unicodedata

# Words of Latin letters/digits, and every other visible character on its own: English is scored by
# words, Japanese (no spaces) by characters.
_UNITS = re.compile(r"[0-9a-z]+|[^\s0-9a-z]")


def text_units(text: str) -> list[str]:
    return _UNITS.findall(unicodedata.normalize("NFKC", text).casefold())


def normalize_answer(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of `text_units`)."""
    a, b = text_units(prediction), text_units(reference)
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def classification_scores(predicted: list[int], actual: list[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1 (over every label) and the confusion matrix (rows: actual, columns: predicted)."""
    k = len(labels)
    matrix = [[0] * k for _ in range(k)]
    for p, a in zip(predicted, actual):
        matrix[a][p] += 1
    n = len(actual)
    f1s = []
    for c in range(k):
        tp = matrix[c][c]
        fp = sum(matrix[r][c] for r in range(k)) - tp
        fn = sum(matrix[c]) - tp
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"n": n, "accuracy": sum(matrix[c][c] for c in range(k)) / n if n else 0.0,
            "macro_f1": sum(f1s) / k, "f1": dict(zip(labels, f1s)), "labels": labels, "confusion": matrix}


def format_confusion(scores: dict) -> str:
    labels = scores["labels"]
    corner = "actual \\ predicted"
    first = max(len(corner), *(len(x) for x in labels)) + 2
    width = max(8, *(len(x) for x in labels)) + 2
    lines = [corner.ljust(first) + "".join(x.rjust(width) for x in labels)]
    for name, row in zip(labels, scores["confusion"]):
        lines.append(name.ljust(first) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
