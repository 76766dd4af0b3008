"""`distill serve` (the HTTP API and its job runner) and `distill admin` (tenants, users, tokens)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import MAX_USD, PortOpt

DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Where jobs' files and the embedded database live.")]
DatabaseOpt = Annotated[Optional[str], typer.Option("--database-url", envvar="DISTILL_DATABASE_URL",
                                                    help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data-dir).")]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _database_url(data_dir: Path, url: str | None) -> str:
    """The database to use (SQLite in `data_dir` by default), checked by connecting once: a URL that names
    no known database, a driver that is not installed or a server that does not answer is a ConfigError
    naming --database-url, before anything is served. The password never appears in the message."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from distill.errors import ConfigError, Problem
    from distill.service.db import default_url

    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return default_url(data_dir)
    hint = "e.g. postgresql+psycopg://user@host/db, or leave it out for SQLite in --data-dir"
    try:
        parsed = make_url(url)
        engine = create_engine(parsed)
        engine.connect().close()
        engine.dispose()
    except (ArgumentError, NoSuchModuleError, ValueError):
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        raise ConfigError(Problem(f"not a database URL this server can use ({scheme})", key="--database-url",
                                  hint=hint)) from None
    except ImportError as exc:
        raise ConfigError(Problem(f"the database driver is not installed ({exc.name})", key="--database-url",
                                  hint=hint)) from None
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        where = parsed.render_as_string(hide_password=True)
        raise ConfigError(Problem(f"cannot connect to {where}: {reason}", key="--database-url", hint=hint)) from None
    return url


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: PortOpt = 8000,
    data_dir: DataDirOpt = Path("service-data"),
    database_url: DatabaseOpt = None,
    executor: Annotated[str, typer.Option("--executor", help="How stages run: local (worker child processes), or ray (each stage a task on a Ray cluster; needs distill[ray]).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", help="With --executor ray: the cluster's HOST:PORT (default: $RAY_ADDRESS).")] = None,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1, max=1024, help="Jobs running at once (local executor).")] = 1,
    demo: Annotated[bool, typer.Option("--demo", help="Create a demo tenant and users, submit the offline quickstart, print tokens.")] = False,
    tenant_queued: Annotated[int, typer.Option("--tenant-queued", min=1, max=100_000, help="Jobs one tenant may have waiting to run (more: 429).")] = 20,
    tenant_running: Annotated[int, typer.Option("--tenant-running", min=1, max=1024, help="Jobs of one tenant running at once.")] = 1,
    tenant_per_minute: Annotated[int, typer.Option("--tenant-per-minute", min=1, max=100_000, help="Submissions one tenant may make a minute (more: 429).")] = 10,
    worker_attempts: Annotated[int, typer.Option("--worker-attempts", min=1, max=100, help="Workers a job may lose (killed, out of memory) before it fails; each resumes its stage.")] = 3,
) -> None:
    """Run the API (/v1/, /healthz, /openapi.json) and the job runner; the database is migrated on start."""
    import uvicorn

    from distill.errors import ConfigError, Problem
    from distill.service.app import Settings, create_app
    from distill.service.db import make_engine, make_sessions, migrate
    from distill.service.quotas import Limits

    if executor not in ("local", "ray"):
        raise ConfigError(Problem(f"unknown executor {executor!r}", key="--executor", hint="use local or ray"))
    if executor == "ray":
        from distill.scale import import_ray

        import_ray()
        if not ray_address:
            raise ConfigError(Problem("--executor ray needs the cluster's address", key="--ray-address",
                                      hint="pass --ray-address HOST:PORT or set $RAY_ADDRESS"))
    url = _database_url(data_dir, database_url)
    base = f"http://{host}:{port}"
    if demo:
        from distill.service.demo import demo_jobs, set_up_demo

        migrate(url)
        engine = make_engine(url)
        with make_sessions(engine)() as session:
            tokens = set_up_demo(session, data_dir.resolve())
            jobs = [(job.id, job.spec_name) for job in demo_jobs(session)]
        engine.dispose()
        _say("demo users (tokens are new at every start; older demo tokens are revoked):")
        for name, token in tokens.items():
            _say(f"  {name:<14} {token}")
        _say("demo jobs: " + ", ".join(f"{name} ({job_id})" for job_id, name in jobs)
             + "; the pilot waits for the reviewer's sign-off")
        _say(f"web app: {base}/ui/  (sign in with a token above: the reviewer's to review, the customer's to download)")
        _say(f"try: DISTILL_SERVER={base} DISTILL_TOKEN={tokens['demo-customer']} distill remote status")
    else:
        _say(f"first admin: distill admin --data-dir {data_dir} user NAME --role admin  (prints a token)")
    _say(f"distill serves on {base}  (API under /v1/, docs at {base}/docs, data in {data_dir.resolve()})")
    limits = Limits(queued=tenant_queued, running=tenant_running, per_minute=tenant_per_minute,
                    worker_attempts=worker_attempts)
    settings = Settings(data_dir=data_dir, database_url=url, executor=executor, max_jobs=max_jobs,
                        ray_address=ray_address if executor == "ray" else None, limits=limits)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


admin = typer.Typer(name="admin", help="Create tenants, users and API tokens (talks to the database directly).",
                    no_args_is_help=True, add_completion=False)
_state: dict = {}


@admin.callback()
def _admin_options(data_dir: DataDirOpt = Path("service-data"), database_url: DatabaseOpt = None) -> None:
    _state.update(data_dir=data_dir, url=database_url)


def _session():
    from distill.service.db import make_engine, make_sessions, migrate

    url = _database_url(_state["data_dir"], _state["url"])
    migrate(url)
    return make_sessions(make_engine(url))()


@admin.command()
def tenant(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    spending_cap: Annotated[Optional[float], typer.Option("--spending-cap", min=0.0, max=MAX_USD, help="USD the tenant's jobs may spend in all.")] = None,
    allow_key_env: Annotated[Optional[list[str]], typer.Option("--allow-key-env", help="An API-key variable its specs may name (repeatable).")] = None,
    dataset_download: Annotated[bool, typer.Option("--dataset-download", help="Customers may download the reviewed dataset.")] = False,
) -> None:
    """Create a tenant; prints its id."""
    from distill.service.accounts import create_tenant

    with _session() as session:
        print(create_tenant(session, name, spending_cap_usd=spending_cap, allowed_key_envs=allow_key_env or [],
                            dataset_download=dataset_download).id)


@admin.command()
def user(
    name: Annotated[str, typer.Argument(help="User name (shown in the audit log).")],
    role: Annotated[str, typer.Option("--role", help="admin, reviewer or customer.")],
    tenant: Annotated[Optional[str], typer.Option("--tenant", help="The customer's tenant.")] = None,
    assign: Annotated[Optional[list[str]], typer.Option("--assign", help="A tenant this reviewer reviews (repeatable).")] = None,
) -> None:
    """Create a user and a first token; prints the token (shown this once)."""
    from distill.service.accounts import create_user, issue_token

    with _session() as session:
        created = create_user(session, name, role, tenant=tenant, assign=assign or [])
        token_row, token = issue_token(session, created)
        _say(f"user {created.name} ({created.id}, {created.role}); token {token_row.id}:")
        print(token)


@admin.command()
def token(name: Annotated[str, typer.Argument(help="User name or id.")]) -> None:
    """Issue another token for a user; prints it (shown this once)."""
    from distill.service.accounts import find_user, issue_token

    with _session() as session:
        token_row, text = issue_token(session, find_user(session, name))
        _say(f"token {token_row.id}:")
        print(text)


@admin.command()
def revoke(token_id: Annotated[str, typer.Argument(help="Token id (tok_...).")]) -> None:
    """Revoke a token: it stops working at once."""
    from distill.service.accounts import revoke_token

    with _session() as session:
        revoke_token(session, token_id)
        _say(f"revoked {token_id}")
