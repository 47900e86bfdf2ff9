"""`hataori api`: an OpenAI-compatible server and web chat page for a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.errors import fail


def api(
    checkpoint: Path = typer.Option(..., help="Run directory, checkpoint directory or transformers GPT-2 directory."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port to listen on."),
    api_key: Optional[str] = typer.Option(None, envvar="HATAORI_API_KEY", show_envvar=True,
                                          help="Bearer token every /v1 request must carry."),
    max_batch: int = typer.Option(8, min=1, max=256, help="Sequences decoded together."),
    max_queue: int = typer.Option(64, min=0, help="Sequences that may wait for a free row; beyond: 503."),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="Largest max_tokens a request may ask (default: the context)."),
    max_body_bytes: int = typer.Option(1 << 20, min=1024, help="Largest request body in bytes; beyond: 413."),
    name: Optional[str] = typer.Option(None, help="Model name clients send (default: the directory's name)."),
    chat_template: Optional[str] = typer.Option(None, help="'alpaca': let a model that was never instruction-tuned chat."),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (default: torch's, one per core)."),
) -> None:
    """Serve a model over HTTP: OpenAI's /v1/completions and /v1/chat/completions (streaming too), and a
    chat page at /. Concurrent requests are decoded together.

    Example: hataori api --checkpoint runs/books-instruct --port 8000   (then open http://127.0.0.1:8000/)
    """
    import logging

    from pipeline.api.settings import APISettings, check_exposure, check_port

    try:
        check_exposure(host, api_key)  # torch-free: a mistake is reported before seconds of importing and loading
        check_port(host, port)
        settings = APISettings(api_key=api_key, max_batch=max_batch, max_queue=max_queue, max_tokens=max_tokens,
                               max_body_bytes=max_body_bytes)
    except ValueError as e:
        fail(e)
    # Heavy imports (torch, fastapi) here, not at the top: every hataori command imports this module.
    from pipeline.api.server import serve, served_model
    from pipeline.cli.inference import load_for_inference
    if threads:
        import torch

        torch.set_num_threads(threads)
    model, tokenizer, directory = load_for_inference(checkpoint, device)
    try:
        served = served_model(model, tokenizer, directory, name or Path(checkpoint).resolve().name, chat_template)
    except ValueError as e:
        fail(f"{checkpoint}: {e}" if str(checkpoint) not in str(e) else str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    serve(served, settings, host, port)
