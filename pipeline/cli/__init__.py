"""The `hataori` command line: one module per command group, each a thin layer that parses
arguments, calls the library and turns its errors into one `error:` line.

Whatever goes wrong ends in one line on stderr and a non-zero exit: 2 for bad input (a file, a
field, an argument; also what `fail` reports), 1 for anything unexpected. `--debug` (or
HATAORI_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
from typer import _click as click  # typer carries its own click; its exceptions are these

from pipeline.cli import api, dataset, finetune, inference, pretrain, run, tokenizer
from pipeline.cli import eval as eval_cli
from pipeline.cli.errors import describe

def _no_type_tag_on_flags() -> None:
    """typer's help shows `<bool>` beside every flag (`--no-progress <bool>`), which reads as if it
    took a value; flags show nothing, options keep their type (`--max-steps <int>`)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_no_type_tag_on_flags()

app = typer.Typer(
    name="hataori",
    help="Weave raw text into GPT models: tokenizers, datasets, pretraining and fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tokenizer.app, name="tokenizer")
app.add_typer(dataset.app, name="dataset")
app.add_typer(dataset.app, name="data", hidden=True)  # the name before 0.2; still works
app.command("pretrain")(pretrain.pretrain)
app.command("train", hidden=True)(pretrain.pretrain)  # the name before 0.2; still works
app.add_typer(finetune.app, name="finetune")
app.command("generate")(inference.generate)
app.command("chat")(inference.chat)
app.command("classify")(inference.classify_text)
app.command("export")(inference.export)
app.command("eval")(eval_cli.evaluate)
app.command("api")(api.api)
app.command("run")(run.run)
app.command("status")(run.status)
app.command("serve")(run.serve)
app.command("deploy")(run.deploy)


def version_text() -> str:
    """hataori's version, and the git commit of a source checkout when there is one."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        text = f"hataori {version('hataori')}"
    except PackageNotFoundError:
        text = "hataori (not installed)"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{text} (commit {commit})" if commit else text


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error instead of one line (or set HATAORI_DEBUG=1)."),
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print hataori's version (and git commit) and exit."),
) -> None:
    if debug:
        os.environ["HATAORI_DEBUG"] = "1"  # children (torchrun ranks) inherit it


def one_line(error: BaseException) -> str:
    """An exception as one line (see errors.describe): its message with line breaks folded, or its
    type when it has none."""
    text = " ".join(part.strip() for part in describe(error).splitlines() if part.strip())
    return text or type(error).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {one_line(message) if isinstance(message, BaseException) else message}", file=sys.stderr, flush=True)


class _CliLogHandler(logging.StreamHandler):
    """Progress lines of the library (`hataori` loggers) on stderr, with the time; replaced by
    Prefect's handlers inside a flow (pipeline.flows)."""


def _log_to_stderr() -> None:
    logger = logging.getLogger("hataori")
    if not any(isinstance(h, _CliLogHandler) for h in logger.handlers):
        handler = _CliLogHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main() -> None:
    warnings.showwarning = _show_warning
    _log_to_stderr()
    try:
        status = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else "")
        sys.exit(2)
    except click.exceptions.ClickException as e:  # a bad argument or option: one line, and where help is
        where = f" (see {e.ctx.command_path} --help)" if getattr(e, "ctx", None) is not None else ""
        print(f"error: {one_line(Exception(e.format_message()))}{where}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("HATAORI_DEBUG") == "1" or "--debug" in sys.argv:
            raise
        expected = isinstance(e, (ValueError, OSError, LookupError))
        hint = "" if expected else " (an unexpected error: run again with --debug for the traceback)"
        print(f"error: {one_line(e)}{hint}", file=sys.stderr, flush=True)
        sys.exit(2 if expected else 1)
    sys.exit(status if isinstance(status, int) else 0)
