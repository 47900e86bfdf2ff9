"""`hataori api`: an OpenAI-compatible HTTP server and a web chat page for any hataori model.

    settings.py    limits and where the server may listen (torch-free: checked before loading)
    engine.py      the decoding thread: a bounded queue fed into model.batched.BatchedDecoder
    generation.py  one request's choices on the engine, seen from the event loop
    schemas.py     the OpenAI wire format (pydantic)
    errors.py      OpenAI error JSON for every failure; the request body limit
    prompts.py     requests -> token ids (chat in the checkpoint's own template)
    text.py        token ids -> streamed text, with stop strings
    app.py         the FastAPI application; static/index.html is the chat page
    server.py      the served model (name, chat template, stop token) and uvicorn
"""
