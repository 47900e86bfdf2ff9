"""How every `hataori` command reports bad input: one red line on stderr, exit status 2."""

from __future__ import annotations

from typing import NoReturn

import typer


def describe(error: BaseException) -> str:
    """An exception's message; a bare OSError reads `PATH: what went wrong`, not
    `[Errno 17] File exists: 'PATH'`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror and str(error).startswith("[Errno"):
        return f"{error.filename}: {error.strerror}"
    return str(error)


def fail(message: str | BaseException) -> NoReturn:
    """Ends the command: `error: MESSAGE` as one line on stderr (line breaks folded), exit status 2."""
    text = describe(message) if isinstance(message, BaseException) else message
    message = "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def validated_config(cls, fields: dict, sets: list[str]):
    """`cls(**fields)` with `--set key=value` overrides applied; a bad field exits naming its path."""
    from pydantic import ValidationError

    from pipeline.config import ConfigError, apply_overrides

    try:
        return cls(**apply_overrides(fields, sets))
    except ConfigError as e:
        fail(e)
    except ValidationError as e:
        fail("; ".join(f"{'.'.join(map(str, err['loc'])) or cls.__name__}: {err['msg'].removeprefix('Value error, ')}"
                       for err in e.errors()))
