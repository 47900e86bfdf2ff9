"""Serving a loaded model: what it is called, whether it chats (and in which template), and
uvicorn. Binding anything but a loopback address needs an API key (settings.check_exposure)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from model.config import EOT
from model.templates import ALPACA_INPUT, ALPACA_TEMPLATE, is_instruction_tuned, template_of
from pipeline.api.app import ServedModel, create_app
from pipeline.api.prompts import Template
from pipeline.api.settings import APISettings, check_exposure

log = logging.getLogger("hataori.api")


def served_model(model, tokenizer, directory: Path, name: str, chat_template: str | None = None) -> ServedModel:
    """The model as the server presents it. It chats when it was instruction-tuned (in the template
    it was tuned with, as hataori chat); `chat_template="alpaca"` lets any other model chat in Alpaca's."""
    if getattr(model.config, "labels", None) is not None:
        raise ValueError(f"{directory}: a classifier (labels {', '.join(model.config.labels)}), not a language model")
    if is_instruction_tuned(directory):
        template = Template(*template_of(directory))
    elif chat_template == "alpaca":
        template = Template(ALPACA_TEMPLATE, ALPACA_INPUT)
    elif chat_template is not None:
        raise ValueError(f"unknown chat template {chat_template!r} (choose alpaca)")
    else:
        template = None
    eot = tokenizer.token_to_id(EOT)
    return ServedModel(name=name, model=model.eval(), tokenizer=tokenizer, template=template,
                       stop_ids=frozenset() if eot is None else frozenset({eot}))


def serve(served: ServedModel, settings: APISettings, host: str, port: int) -> None:
    """Runs until SIGINT/SIGTERM; requests in flight get a few seconds to finish."""
    import uvicorn

    check_exposure(host, settings.api_key)
    app = create_app(served, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5,
                            server_header=False, limit_concurrency=max(1000, 4 * settings.max_queue))
    shown = f"[{host}]" if ":" in host else host
    log.info("serving %s on http://%s:%d (chat page: /, OpenAI API: /v1)", served.name, shown, port)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again to the handler it
    # found: a stop that was asked for, so that handler exits with status 0.
    previous = {sig: signal.signal(sig, _exit_cleanly) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)
