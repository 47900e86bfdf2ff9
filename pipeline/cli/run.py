"""`hataori run`, `hataori status`, `hataori serve` and `hataori deploy` (each takes a pipeline CONFIG)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail


def run(
    config: Path = typer.Argument(..., help="Pipeline TOML (e.g. configs/demo.toml)."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
    force: Optional[str] = typer.Option(None, help="Rebuild this stage and every stage after it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run corpus -> tokenizer -> shards -> pretrain -> finetune (if configured) -> report; finished stages are reused (cached)."""
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before Prefect starts
    except ConfigError as e:
        fail(str(e))
    from pipeline.flows import pipeline_flow

    from pipeline.runner import StageError

    start = time.perf_counter()
    try:
        result = pipeline_flow(str(config), sets, force, progress)
    except (StageError, ValueError) as e:  # the flow log above has the details
        fail(str(e))
    typer.echo("")
    for stage, info in result["stages"].items():
        typer.echo(f"{stage:10} {'cached' if info['cached'] else 'built ':7} {info['path']}")
    typer.echo(f"\nreport: {result['report']}  ({time.perf_counter() - start:.1f} s)")
    typer.echo(f"sample: {result['sample'].strip()[:300]}")
    finetuned = result.get("finetune") or {}
    if finetuned.get("prompt"):
        typer.echo(f"\nprompt: {finetuned['prompt']}\nanswer: {str(finetuned.get('answer', '')).strip()[:500]}")


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


def serve(
    config: Path = typer.Argument(..., help="Pipeline TOML (e.g. configs/demo.toml); every run reads it again."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule, 5 fields, e.g. '0 3 * * *' (03:00 every day)."),
    interval: Optional[float] = typer.Option(None, help="Run every SECONDS instead of on a cron schedule."),
    timezone: Optional[str] = typer.Option(None, help="IANA time zone of the schedule, e.g. Asia/Tokyo (default: UTC)."),
    port: int = typer.Option(4200, help="Port of the local Prefect server on 127.0.0.1 (when PREFECT_API_URL is not set)."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the config's name)."),
) -> None:
    """Run the pipeline on a schedule (--cron or --interval) until stopped, one run at a time.

    Uses the Prefect server that PREFECT_API_URL names (environment or Prefect profile). Without one it starts `prefect server start` on 127.0.0.1:PORT (log: $PREFECT_HOME/server-PORT.log, UI: http://127.0.0.1:PORT) and stops it on exit. docs/deploy.md: systemd unit, shared servers, work pools.
    """
    from pipeline.serve import ServeError, check_schedule, serve as serve_flow

    try:
        check_schedule(cron, interval, timezone)  # before the slower imports
    except ServeError as e:
        fail(str(e))
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before any server starts (serve_flow checks the cron syntax too)
        serve_flow(config, sets, cron=cron, interval=interval, timezone=timezone, port=port, name=name, echo=typer.echo)
    except (ConfigError, ServeError) as e:
        fail(str(e))


def deploy(
    config: Path = typer.Argument(..., help="Pipeline TOML; every run reads it again, at the same absolute path."),
    pool: str = typer.Option(..., help="Prefect work pool; a 'process' pool of this name is created if missing."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule, 5 fields, e.g. '0 3 * * *' (default: no schedule)."),
    interval: Optional[float] = typer.Option(None, help="Run every SECONDS instead."),
    timezone: Optional[str] = typer.Option(None, help="IANA time zone of the schedule, e.g. Asia/Tokyo (default: UTC)."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the config's name)."),
    workdir: Optional[Path] = typer.Option(None, help="Directory the worker runs the flow in; relative paths in the config resolve against it (default: this one)."),
) -> None:
    """Register the pipeline with a Prefect work pool on the server PREFECT_API_URL names; `prefect worker start --pool POOL` runs it.

    Workers need hataori installed (they import pipeline.flows) and the config and workdir at the same paths. Without --cron or --interval it runs on demand: prefect deployment run 'hataori/NAME'. See docs/deploy.md.
    """
    from pipeline.serve import ServeError, check_schedule, deploy as deploy_flow

    try:
        check_schedule(cron, interval, timezone, required=False)  # before the slower imports
    except ServeError as e:
        fail(str(e))
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before talking to a server
        deploy_flow(config, sets, pool=pool, cron=cron, interval=interval, timezone=timezone, name=name, workdir=workdir,
                    echo=typer.echo)
    except (ConfigError, ServeError) as e:
        fail(str(e))
