"""`hataori data ...`: build and inspect sharded token datasets."""

from __future__ import annotations

from pathlib import Path

import typer


from model.shard_format import DatasetError
from pipeline.cli.errors import fail

app = typer.Typer(help="Build and inspect sharded token datasets (safetensors + manifest.json).", no_args_is_help=True)


@app.command()
def build(
    inputs: list[Path] = typer.Argument(..., help="Text files, JSON Lines files (.jsonl/.json), or directories of them."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="tokenizer.json (or a directory holding one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
    shard_tokens: int = typer.Option(100_000_000, help="Tokens per shard (shards hold whole documents)."),
    val_fraction: float = typer.Option(0.01, help="Share of documents in the validation split (deterministic)."),
    doc_split: str = typer.Option("file", help="Documents in text files: file, blank_line or line."),
    text_field: str = typer.Option("text", help="Text field of JSON Lines records."),
    seed: int = typer.Option(0, help="Seed of the train/validation split."),
    overwrite: bool = typer.Option(False, help="Replace a dataset built from other inputs or settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Encode INPUTS into OUT/{train,val}-NNNNN.safetensors and OUT/manifest.json. A rerun resumes."""
    from pydantic import ValidationError

    from pipeline.dataset_writer import DatasetConfig, build_dataset, expand_inputs, inputs_fingerprint, iter_documents

    tokenizer_file = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer
    if not tokenizer_file.is_file():
        fail(f"{tokenizer_file}: no such tokenizer file")
    try:
        config = DatasetConfig(shard_tokens=shard_tokens, val_fraction=val_fraction, doc_split=doc_split, text_field=text_field, split_seed=seed)
    except ValidationError as e:
        fail("; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()))
    try:
        files = expand_inputs(inputs)
        manifest = build_dataset(iter_documents(files, config), tokenizer_file, out, config,
                                 source_key=inputs_fingerprint(files), overwrite=overwrite, progress=progress)
    except (DatasetError, ValueError, OSError) as e:
        fail(str(e))
    _print_info(out, manifest)


def _print_info(directory: Path, m: dict) -> None:
    tok = m["tokenizer"]
    typer.echo(f"dataset    {directory}")
    typer.echo(f"tokenizer  vocab {tok['vocab_size']}, sha256 {tok['sha256'][:16]}..., eot id {tok['eot_id']}, dtype {m['dtype']}")
    for name, split in m["splits"].items():
        typer.echo(f"{name:10} {split['tokens']:>14,} tokens  {split['documents']:>10,} documents  {len(split['shards']):>5} shard(s)")
    cfg = m["config"]
    typer.echo(f"config     shard_tokens {cfg['shard_tokens']:,}, val_fraction {cfg['val_fraction']}, doc_split {cfg['doc_split']}, seed {cfg['split_seed']}")
    typer.echo(f"built      {m['created_at']} by hataori {m['code_version']}")


@app.command()
def info(directory: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Print a dataset's manifest in human terms."""
    from model.shard_format import read_manifest

    try:
        _print_info(directory, read_manifest(directory))
    except DatasetError as e:
        fail(str(e))


@app.command("import-bin")
def import_bin(
    files: list[Path] = typer.Argument(..., help="llm.c / nanoGPT .bin token files (names with 'val' become validation)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="The tokenizer.json the ids come from."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
) -> None:
    """Turn llm.c .bin shards (e.g. FineWeb's) into a hataori dataset."""
    from pipeline.llmc import import_bins

    tokenizer_file = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer
    try:
        _print_info(out, import_bins(files, tokenizer_file, out))
    except (DatasetError, OSError) as e:
        fail(str(e))


@app.command("export-bin")
def export_bin(
    directory: Path = typer.Argument(..., help="Dataset directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the .bin files."),
) -> None:
    """Write a dataset's shards as llm.c .bin files (header + uint16/uint32 tokens)."""
    from pipeline.llmc import export_bins

    try:
        for path in export_bins(directory, out):
            typer.echo(str(path))
    except (DatasetError, OSError) as e:
        fail(str(e))
