"""hataori's pipeline: the stages, the artifact store, the Prefect flows and the `hataori` CLI.

Importing this package stays cheap: Prefect, torch and friends are imported by the modules that
need them, never here. It checks one thing: that `model` is hataori's own. The top-level names
`model` and `pipeline` are hataori's layout (README, "Layout"); another package called `model`
earlier on sys.path (a `model.py` in the directory you run `python -m` from, another project in
the same environment) would otherwise be imported in its place and fail far from the cause.
"""

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path


def _check_model_is_ours() -> None:
    spec = _util.find_spec("model")
    origin = _Path(spec.origin).resolve() if spec is not None and spec.origin else None
    marker = origin is not None and origin.name == "__init__.py" and "__hataori__" in origin.read_text(encoding="utf-8")
    if marker:
        return
    message = (f"hataori's 'model' package is shadowed by {origin or 'nothing'}: another module named 'model' comes "
               "first on sys.path. Rename it, run from another directory, or give hataori its own virtual environment")
    if _Path(_sys.argv[0]).name in ("hataori", "__main__.py", "-m") or _sys.argv[0] == "-m":  # the command line
        print(f"error: {message}", file=_sys.stderr)
        raise SystemExit(2)
    raise ImportError(message)


_check_model_is_ours()
