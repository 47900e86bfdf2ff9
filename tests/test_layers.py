"""The house rules, checked on the source: imports only point down the layers, and no two modules
import each other, directly or round a loop (function-local imports count too).

    tokenizer_rs  <  model core  <  training  <  pipeline  <  CLI
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = {"config", "gpt", "lora", "classifier", "checkpoint", "hf", "generate", "shard_format", "dataset", "files",
        "capacity", "version", "chunked_loss", "batched"}
LAYERS = ("tokenizer_rs", "core", "training", "pipeline", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    top, *rest = module.split(".")
    if top == "tokenizer_rs":
        return "tokenizer_rs"
    if top == "model":
        return "core" if len(rest) == 1 and rest[0] in CORE else ("core" if not rest else "training")
    if top == "pipeline":
        return "cli" if rest[:1] == ["cli"] else "pipeline"
    return None  # the standard library and third-party packages


def sources() -> dict[str, Path]:
    files = [*(REPO / "model").rglob("*.py"), *(REPO / "pipeline").rglob("*.py")]
    return {module_name(p): p for p in files}


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from package import module`
    return {name for name in found if name in known or name.split(".")[0] == "tokenizer_rs"}


def graph() -> dict[str, set[str]]:
    mods = sources()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def test_imports_only_point_down():
    upward = []
    for module, targets in graph().items():
        own = LAYERS.index(layer_of(module))
        for target in targets:
            if LAYERS.index(layer_of(target)) > own:
                upward.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert not upward, "\n".join(sorted(upward))


def test_the_core_never_reaches_into_fine_tuning_or_the_pipeline():
    for module, targets in graph().items():
        if layer_of(module) == "core":
            assert not {t for t in targets if t.startswith(("model.finetune", "model.loop", "pipeline"))}, module


def test_no_import_cycles():
    edges = graph()
    # A package's __init__ importing its own submodules is how Python packages work, not a cycle.
    edges = {m: {t for t in ts if t != m and not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt in edges and state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if state.get(start) is None:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def test_every_module_has_a_layer():
    assert all(layer_of(m) in LAYERS for m in sources())


def test_a_foreign_model_package_is_refused_by_name(tmp_path):
    """hataori's import names are `model` and `pipeline` (the layout); another `model` first on
    sys.path (a user's model.py beside them) is named in one line, not imported by mistake."""
    import os
    import subprocess
    import sys

    (tmp_path / "model.py").write_text("WEIGHTS = 'mine'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: hataori's 'model' package is shadowed by {tmp_path / 'model.py'}: another module "
                                "named 'model' comes first on sys.path. Rename it, run from another directory, or give "
                                "hataori its own virtual environment")
    library = subprocess.run([sys.executable, "-c", "import pipeline"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "ImportError: hataori's 'model' package is shadowed" in library.stderr
    ours = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True, text=True)
    assert ours.returncode == 0 and ours.stdout.startswith("hataori ")
