"""`tinylm serve`: an OpenAI-compatible HTTP server with batched decoding and a playground.

    engine.py   batched decoding on a worker thread (KV-cache slots joined and left)
    app.py      the FastAPI app: routes, request schemas, OpenAI-shaped errors, streaming
    static/     the playground page served at GET /

FastAPI and uvicorn are an optional extra: `pip install tinylm[serve]`.
"""
