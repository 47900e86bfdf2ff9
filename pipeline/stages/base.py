"""What a pipeline stage is: a name, the stages it reads, what its cache key covers, and how it
builds. Each stage module defines one `Stage`; `pipeline.stages.STAGES` lists them in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the registry must load without the config's imports
    from pipeline.config import PipelineConfig


@dataclass
class BuildContext:
    """What a building stage may use: the whole config, its upstream artifacts, shared caches."""

    config: "PipelineConfig"
    paths: dict[str, Path]  # artifact directory of every stage built so far in this run
    manifests: dict[str, dict[str, Any]]  # their manifests
    downloads: Path  # the store's download cache
    progress: bool
    log: Callable[[str], None]
    on_step: Callable[[int, int, dict[str, Any]], None] | None = None  # training steps (done, total, metrics)


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]  # stages it reads (those not active in a config are skipped)
    key_config: Callable[["PipelineConfig"], dict[str, Any]]  # what its cache key covers
    build: Callable[[BuildContext, Path], dict[str, Any]]  # fills the artifact dir, returns stats
    enabled: Callable[["PipelineConfig"], bool] = lambda cfg: True
    resumable: bool = False  # its artifact holds a run directory that a rerun continues
