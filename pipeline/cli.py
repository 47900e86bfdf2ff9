"""The `hataori` command line."""

from __future__ import annotations

import typer

from pipeline.data_cli import app as data_app
from pipeline.finetune_cli import app as finetune_app
from pipeline.finetune_cli import chat as chat_command
from pipeline.finetune_cli import classify_text as classify_command
from pipeline.model_cli import export as export_command
from pipeline.model_cli import generate as generate_command
from pipeline.model_cli import train as train_command
from pipeline.run_cli import deploy as deploy_command
from pipeline.run_cli import run as run_command
from pipeline.run_cli import serve as serve_command
from pipeline.run_cli import status as status_command
from pipeline.tokenizer_cli import app as tokenizer_app

app = typer.Typer(
    name="hataori",
    help="Weave raw text into GPT models: tokenizers, datasets, pretraining and fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(data_app, name="data")
app.command("train")(train_command)
app.command("generate")(generate_command)
app.add_typer(finetune_app, name="finetune")
app.command("classify")(classify_command)
app.command("chat")(chat_command)
app.command("export")(export_command)
app.command("run")(run_command)
app.command("status")(status_command)
app.command("serve")(serve_command)
app.command("deploy")(deploy_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
