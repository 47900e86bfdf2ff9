"""`hataori run`, `hataori status`, `hataori serve` and `hataori deploy` (each takes a pipeline CONFIG)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail


def run(
    config: Path = typer.Argument(..., help="Pipeline TOML (e.g. configs/demo.toml)."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
    force: Optional[str] = typer.Option(None, help="Rebuild this stage and every stage after it (the old artifacts stay until the new ones are done)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on a terminal (else log lines)."),
) -> None:
    """Run corpus -> tokenizer -> dataset -> pretrain -> finetune -> eval (those configured) -> report; finished stages are reused (cached).

    Example: hataori run configs/demo.toml --set pretrain.max_steps=500 --force pretrain
    """
    from pipeline.config import load_config
    from pipeline.runner import preflight

    try:
        cfg = load_config(config, sets)
        preflight(cfg, force)  # fail fast, before Prefect starts
    except ValueError as e:
        fail(e)
    from pipeline.flows import pipeline_flow  # first: it sets PREFECT_HOME before Prefect reads its settings
    from prefect import tags

    start = time.perf_counter()
    os.environ["HATAORI_RUN_CLI"] = "1"  # the flow's failure line is ours to print, once
    with tags("hataori", cfg.name):
        state = pipeline_flow(str(config), sets, force, progress, return_state=True)
    if not state.is_completed():
        fail(state.message or f"the flow ended {state.name}")
    result = state.result()
    typer.echo("")
    for stage, info in result["stages"].items():
        typer.echo(f"{stage:10} {'cached' if info['cached'] else 'built ':7} {info['path']}")
    typer.echo(f"\nreport: {result['report']}  ({time.perf_counter() - start:.1f} s)")
    typer.echo(f"sample: {result['sample'].strip()[:300]}")
    finetuned = result.get("finetune") or {}
    if finetuned.get("prompt"):
        typer.echo(f"\nprompt: {finetuned['prompt']}\nanswer: {str(finetuned.get('answer', '')).strip()[:500]}")
    evaluated = result.get("eval") or {}
    if evaluated.get("verdict"):  # the scheduled-run question: better or worse than last time?
        cached = " (cached: same models as before)" if result["stages"].get("eval", {}).get("cached") else ""
        typer.echo(f"\neval: {evaluated['change']}{cached}")


def status(
    config: Path = typer.Argument(..., help="Pipeline TOML."),
    sets: list[str] = typer.Option([], "--set", help="Override any field: section.key=value (TOML value)."),
) -> None:
    """Each stage of CONFIG: done (key, size, age), missing, incomplete or damaged; for a stage that is
    not done, which settings differ from the artifact nearest to it (pass the run's --set options too).

    Example: hataori status configs/demo.toml --set pretrain.max_steps=500
    """
    from pipeline.config import ConfigError, load_config
    from pipeline.runner import status as stage_status

    try:
        rows = stage_status(load_config(config, sets))
    except ConfigError as e:
        fail(e)
    for r in rows:
        detail = f"key {r['key'][:16]}  {r['bytes'] / 1e6:8.1f} MB  {r['age_s'] / 60:6.1f} min old" if r["state"] == "done" else ""
        stale = f"  ({len(r['stale'])} stale artifact(s) from other settings)" if r["stale"] else ""
        typer.echo(f"{r['stage']:10} {r['state']:<40} {detail}{stale}")
        if r.get("differs"):
            typer.echo(f"{'':10} {r['differs']}")


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

    Example: hataori serve configs/ja.toml --cron "0 3 * * *" --timezone Asia/Tokyo

    Uses the Prefect server that PREFECT_API_URL names (environment or Prefect profile). Without one it starts `prefect server start` on 127.0.0.1:PORT (log: $PREFECT_HOME/server-PORT.log, UI: http://127.0.0.1:PORT) and stops it on exit. docs/deploy.md: systemd unit, shared servers, work pools.
    """
    from pipeline.serve import ServeError, check_schedule, serve as serve_flow

    try:
        check_schedule(cron, interval, timezone)  # before the slower imports
    except ServeError as e:
        fail(e)
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before any server starts (serve_flow checks the cron syntax too)
        serve_flow(config, sets, cron=cron, interval=interval, timezone=timezone, port=port, name=name, echo=typer.echo)
    except (ConfigError, ServeError) as e:
        fail(e)


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

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api hataori deploy configs/ja.toml --pool gpu-pool --cron "0 3 * * *"

    Workers need hataori installed (they import pipeline.flows) and the config and workdir at the same paths. Without --cron or --interval it runs on demand: prefect deployment run 'hataori/NAME'. See docs/deploy.md.
    """
    from pipeline.serve import ServeError, check_schedule, deploy as deploy_flow

    try:
        check_schedule(cron, interval, timezone, required=False)  # before the slower imports
    except ServeError as e:
        fail(e)
    from pipeline.config import ConfigError, load_config

    try:
        load_config(config, sets)  # fail fast, before talking to a server
        deploy_flow(config, sets, pool=pool, cron=cron, interval=interval, timezone=timezone, name=name, workdir=workdir,
                    echo=typer.echo)
    except (ConfigError, ServeError) as e:
        fail(e)
