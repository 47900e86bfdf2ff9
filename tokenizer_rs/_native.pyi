"""Type stubs for the Rust extension (see tokenizer_rs/src/python.rs)."""

from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from typing import Literal

PRESETS: list[str]
REGEX_PREFIX: str  # "regex:", the prefix of a custom pre-tokenizer pattern
GPT2_PATTERN: str

def validate_pretokenizer(name: str) -> str:
    """Check a BPE ``pretokenizer`` setting without training.

    Returns its canonical name (a preset, or ``regex:<pattern>``); raises ValueError for an unknown
    preset (listing the presets, with the likely one for a typo) or an invalid regular expression.
    """

_Path = str | PathLike[str]
_Allowed = Literal["all", "none"] | Iterable[str] | None

class Tokenizer:
    @staticmethod
    def train(
        files_or_iterator: _Path | Sequence[_Path] | Iterable[str] | Iterator[str],
        vocab_size: int,
        *,
        min_frequency: int = 0,
        special_tokens: list[str] | None = None,
        pretokenizer: str | None = None,
        normalizer: Literal["nfc", "nfkc"] | None = None,
        max_token_length: int | None = None,
        show_progress: bool = True,
        model: Literal["bpe", "char", "word"] = "bpe",
    ) -> Tokenizer:
        """Train a byte-level BPE.

        A path or a list/tuple of paths is read line by line (HF ``train(files)``); any other
        iterable of strings is one sequence per item (HF ``train_from_iterator``). ``special_tokens``
        defaults to ``["<|endoftext|>"]``; ``pretokenizer`` (BPE only; default
        ``gpt2``) is a preset (``gpt2``, ``cl100k``, ``o200k``, ``ja``, ``ja-digits1``, ``ja-isolated``)
        or a custom regular expression written ``regex:<pattern>``; any other name is a ValueError
        that lists the presets. ``model="char"`` and ``model="word"`` train the baselines (HF
        ``WordLevel``: most frequent characters, or the seeds' SimpleTokenizerV2 words, with
        ``<|unk|>``); ``max_token_length`` counts characters. Sizes are checked as Python ints of any
        size: ``vocab_size`` at most 2**32 - 1, ``max_token_length`` at least 1; bad values raise
        ValueError.
        """
    @staticmethod
    def from_file(path: _Path) -> Tokenizer:
        """Load a tokenizer.json (ours or HF's); files over 256 MiB are refused before reading, and
        a malformed file raises ValueError naming the file and the JSON field."""
    @staticmethod
    def from_str(json: str) -> Tokenizer: ...
    @staticmethod
    def from_gpt2(encoder_json: _Path, vocab_bpe: _Path) -> Tokenizer: ...
    def save(self, path: _Path, pretty: bool = False) -> None: ...
    def to_str(self, pretty: bool = False) -> str: ...
    def encode(self, text: str, allowed_special: _Allowed = "all") -> list[int]: ...
    def encode_ordinary(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Iterable[str], allowed_special: _Allowed = "all") -> list[list[int]]: ...
    def encode_batch_flat(
        self, texts: Iterable[str], *, separator: int | None = None,
        dtype: Literal["uint16", "uint32"] = "uint16", allowed_special: _Allowed = "all",
    ) -> tuple[bytes, list[int]]:
        """Documents encoded in parallel into one flat little-endian id buffer; (buffer, tokens per document)."""
    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; an id outside the vocabulary (negative or of any size) raises ValueError
        naming it and its position; bytes that are not UTF-8 become U+FFFD."""
    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None:
        """The token of ``id``, or None for any integer outside the vocabulary (as HF's)."""
    def token_bytes(self, id: int) -> bytes:
        """The bytes of one token; ValueError for an id outside the vocabulary."""
    def get_vocab(self) -> dict[str, int]: ...
    def pre_tokenize(self, text: str) -> list[str]: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def merges(self) -> list[tuple[str, str]]: ...
    @property
    def special_tokens(self) -> list[str]: ...
    @property
    def pretokenizer(self) -> str:
        """A preset name or ``regex:<pattern>`` (what ``train(pretokenizer=...)`` takes back);
        ``none``, ``chars`` or ``words`` for splits that have no preset."""
    @property
    def normalizer(self) -> str | None: ...
    @property
    def model(self) -> Literal["bpe", "char", "word"]: ...
    def __len__(self) -> int: ...
