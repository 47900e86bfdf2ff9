"""The HTTP face of a served model: OpenAI's /v1/models, /v1/completions and /v1/chat/completions
(JSON or server-sent events), /health, and the chat page at /."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from model.batched import BatchedDecoder, Sampling
from pipeline.api.engine import Engine
from pipeline.api.errors import APIError, BodyLimit, error_body, install_error_handlers
from pipeline.api.generation import Generation, GenerationFailed
from pipeline.api.prompts import Template, chat_prompt, completion_prompts
from pipeline.api.schemas import MAX_N, ChatRequest, CompletionRequest, SamplingRequest
from pipeline.api.settings import APISettings

PAGE = Path(__file__).parent / "static" / "index.html"
# The page is one file with its script and style inline; it may talk to this server only.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class ServedModel:
    name: str
    model: object  # model.gpt.GPT, LoRA merged, in eval mode
    tokenizer: object  # tokenizer_rs.Tokenizer
    template: Template | None  # None: never instruction-tuned, so no chat
    stop_ids: frozenset[int]

    @property
    def context(self) -> int:
        return self.model.config.context_length


def create_app(served: ServedModel, settings: APISettings) -> FastAPI:
    engine = Engine(BatchedDecoder(served.model, settings.max_batch), settings.max_queue)
    limit = min(settings.max_tokens or served.context, served.context)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="hataori", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    authorized = _key_check(settings.api_key)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": PAGE_POLICY,
                                                                         "Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> JSONResponse:
        state = {"status": "ok" if engine.failed is None else f"error: {engine.failed}", "model": served.name,
                 "chat": served.template is not None, "context_length": served.context, "max_tokens": limit,
                 "auth": settings.api_key is not None, **engine.stats()}
        return JSONResponse(state, status_code=200 if engine.failed is None else 503)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(served.name)]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorized)])
    async def model(name: str) -> dict:
        _check_model(served, name)
        return _model_card(served.name)

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check_model(served, body.model)
        prompts = completion_prompts(body, served.tokenizer, served.model.config.vocab_size, served.context)
        _check_count(len(prompts) * body.n)
        echoes = [served.tokenizer.decode(p) if body.echo else "" for p in prompts]
        per_choice = [p for p in prompts for _ in range(body.n)]
        generation = _start(engine, served, body, per_choice, limit)
        usage = _usage(sum(map(len, prompts)), generation)
        reply_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def envelope(choices: list[dict]) -> dict:
            return {"id": reply_id, "object": "text_completion", "created": created, "model": served.name,
                    "choices": choices}

        if body.stream:
            def chunk(delta) -> dict:
                echo = echoes[delta.index // body.n] if body.echo and not started.get(delta.index) else ""
                started[delta.index] = True
                return envelope([{"index": delta.index, "text": echo + delta.text, "logprobs": None,
                                  "finish_reason": delta.finish}])

            started: dict[int, bool] = {}
            return _stream(generation, chunk, lambda: {**envelope([]), "usage": usage()} if body.include_usage else None)
        if not await _run_unless_disconnected(generation, request):
            return Response(status_code=499)  # nobody is listening any more
        return JSONResponse({**envelope([{"index": c.index, "text": echoes[c.index // body.n] + c.text.text,
                                          "logprobs": None, "finish_reason": c.finish} for c in generation.choices]),
                             "usage": usage()})

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        _check_model(served, body.model)
        if served.template is None:
            raise APIError(400, f"the model {served.name!r} was never instruction-tuned, so it has no chat format; "
                                "use /v1/completions (or serve it with --chat-template alpaca)",
                           param="model", code="model_not_chat")
        _check_count(body.n)
        prompt = chat_prompt(body.messages, served.tokenizer, served.template, served.context,
                             body.max_tokens or limit)
        generation = _start(engine, served, body, [prompt.ids] * body.n, limit)
        usage = _usage(len(prompt.ids), generation)
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        headers = {"X-Dropped-Turns": str(prompt.dropped_turns)}

        def envelope(choices: list[dict], kind: str) -> dict:
            return {"id": reply_id, "object": kind, "created": created, "model": served.name, "choices": choices}

        if body.stream:
            def chunk(delta) -> dict:
                content = {"content": delta.text} if delta.text else {}
                return envelope([{"index": delta.index, "delta": content, "logprobs": None,
                                  "finish_reason": delta.finish}], "chat.completion.chunk")

            first = [envelope([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}], "chat.completion.chunk") for i in range(body.n)]
            last = (lambda: {**envelope([], "chat.completion.chunk"), "usage": usage()}) if body.include_usage else None
            return _stream(generation, chunk, last or (lambda: None), first=first, headers=headers)
        if not await _run_unless_disconnected(generation, request):
            return Response(status_code=499)
        return JSONResponse({**envelope([{"index": c.index, "message": {"role": "assistant", "content": c.text.text},
                                          "logprobs": None, "finish_reason": c.finish} for c in generation.choices],
                                        "chat.completion"), "usage": usage()}, headers=headers)

    return app


# ---------------------------------------------------------------------------------- helpers


def _key_check(api_key: str | None) -> Callable:
    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key (send the header Authorization: Bearer KEY)",
                           code="invalid_api_key")

    return authorized


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "hataori"}


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves {served.name!r}", param="model",
                       code="model_not_found")


def _check_count(sequences: int) -> None:
    if sequences > MAX_N:
        raise APIError(400, f"the request asks for {sequences} sequences (prompts x n); at most {MAX_N}", param="n")


def _start(engine: Engine, served: ServedModel, body: SamplingRequest, prompts: list[list[int]],
           limit: int) -> Generation:
    if body.max_tokens is not None and body.max_tokens > limit:
        raise APIError(400, f"max_tokens is {body.max_tokens}; this server allows at most {limit}", param="max_tokens")
    samplings = []
    for i, prompt in enumerate(prompts):
        room = served.context + 1 - len(prompt)  # the last token needs no position of its own
        samplings.append(Sampling(max_new_tokens=max(1, min(body.max_tokens or room, limit)),
                                  temperature=body.temperature, top_k=body.top_k,
                                  top_p=body.top_p if body.top_p < 1 else None,
                                  seed=_choice_seed(body.seed, i % body.n),
                                  stop_ids=served.stop_ids))
    return Generation(engine, served.tokenizer, prompts, samplings, body.stops)


def _choice_seed(seed: int | None, choice: int) -> int | None:
    """Choice j of n draws with seed + j: choice 0 is what the same request with n=1 gives."""
    if seed is None or choice == 0:
        return seed
    return (seed + choice) % 2**64


def _usage(prompt_tokens: int, generation: Generation) -> Callable[[], dict]:
    def usage() -> dict:
        done = generation.completion_tokens
        return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}

    return usage


def _sse(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _stream(generation: Generation, chunk: Callable, last: Callable[[], dict | None], *, first: list[dict] = (),
            headers: dict | None = None) -> StreamingResponse:
    """Server-sent events: `first`, one chunk per delta, `last()` (usage), then [DONE]. A client
    that disconnects cancels the stream, and with it the generation (its rows freed at once)."""

    async def events() -> AsyncIterator[bytes]:
        try:
            for payload in first:
                yield _sse(payload)
            async for delta in generation.deltas():
                yield _sse(chunk(delta))
            tail = last()
            if tail is not None:
                yield _sse(tail)
            yield _sse("[DONE]")
        except GenerationFailed as e:
            yield _sse(error_body(500, str(e)))
        finally:
            generation.cancel()

    # The background task also runs when the stream was cancelled before its first chunk.
    return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(generation.cancel),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})


async def _run_unless_disconnected(generation: Generation, request: Request) -> bool:
    """Waits for every choice to finish (True); a client that leaves first cancels the generation (False)."""
    work = asyncio.ensure_future(generation.run())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            generation.cancel()
    if not work.done():  # cancelled just now: the client left
        return False
    try:
        work.result()
    except GenerationFailed as e:
        raise APIError(500, str(e)) from None
    return True


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
