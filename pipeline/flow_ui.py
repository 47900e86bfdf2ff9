"""What a pipeline run shows in the Prefect UI: a name (the config and the time), a progress bar
while a model trains, a table of its metrics when it is done, and the report with its plots
inlined. Artifact keys carry the config's name, so two pipelines never overwrite each other's.
Prefect-side only: the stages report through plain callbacks (`BuildContext.on_step`)."""

from __future__ import annotations

import base64
import re
import time
import tomllib
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

UPDATE_SECONDS = 2.0  # the UI is polled; more frequent updates only load the server
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def slug(name: str) -> str:
    """A Prefect artifact key part: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run"


def key(config_name: str, what: str) -> str:
    return f"hataori-{slug(config_name)}-{what}"


def config_name(config_path: str, sets: list[str] | None) -> str:
    """The `name` a run's config gives (cheaply: TOML only, a `--set name=...` wins)."""
    name = "run"
    try:
        name = str(tomllib.loads(Path(config_path).read_text(encoding="utf-8")).get("name", name))
    except (OSError, ValueError):
        pass
    for item in sets or []:
        if item.split("=", 1)[0].strip() == "name":
            name = item.split("=", 1)[1].strip().strip("\"'")
    return name


def run_name() -> str:
    """The flow run's name: the config's name and the start time, e.g. `demo 2026-12-02 03:00`."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    return f"{config_name(parameters.get('config_path', ''), parameters.get('sets'))} {time.strftime('%Y-%m-%d %H:%M')}"


def progress(config: str, stage: str):
    """A progress artifact for a training stage, and the `on_step` callback that moves it."""
    artifact = create_progress_artifact(0.0, key=key(config, f"{stage}-progress"), description=f"{config}: {stage} steps done")
    last = [0.0]

    def on_step(done: int, total: int, record: dict[str, Any]) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= UPDATE_SECONDS:
            last[0] = now
            update_progress_artifact(artifact, 100.0 * done / max(total, 1),
                                     description=f"{config}: {stage} step {done:,}/{total:,}, loss {record['loss']:.4f}")

    return on_step


def _figure(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return value


def metrics_table(config: str, stage: str, artifact_dir: Path) -> None:
    """The finished run's evaluations (and its last step) as a table artifact."""
    from model.run_dir import METRICS, read_metrics

    rows = read_metrics(artifact_dir / "run" / METRICS)
    picked = [r for r in rows if any(k.startswith("val_") for k in r)]
    if rows and (not picked or picked[-1] is not rows[-1]):
        picked.append(rows[-1])
    columns = ["step", "loss", "val_loss", "val_ppl", "val_accuracy", "lr", "tokens_per_s"]
    table = [{c: _figure(r.get(c)) for c in columns if any(c in x for x in picked)} for r in picked]
    if table:
        create_table_artifact(table, key=key(config, f"{stage}-metrics"), description=f"{config}: {stage} metrics")


def inline_images(markdown: str, directory: Path) -> str:
    """Markdown whose local PNG plots are data URIs, so the UI shows them (it cannot read our files)."""
    def embed(match: re.Match[str]) -> str:
        path = directory / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return IMAGE.sub(embed, markdown)


def publish_report(config: str, report: Path) -> None:
    markdown = inline_images(report.read_text(encoding="utf-8"), report.parent)
    create_markdown_artifact(markdown=markdown, key=key(config, "report"), description=f"hataori report: {config}")
