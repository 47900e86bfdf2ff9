"""hataori's version, as installed: written into every manifest and part of every cache key."""

from __future__ import annotations

from functools import cache


@cache
def hataori_version() -> str:
    try:
        from importlib.metadata import version  # cheap, but only needed when a manifest is written

        return version("hataori")
    except Exception:  # not installed (a bare checkout on sys.path)
        return "unknown"
