"""Serving a released student: an OpenAI-compatible API with dynamic batching, and consented capture of
real inputs for the next training run.

    engine.py   the scheduler loop: prefill arrivals, decode the batch, sample, emit
    text.py     streaming detokenisation with stop strings
    schemas.py  the OpenAI wire format
    api.py      the FastAPI app factory (routes, auth, SSE, errors)
    capture.py  consent, redaction, the JSONL capture log, retention and deletion
    server.py   open a verified bundle and run the app (`distill serve-model`)
"""
