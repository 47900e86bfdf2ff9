"""Shared helpers for the tokenizer benchmarks: data lookup, timing, subprocess runs, peers, tables.

Every benchmark measures hataori's tokenizer (``tokenizer_rs``) side by side with its peers in the
same run and reports ratios, because absolute timings on a small shared machine are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable

#: tiktoken's GPT-2 pattern (equivalent to HF ByteLevel's and to ``tokenizer_rs.GPT2_PATTERN``).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
MB = 1_000_000  # throughput and sizes use decimal megabytes of UTF-8


# --------------------------------------------------------------------------------------------
# data


def data_dir() -> Path:
    """The shared corpora: $HATAORI_DATA_DIR, else <repo>/../shared/data."""
    d = Path(os.environ.get("HATAORI_DATA_DIR") or (REPO.parent / "shared" / "data")).resolve()
    if not d.is_dir():
        raise SystemExit(f"data directory {d} not found (set HATAORI_DATA_DIR)")
    return d


def aozora_path() -> Path:
    return data_dir() / "aozora" / "aozora_ja.txt"


def gutenberg_paths() -> list[Path]:
    paths = sorted((data_dir() / "gutenberg").glob("*.txt"))
    if not paths:
        raise SystemExit(f"no gutenberg/*.txt under {data_dir()}")
    return paths


def gpt2_files() -> tuple[Path, Path, Path]:
    """(encoder.json, vocab.bpe, tokenizer.json) of GPT-2."""
    g = data_dir() / "gpt2"
    return g / "encoder.json", g / "vocab.bpe", g / "tokenizer.json"


def chunk_lines(text: str, target_bytes: int = 4096) -> list[str]:
    """Splits text into documents of about ``target_bytes`` UTF-8 bytes, at line ends.

    The chunks concatenate back to ``text`` exactly (each keeps its newlines).
    """
    docs: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        cur.append(line)
        size += len(line.encode("utf-8"))
        if size >= target_bytes:
            docs.append("".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("".join(cur))
    return docs


def utf8_prefix(text: str, nbytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding has at most ``nbytes`` bytes."""
    return text.encode("utf-8")[:nbytes].decode("utf-8", errors="ignore")


def nbytes(texts: str | Sequence[str]) -> int:
    if isinstance(texts, str):
        return len(texts.encode("utf-8"))
    return sum(len(t.encode("utf-8")) for t in texts)


# --------------------------------------------------------------------------------------------
# timing


def timings(fn: Callable[[], Any], repeat: int, warmup: int = 0) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def best_of(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    return min(timings(fn, repeat, warmup))


def median_of(fn: Callable[[], Any], repeat: int = 3, warmup: int = 0) -> float:
    return statistics.median(timings(fn, repeat, warmup))


def interleaved(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Times several contenders round-robin (a, b, c, a, b, c, ...), so drift hits all alike.

    Returns wall seconds and CPU seconds (``process_time``) per contender and repetition as
    ``{name: [(wall, cpu), ...]}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list] = {name: [] for name in fns}
    for i in range(repeat):
        names = list(fns) if i % 2 == 0 else list(reversed(fns))
        for name in names:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            out[name].append((t1 - t0, c1 - c0))
    return out


# --------------------------------------------------------------------------------------------
# subprocesses

#: Prepended to child code: defines _report(), which prints one JSON line with the child's
#: result and peak RSS, and _rss_now_mb().
_CHILD_PRELUDE = """
import json as _json, resource as _resource, sys as _sys, time as _time
def _peak_rss_mb():
    # VmHWM is this address space's high-water mark. ru_maxrss is not used: on Linux it survives
    # execve, so a child would inherit the parent's peak as a floor.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024.0
def _report(**kw):
    kw["peak_rss_mb"] = _peak_rss_mb()
    print("@@RESULT@@" + _json.dumps(kw), flush=True)
def _rss_now_mb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _resource.getpagesize() / 1048576.0
    except OSError:
        return float("nan")
"""


class ChildTimeout(Exception):
    pass


class ChildError(RuntimeError):
    pass


def run_child(code: str, args: Sequence[str] = (), env: dict[str, str] | None = None,
              timeout: float | None = None) -> dict:
    """Runs ``code`` in a fresh ``python -c`` and returns the dict it passed to ``_report(...)``.

    The child can call ``_report(seconds=..., ...)``; ``peak_rss_mb`` (the child's own peak
    resident set, VmHWM) is added automatically, and ``_rss_now_mb()`` gives the current RSS.
    ``wall_s`` (the whole child, start-up included, seen from outside) is added too.
    Raises ChildTimeout when ``timeout`` passes (the child is killed), ChildError on failure.
    """
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(BENCH) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([PYTHON, "-c", _CHILD_PRELUDE + code, *args], env=full_env,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ChildTimeout(f"child exceeded {timeout} s") from e
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise ChildError(f"child failed (rc={p.returncode}):\n{p.stderr[-4000:]}")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT@@"):
            res = json.loads(line[len("@@RESULT@@"):])
            res["wall_s"] = wall
            return res
    raise ChildError(f"child printed no result:\nstdout:\n{p.stdout[-2000:]}\nstderr:\n{p.stderr[-2000:]}")


# --------------------------------------------------------------------------------------------
# peers


def _quiet_tiktoken_cache():
    """tiktoken caches files it reads; for local files that is pointless, so switch it off."""
    os.environ["TIKTOKEN_CACHE_DIR"] = ""


def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding, built from the local files (no network)."""
    _quiet_tiktoken_cache()
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    enc_json, vocab_bpe, _ = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(enc_json))
    return tiktoken.Encoding("gpt2-local", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256})


def tiktoken_from_ours(tok) -> tuple[Any, list[int]]:
    """A tiktoken Encoding equivalent (in rank order) to a byte-level BPE ``tokenizer_rs.Tokenizer``.

    Ranks: the 256 single-byte tokens in byte order (0..255), then the result of each merge in
    merge order, then the special tokens. tiktoken merges by the rank of the *concatenated bytes*
    rather than by the merge list, so on rare words its segmentation can differ from BPE's; callers
    should compare the outputs. Returns ``(encoding, rank_to_id)``, where ``rank_to_id[rank]`` is
    our id for that token.
    """
    _quiet_tiktoken_cache()
    import tiktoken

    specials = set(tok.special_tokens)
    byte_ids: dict[bytes, int] = {}
    for i in range(tok.vocab_size):
        b = tok.token_bytes(i)
        if len(b) == 1 and tok.id_to_token(i) not in specials:
            byte_ids[b] = i
    if len(byte_ids) != 256:
        raise ValueError(f"expected 256 single-byte tokens, found {len(byte_ids)}")
    ranks: dict[bytes, int] = {}
    rank_to_id: list[int] = []
    for b in sorted(byte_ids):
        ranks[b] = len(rank_to_id)
        rank_to_id.append(byte_ids[b])
    for a, b in tok.merges:
        i = tok.token_to_id(a + b)
        tb = tok.token_bytes(i)
        if tb in ranks:
            raise ValueError(f"merge result {tb!r} appears twice")
        ranks[tb] = len(rank_to_id)
        rank_to_id.append(i)
    special_ranks = {}
    for s in tok.special_tokens:
        special_ranks[s] = len(rank_to_id)
        rank_to_id.append(tok.token_to_id(s))
    enc = tiktoken.Encoding("hataori-trained", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                            special_tokens=special_ranks)
    return enc, rank_to_id


def hf_tokenizer(path: Path | str):
    """A Hugging Face ``tokenizers.Tokenizer`` from a tokenizer.json."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


# --------------------------------------------------------------------------------------------
# output


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
                notes: Sequence[str] = ()) -> None:
    """Prints a GitHub-flavoured markdown table (numbers right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_num(row[i]) for row in rows) if rows else False for i in range(len(headers))]
    if title:
        print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|")
    for r in cells:
        print("| " + " | ".join((c.rjust(w) if n else c.ljust(w)) for c, w, n in zip(r, widths, numeric)) + " |")
    for n in notes:
        print(f"\n{n}")
    sys.stdout.flush()


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fmt(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        if x != x:
            return "n/a"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def machine_description() -> str:
    """nproc, CPU model, memory, OS, Python and library versions, and the date."""
    lines = [f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", f"nproc: {os.cpu_count()}"]
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    lines.append(f"cpu: {model}")
    try:
        mem_kb = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
        lines.append(f"memory: {mem_kb / 1048576:.1f} GiB")
    except (OSError, StopIteration):
        pass
    lines.append(f"os: {platform.platform()}")
    lines.append(f"python: {platform.python_version()}")
    for mod in ("tokenizers", "tiktoken"):
        try:
            m = __import__(mod)
            lines.append(f"{mod}: {getattr(m, '__version__', '?')}")
        except ImportError:
            lines.append(f"{mod}: not installed")
    return "\n".join(lines)
