"""The `hataori` command line: one module per command group, each a thin layer that parses
arguments, calls the library and turns its errors into one `error:` line."""

from __future__ import annotations

import typer

from pipeline.cli import dataset, finetune, inference, pretrain, run, tokenizer

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
app.command("run")(run.run)
app.command("status")(run.status)
app.command("serve")(run.serve)
app.command("deploy")(run.deploy)


def main() -> None:
    app()
