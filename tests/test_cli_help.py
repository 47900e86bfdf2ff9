"""A CLI that teaches: every command's help has an example, every option says what it does, flags
carry no `<bool>` tag, `hataori --version` answers; the old command names still work."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app


def commands(group, path=()):
    """(command path, click command) for every visible command, through the groups."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


ALL = list(commands(typer.main.get_command(app)))


def test_every_command_is_listed():
    names = {" ".join(p) for p, _ in ALL}
    assert {"pretrain", "generate", "chat", "run", "status", "dataset build", "tokenizer encode", "finetune instruct",
            "eval", "api"} <= names, names


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_help_teaches(path, command):
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "Example:" in r.output, f"hataori {' '.join(path)} --help has no example"
    assert "<bool>" not in r.output
    undocumented = [p.opts[0] for p in command.params if getattr(p, "help", None) in (None, "") and p.param_type_name == "option"]
    assert not undocumented, f"hataori {' '.join(path)}: options without help: {undocumented}"


def test_version_names_the_release_and_commit():
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("hataori 0.") and "commit" in r.stdout, r.stdout + r.stderr


def test_device_defaults_to_auto_everywhere():
    devices = {" ".join(p): next(q.default for q in c.params if q.name == "device")
               for p, c in ALL if any(q.name == "device" for q in c.params)}
    assert devices and set(devices.values()) == {"auto"}, devices


@pytest.mark.parametrize("old", [["train"], ["data", "build"]])
def test_the_old_command_names_still_work(old):
    r = CliRunner().invoke(app, [*old, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "Example:" in r.output
