"""Command-line options that take their default and their help text from a settings model, so the
CLI and the config files can never disagree about what a setting means or defaults to."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def setting(model: type[BaseModel], field: str, *decls: str, help: str | None = None, **kwargs: Any) -> Any:
    """`typer.Option` for `model.field`: its default (required when it has none) and description."""
    info = model.model_fields[field]
    default = ... if info.default is PydanticUndefined and info.default_factory is None else (
        info.default if info.default_factory is None else info.default_factory())
    return typer.Option(default, *decls, help=help or info.description, **kwargs)
