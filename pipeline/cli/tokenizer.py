"""`hataori tokenizer ...`: train, encode, decode and measure byte-level BPE tokenizers."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from model.config import EOT, TOKENIZER_FILE
from pipeline.cli.errors import fail
from tokenizer_rs import PRESETS, REGEX_PREFIX, Tokenizer, validate_pretokenizer

app = typer.Typer(help="Train and apply byte-level BPE tokenizers (HF tokenizers-compatible).", no_args_is_help=True)

SAMPLE_BYTES = 2 << 20


def corpus_files(paths: list[Path]) -> list[Path]:
    """Files named directly, plus every *.txt under directories, in a stable order."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.txt") if q.is_file())
            if not found:
                fail(f"{p}: directory holds no .txt files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            fail(f"{p}: no such file or directory")
    return files


def resolve_tokenizer(path: Path) -> Path:
    """A tokenizer directory (holding tokenizer.json) or the json file itself."""
    candidate = path / TOKENIZER_FILE if path.is_dir() else path
    if not candidate.is_file():
        fail(f"{candidate}: no tokenizer.json here (train one with `hataori tokenizer train`)")
    return candidate


def load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(resolve_tokenizer(path)))
    except (ValueError, OSError) as e:
        fail(e)
        raise  # unreachable; keeps type checkers happy


def read_stdin() -> str:
    """Standard input as UTF-8 text, byte for byte (no newline translation); input that is not
    UTF-8 ends the command naming the byte offset."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"stdin: not valid UTF-8 at byte offset {e.start}")


def argument_text(text: str) -> str:
    """A TEXT argument; bytes that were not UTF-8 (Python keeps them as lone surrogates) end the
    command naming their byte offset."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        fail(f"TEXT argument: not valid UTF-8 at byte offset {len(os.fsencode(text[: e.start]))}")
    return text


def read_sample(files: list[Path], limit: int = SAMPLE_BYTES) -> str:
    """Up to `limit` bytes spread evenly over the files, cut at line ends."""
    share = max(1, limit // len(files))
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            chunk = fh.read(share)
        cut = chunk.rfind(b"\n")
        if cut > 0 and len(chunk) == share:
            chunk = chunk[: cut + 1]
        parts.append(chunk.decode("utf-8", errors="replace"))
    return "".join(parts)


def partial_char_ids(tok: Tokenizer) -> set[int]:
    """Byte-level tokens that are not whole characters (the byte-fallback of a byte-level BPE)."""
    if tok.model != "bpe":
        return set()
    partial = set()
    for i in range(tok.vocab_size):
        try:
            tok.token_bytes(i).decode("utf-8")
        except UnicodeDecodeError:
            partial.add(i)
    return partial


def text_stats(tok: Tokenizer, text: str, partial: set[int] | None = None) -> dict:
    ids = tok.encode(text, allowed_special="none")
    n = max(1, len(ids))
    unk = tok.token_to_id("<|unk|>") if tok.model != "bpe" else None
    partial = partial_char_ids(tok) if partial is None else partial
    return {
        "characters": len(text),
        "bytes": len(text.encode("utf-8")),
        "tokens": len(ids),
        "chars_per_token": len(text) / n,
        "bytes_per_token": len(text.encode("utf-8")) / n,
        "unknown_tokens": sum(1 for i in ids if i == unk) if unk is not None else 0,
        "partial_char_tokens": sum(1 for i in ids if i in partial),
    }


def cleaned_lines(files: list[Path]):
    """Lines (with their endings) of Aozora-cleaned files: the same sequences a file would give."""
    from pipeline.aozora import read_aozora

    for f in files:
        try:
            text = read_aozora(str(f))
        except ValueError as e:
            fail(e)
        yield from text.splitlines(keepends=True)


@app.command()
def train(
    corpus: list[Path] = typer.Argument(..., help="Text files, or directories of *.txt files."),
    vocab_size: int = typer.Option(32000, "--vocab-size", "-v", help="Vocabulary size, special tokens included."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=f"BPE pre-tokenizer: one of {', '.join(PRESETS)}, or {REGEX_PREFIX}<pattern> for a custom regular expression (default gpt2)."),
    model: str = typer.Option("bpe", help="bpe, or the baselines char (most frequent characters) and word (SimpleTokenizerV2 words)."),
    aozora: bool = typer.Option(False, "--aozora", help="Clean Aozora Bunko markup first (ruby, ［＃…］ notes, header and footer)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; tokenizer.json is written there."),
    min_frequency: int = typer.Option(0, help="Minimum pair count for a merge."),
    special_token: list[str] = typer.Option([EOT], "--special-token", "-s", help="Special token (repeatable); they get the first ids."),
    normalizer: Optional[str] = typer.Option(None, help="Unicode normalizer: nfc or nfkc (default: none)."),
    max_token_length: Optional[int] = typer.Option(None, help="Longest token, in characters."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train a tokenizer on CORPUS and write OUT/tokenizer.json (loadable by HF tokenizers and transformers).

    Example: hataori tokenizer train aozora/ --aozora --preset ja --normalizer nfkc --vocab-size 32000 --out tok/ja
    """
    if preset is not None:
        try:
            validate_pretokenizer(preset)  # before announcing the run: a misspelt preset is the usual slip
        except ValueError as e:
            fail(e)
    files = corpus_files(corpus)
    total = sum(f.stat().st_size for f in files)
    typer.echo(f"training {model} on {len(files)} file(s), {total / 1e6:.1f} MB, vocab {vocab_size}, preset {preset or ('gpt2' if model == 'bpe' else model)}")
    start = time.perf_counter()
    try:
        tok = Tokenizer.train(
            cleaned_lines(files) if aozora else [str(f) for f in files],
            vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_token,
            pretokenizer=preset,
            normalizer=normalizer,
            max_token_length=max_token_length,
            show_progress=progress,
            model=model,
        )
    except (ValueError, OSError, TypeError) as e:
        fail(e)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / TOKENIZER_FILE))
    sample = "".join(cleaned_lines(files)) if aozora else read_sample(files)
    stats = text_stats(tok, sample[:SAMPLE_BYTES])
    typer.echo(f"wrote {out / TOKENIZER_FILE}")
    typer.echo(f"  vocab size      {tok.vocab_size}  ({tok.model}, {len(tok.merges)} merges, specials: {', '.join(tok.special_tokens) or '-'})")
    typer.echo(f"  training time   {seconds:.2f} s ({total / 1e6 / max(seconds, 1e-9):.1f} MB/s)")
    typer.echo(f"  bytes/token     {stats['bytes_per_token']:.3f}  chars/token {stats['chars_per_token']:.3f}  (sample of {stats['bytes'] / 1e6:.1f} MB)")


@app.command()
def encode(
    text: Optional[str] = typer.Argument(None, help="Text to encode; '-' or nothing reads standard input."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory or tokenizer.json."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of space-separated ids."),
    tokens: bool = typer.Option(False, "--tokens", help="One line per token: its id and the text it stands for "
                                "(quoted; bytes that are part of a character shown as \\xNN)."),
) -> None:
    """Print the token ids of TEXT (with --tokens, each token's text too).

    Example: hataori tokenizer encode --tokenizer runs/ja/tokenizer.json --tokens "吾輩は猫である。"
    """
    tok = load(tokenizer)
    if text is None or text == "-":
        text = read_stdin()
    else:
        text = argument_text(text)
    ids = tok.encode(text)
    if tokens:
        raw = [tok.token_bytes(i) for i in ids]
        if as_json:
            typer.echo(json.dumps([{"id": i, "text": b.decode("utf-8", errors="backslashreplace"), "bytes": b.hex()}
                                   for i, b in zip(ids, raw)], ensure_ascii=False))
        else:
            pieces = [token_text(b) for b in raw]
            width = len(str(max(ids, default=0)))
            for i, t in zip(ids, pieces):
                typer.echo(f"{i:>{width}}  {t}")
        return
    typer.echo(json.dumps(ids) if as_json else " ".join(map(str, ids)))


def token_text(raw: bytes) -> str:
    """A token's bytes for people: the characters it holds, quoted, with line breaks, tabs and the
    bytes of a split multi-byte character escaped (\\n, \\t, \\xe3)."""
    text = raw.decode("utf-8", errors="backslashreplace")
    return "'" + text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + "'"


@app.command()
def decode(
    ids: Optional[list[str]] = typer.Argument(None, help="Token ids (space or comma separated); nothing reads standard input."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory or tokenizer.json."),
) -> None:
    """Print the text that token IDS stand for.

    Example: hataori tokenizer decode --tokenizer tok/ja 464 2068 7586
    """
    tok = load(tokenizer)
    raw = " ".join(ids) if ids else read_stdin()
    values = []
    for i, item in enumerate(raw.replace(",", " ").replace("[", " ").replace("]", " ").split()):
        try:
            values.append(int(item))
        except ValueError:
            fail(f"id #{i} ({item!r}) is not an integer")
    try:
        typer.echo(tok.decode(values), nl=False)
    except ValueError as e:
        fail(e)
    typer.echo()


@app.command()
def stats(
    textfile: list[Path] = typer.Argument(..., help="Text files to measure."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="Tokenizer directory or tokenizer.json."),
) -> None:
    """Characters/token, bytes/token, unknown tokens (char/word models) and partial-character tokens
    (byte-level BPE's byte fallback) of a tokenizer on text files.

    Example: hataori tokenizer stats --tokenizer tok/ja heldout.txt
    """
    tok = load(tokenizer)
    partial = partial_char_ids(tok)
    typer.echo(f"tokenizer: {resolve_tokenizer(tokenizer)}  {tok.model}, vocab {tok.vocab_size}, pre-tokenizer {tok.pretokenizer}, normalizer {tok.normalizer or 'none'}")
    header = f"{'file':40} {'chars':>10} {'bytes':>10} {'tokens':>10} {'chars/tok':>9} {'bytes/tok':>9} {'unknown':>7} {'partial':>7}"
    typer.echo(header)
    typer.echo("-" * len(header))
    for f in corpus_files(textfile):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            fail(f"{f}: not valid UTF-8 at byte offset {e.start}")
        s = text_stats(tok, text, partial)
        typer.echo(
            f"{str(f)[-40:]:40} {s['characters']:>10} {s['bytes']:>10} {s['tokens']:>10} "
            f"{s['chars_per_token']:>9.3f} {s['bytes_per_token']:>9.3f} {s['unknown_tokens']:>7} {s['partial_char_tokens']:>7}"
        )
    typer.echo("unknown: <|unk|> ids (char/word models); partial: tokens that are bytes of a character, not whole characters")
