"""Shared fixtures for the test suite.

Reference implementations (Hugging Face ``tokenizers``, ``tiktoken``) are built here so every
test compares ``tokenizer_rs`` against an independent implementation, never against outputs
recorded from our own code.

Data: the shared corpora live in ``$HATAORI_DATA_DIR`` (default ``<repo>/../shared/data``).
When they are missing, data tests are skipped locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The tests train tiny models: many small ops, where two torch threads per process on a 2-core
# machine (with a second process often running beside) are many times slower than one. Set before
# torch is imported; child processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Each test process (pytest-xdist runs two) gets a Prefect home of its own, so no test reads or
# writes the user's ~/.prefect and two workers never share one SQLite database. Tests that start
# a flow set their own PREFECT_HOME in tmp_path as well.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="hataori-test-prefect-"))

# The pattern of tiktoken's gpt2 encoding (tiktoken_ext/openai_public.py).
GPT2_TIKTOKEN_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Written here independently of the Rust sources: tiktoken's cl100k_base pattern as HF spells it.
CL100K_PAT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A small multilingual text, built in, for unit tests that need a trained tokenizer.
MULTILINGUAL_TEXT = """\
The quick brown fox jumps over the lazy dog. It's 2024, isn't it? We'll see, they've said.
Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 0x1F.
    Indented line with	tabs	and   multiple   spaces.
日本語のテキストです。吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。
全角のＡＢＣと１２３、半角ｶﾀｶﾅ、そして　全角スペース。「かぎ括弧」と『二重かぎ括弧』。
Ελληνικά κείμενα και ελληνικοί αριθμοί. Русский текст с буквами ё и й.
Emoji: 😀 👍🏽 👨‍👩‍👧 🇯🇵 and combining: e\u0301 a\u0308 n\u0303.
Café naïve coöperate façade résumé — “quoted” ‘single’ … ellipsis.
<|endoftext|>Another document starts here, after the special token.
def f(x):\n    return x ** 2  # code-ish line with symbols {}[]()<>!=&&||
العربية نص قصير. हिन्दी पाठ। 한국어 텍스트입니다.
"""


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, whatever OMP_NUM_THREADS says: tiny models gain
    nothing from threads, and on a busy 2-core machine they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data_dir_path() -> Path:
    env = os.environ.get("HATAORI_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def require_data(path: Path) -> Path:
    """Return ``path`` if it exists; otherwise skip (locally) or fail (CI) with a clear reason."""
    if path.exists():
        return path
    msg = (
        f"shared data not found at {path} (set HATAORI_DATA_DIR to the folder holding "
        f"SOURCES.md, the-verdict.txt, gpt2/, gutenberg/, aozora/ ...)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = require_data(_data_dir_path())
    require_data(d / "SOURCES.md")
    return d


@pytest.fixture(scope="session")
def read_text(data_dir: Path) -> Callable[[str], str]:
    """Read a corpus file exactly (no newline translation)."""

    def read(rel: str) -> str:
        p = require_data(data_dir / rel)
        with open(p, encoding="utf-8", newline="") as f:
            return f.read()

    return read


@pytest.fixture(scope="session")
def aozora_slice(data_dir: Path, tmp_path_factory) -> Path:
    """About 1.5 MB of aozora_ja.txt, cut at a line end, as its own file."""
    raw = require_data(data_dir / "aozora" / "aozora_ja.txt").read_bytes()
    cut = raw.rfind(b"\n", 0, 1_500_000) + 1
    out = tmp_path_factory.mktemp("aozora") / "aozora_1_5mb.txt"
    out.write_bytes(raw[:cut])
    return out


@pytest.fixture(scope="session")
def aozora_heldout(data_dir: Path) -> str:
    """About 200 KB of aozora_ja.txt that is not in ``aozora_slice`` (starting at a work boundary)."""
    raw = require_data(data_dir / "aozora" / "aozora_ja.txt").read_bytes()
    start = raw.find(b"\n\n", 3_000_000) + 2
    end = raw.rfind(b"\n", 0, start + 200_000) + 1
    return raw[start:end].decode("utf-8")


# ---------------------------------------------------------------- Hugging Face reference


def hf_merges(tok) -> list[tuple[str, str]]:
    """HF merges from tokenizer.json; they are pairs in new versions and "a b" strings in old ones."""
    out = []
    for m in json.loads(tok.to_str())["model"]["merges"]:
        if isinstance(m, str):
            a, b = m.split(" ")
            out.append((a, b))
        else:
            out.append((m[0], m[1]))
    return out


def make_hf_bpe(pattern: str | None = None, normalizer: str | None = None):
    """An untrained HF byte-level BPE tokenizer configured like our presets."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE())
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), "isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if normalizer is not None:
        tok.normalizer = {"nfc": normalizers.NFC, "nfkc": normalizers.NFKC}[normalizer]()
    tok.decoder = decoders.ByteLevel()
    return tok


def hf_train(
    source: list[str] | Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 0,
    special_tokens: list[str] | None = None,
    pattern: str | None = None,
    normalizer: str | None = None,
    from_iterator: bool = False,
):
    from tokenizers import pre_tokenizers, trainers

    tok = make_hf_bpe(pattern, normalizer)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=["<|endoftext|>"] if special_tokens is None else special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if from_iterator:
        tok.train_from_iterator(source, trainer)
    else:
        tok.train([str(p) for p in source], trainer)
    return tok


@pytest.fixture(scope="session")
def hf():
    """The Hugging Face helpers as a namespace: ``hf.train``, ``hf.merges``, ``hf.make``."""

    class _HF:
        train = staticmethod(hf_train)
        merges = staticmethod(hf_merges)
        make = staticmethod(make_hf_bpe)

    return _HF


# ---------------------------------------------------------------- GPT-2 in four implementations


@pytest.fixture(scope="session")
def gpt2_paths(data_dir: Path) -> dict[str, Path]:
    d = data_dir / "gpt2"
    return {
        "tokenizer_json": require_data(d / "tokenizer.json"),
        "encoder_json": require_data(d / "encoder.json"),
        "vocab_bpe": require_data(d / "vocab.bpe"),
    }


@pytest.fixture(scope="session")
def gpt2_ours(gpt2_paths):
    from tokenizer_rs import Tokenizer

    return Tokenizer.from_file(gpt2_paths["tokenizer_json"])


@pytest.fixture(scope="session")
def gpt2_ours_openai(gpt2_paths):
    from tokenizer_rs import Tokenizer

    return Tokenizer.from_gpt2(gpt2_paths["encoder_json"], gpt2_paths["vocab_bpe"])


@pytest.fixture(scope="session")
def gpt2_hf(gpt2_paths):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(gpt2_paths["tokenizer_json"]))


@pytest.fixture(scope="session")
def gpt2_tiktoken(gpt2_paths):
    import tiktoken
    import tiktoken.load

    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local files directly, cache nothing
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(gpt2_paths["vocab_bpe"]),
            encoder_json_file=str(gpt2_paths["encoder_json"]),
        )
    finally:
        mp.undo()
    return tiktoken.Encoding(
        name="gpt2_local",
        pat_str=GPT2_TIKTOKEN_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


@pytest.fixture(scope="module")
def small_tokenizer():
    """Ours, trained on the built-in multilingual text (no shared data needed)."""
    from tokenizer_rs import Tokenizer

    lines = MULTILINGUAL_TEXT.splitlines(keepends=True) * 3
    return Tokenizer.train(iter(lines), 600, show_progress=False)


# `make test` runs the suite on two pytest-xdist workers, one file per worker at a time (--dist
# loadfile), in collection order. The longest files go first so that neither worker is left alone
# with a long file at the end (measured: serial durations, 2026-12-02); other files keep their order.
LONGEST_FIRST = ["test_faults_training.py", "test_pipeline.py", "test_serve.py", "test_finetune.py", "test_train.py",
                 "test_faults_pipeline.py", "test_gpu_check.py", "test_faults.py", "test_eval_lm_eval.py",
                 "test_eval_stage.py", "test_report_browser.py", "test_api.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
