"""`hataori dataset ...`: build and inspect sharded token datasets, and bring .bin files in and out."""

from __future__ import annotations

from pathlib import Path

import typer

from model.config import TOKENIZER_FILE
from model.shard_format import DatasetError
from pipeline.cli.errors import fail
from pipeline.cli.options import setting
from pipeline.dataset_writer import DatasetConfig
from pipeline.llmc import BIN_FORMATS

app = typer.Typer(help="Build and inspect sharded token datasets (safetensors + manifest.json).", no_args_is_help=True)
FORMAT_HELP = ("llmc: llm.c's files (a 256-int32 header, then uint16/uint32 tokens); "
               "nanogpt: nanoGPT's train.bin/val.bin (headerless uint16 tokens).")


def _tokenizer_file(tokenizer: Path) -> Path:
    path = tokenizer / TOKENIZER_FILE if tokenizer.is_dir() else tokenizer
    if not path.is_file():
        fail(f"{path}: no such tokenizer file")
    return path


@app.command()
def build(
    inputs: list[Path] = typer.Argument(..., help="Text files, JSON Lines files (.jsonl/.json), or directories of them."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="tokenizer.json (or a directory holding one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
    shard_tokens: int = setting(DatasetConfig, "shard_tokens"),
    val_fraction: float = setting(DatasetConfig, "val_fraction"),
    doc_split: str = setting(DatasetConfig, "doc_split", help="Documents in text files: file (one per file), blank_line or line."),
    text_field: str = setting(DatasetConfig, "text_field"),
    seed: int = setting(DatasetConfig, "split_seed", "--seed"),
    overwrite: bool = typer.Option(False, help="Replace a dataset built from other inputs or settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Encode INPUTS into OUT/{train,val}-NNNNN.safetensors and OUT/manifest.json. A rerun resumes.

    Example: hataori dataset build books/ --tokenizer tok/ --out data/books --doc-split blank_line
    """
    from pydantic import ValidationError

    from pipeline.dataset_writer import build_dataset, expand_inputs, inputs_fingerprint, iter_documents

    tokenizer_file = _tokenizer_file(tokenizer)
    try:
        config = DatasetConfig(shard_tokens=shard_tokens, val_fraction=val_fraction, doc_split=doc_split, text_field=text_field, split_seed=seed)
    except ValidationError as e:
        fail("; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()))
    try:
        files = expand_inputs(inputs)
        manifest = build_dataset(iter_documents(files, config), tokenizer_file, out, config,
                                 source_key=inputs_fingerprint(files), overwrite=overwrite, progress=progress)
    except (DatasetError, ValueError, OSError) as e:
        fail(e)
    _print_info(out, manifest)


def _print_info(directory: Path, m: dict) -> None:
    tok = m["tokenizer"]
    typer.echo(f"dataset    {directory}")
    typer.echo(f"tokenizer  vocab {tok['vocab_size']}, sha256 {tok['sha256'][:16]}..., eot id {tok.get('eot_id')}, dtype {m['dtype']}")
    for name, split in m["splits"].items():
        tokens = sum(e["tokens"] for e in split["shards"])
        documents = sum(e.get("documents", 0) for e in split["shards"])
        typer.echo(f"{name:10} {tokens:>14,} tokens  {documents:>10,} documents  {len(split['shards']):>5} shard(s)")
    cfg = m.get("config") or {}
    if "imported_from" in cfg:
        typer.echo(f"imported   from {', '.join(map(str, cfg['imported_from']))}")
    elif cfg:
        typer.echo("config     " + ", ".join(f"{k} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k} {v}"
                                          for k, v in cfg.items() if k != "batch_bytes"))
    typer.echo(f"built      {m.get('created_at', '?')} by hataori {m.get('code_version', '?')}")


@app.command()
def info(directory: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Print a dataset's manifest in human terms.

    Example: hataori dataset info data/books
    """
    from model.shard_format import read_manifest

    try:
        _print_info(directory, read_manifest(directory))
    except DatasetError as e:
        fail(e)


@app.command("import-bin")
def import_bin(
    files: list[Path] = typer.Argument(..., help="Token .bin files (names with 'val' become validation)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="The tokenizer.json the ids come from."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
    fmt: str = typer.Option("llmc", "--format", help=FORMAT_HELP),
    overwrite: bool = typer.Option(False, help="Replace a dataset already in OUT."),
) -> None:
    """Turn llm.c (e.g. FineWeb's) or nanoGPT .bin token files into a hataori dataset; every id is checked.

    Example: hataori dataset import-bin fineweb_train_*.bin fineweb_val_*.bin -t gpt2/tokenizer.json -o data/fineweb
    """
    from pipeline.llmc import import_bins

    if fmt not in BIN_FORMATS:
        fail(f"--format {fmt!r}: use one of {', '.join(BIN_FORMATS)}")
    try:
        _print_info(out, import_bins(files, _tokenizer_file(tokenizer), out, fmt, overwrite))
    except (DatasetError, OSError) as e:
        fail(e)


@app.command("export-bin")
def export_bin(
    directory: Path = typer.Argument(..., help="Dataset directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the .bin files."),
    fmt: str = typer.Option("llmc", "--format", help=FORMAT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the .bin files of an earlier export in OUT (all of them)."),
) -> None:
    """Write a dataset's shards as .bin token files for llm.c or nanoGPT.

    Example: hataori dataset export-bin data/books --out bins/ --format nanogpt
    """
    from pipeline.llmc import export_bins

    if fmt not in BIN_FORMATS:
        fail(f"--format {fmt!r}: use one of {', '.join(BIN_FORMATS)}")
    try:
        for path in export_bins(directory, out, fmt=fmt, overwrite=overwrite):
            typer.echo(str(path))
    except (DatasetError, OSError) as e:
        fail(e)
