"""`distill serve`: the HTTP API on top of the pipeline.

    db.py         tables (tenants, users, tokens, jobs, events, assignments) and the engine
    migrations/   the schema as Alembic revisions, applied on startup
    accounts.py   tenants, users, roles and API tokens (random, shown once, stored hashed)
    uploads.py    a spec upload: safe extraction, then exactly `distill validate`'s checks
    jobs.py       the job record and its status machine, events, cancel, spending caps
    runner.py     the one place the service calls pipeline stages (in a worker process)
    executor.py   the seam that runs jobs: `local` = worker child processes, a bounded number at a time
    worker.py     the child process: runs one job's stages, reports status and events
    app.py        the FastAPI application; routers/ one module per resource; deps.py auth + session
    remote.py     the HTTP client behind `distill remote`
"""
