"""hataori's byte-level BPE tokenizer (Rust core, exact Hugging Face ``tokenizers`` parity).

>>> from tokenizer_rs import Tokenizer
>>> tok = Tokenizer.train(["corpus.txt"], vocab_size=32000)
>>> tok.encode("Hello world")
"""

from tokenizer_rs._native import GPT2_PATTERN, PRESETS, REGEX_PREFIX, Tokenizer, validate_pretokenizer

__all__ = ["Tokenizer", "PRESETS", "REGEX_PREFIX", "GPT2_PATTERN", "validate_pretokenizer"]
