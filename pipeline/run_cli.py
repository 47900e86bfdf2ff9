"""`hataori run CONFIG` and `hataori status CONFIG`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli_errors import fail


def run(
    config: Path = typer.Argument(..., help="Pipeline TOML (e.g. configs/demo.toml)."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
    force: Optional[str] = typer.Option(None, help="Rebuild this stage and every stage after it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run corpus -> tokenizer -> shards -> pretrain -> report; finished stages are reused (cached)."""
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before Prefect starts
    except ConfigError as e:
        fail(str(e))
    from pipeline.flows import pipeline_flow

    start = time.perf_counter()
    result = pipeline_flow(str(config), sets, force, progress)
    typer.echo("")
    for stage, info in result["stages"].items():
        typer.echo(f"{stage:10} {'cached' if info['cached'] else 'built ':7} {info['path']}")
    typer.echo(f"\nreport: {result['report']}  ({time.perf_counter() - start:.1f} s)")
    typer.echo(f"sample: {result['sample'].strip()[:300]}")


def status(
    config: Path = typer.Argument(..., help="Pipeline TOML."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value."),
) -> None:
    """Each stage of CONFIG: done (key, size, age), missing, incomplete or damaged."""
    from pipeline.config import ConfigError, load_config
    from pipeline.runner import status as stage_status

    try:
        rows = stage_status(load_config(config, sets))
    except ConfigError as e:
        fail(str(e))
    for r in rows:
        detail = f"key {r['key'][:16]}  {r['bytes'] / 1e6:8.1f} MB  {r['age_s'] / 60:6.1f} min old" if r["state"] == "done" else ""
        stale = f"  ({len(r['stale'])} stale artifact(s) from other settings)" if r["stale"] else ""
        typer.echo(f"{r['stage']:10} {r['state']:<40} {detail}{stale}")
