"""The ``careflow`` command: serve, worker, migrate, token, demo."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="careflow: automations and pathway routing for practice platforms.", no_args_is_help=True
)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (as uvicorn does for ``serve``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="Serve the API only; run `careflow worker` elsewhere"),
    ] = False,
) -> None:
    """Serve the API (with the job worker inside, unless --no-worker)."""
    import uvicorn
    from pydantic import ValidationError

    from careflow.app import create_app
    from careflow.auth import TokenVerifier
    from careflow.config import get_settings
    from careflow.token_keys import KeyConfigError

    # Settings and token keys are checked before anything is served: a key that cannot be
    # used would otherwise answer 401 to every request. One line, and a non-zero exit.
    try:
        settings = get_settings()
        verifier = TokenVerifier(settings)
        verifier.prepare()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "_".join(str(part) for part in first["loc"]).upper()
        prefix = f"CAREFLOW_{where}: " if where else ""
        typer.echo(f"careflow serve: {prefix}{first['msg']}", err=True)
        raise typer.Exit(2) from None
    except KeyConfigError as exc:
        typer.echo(f"careflow serve: {exc}", err=True)
        raise typer.Exit(2) from None
    api = create_app(settings, run_worker=not no_worker, token_verifier=verifier)
    uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once in this process")
    ] = None,
) -> None:
    """Run a job worker until SIGTERM/SIGINT (finishes or releases in-flight jobs)."""
    from careflow.worker_process import run_worker_process

    _run(run_worker_process(concurrency=concurrency))


@app.command()
def migrate() -> None:
    """Apply schema migrations to CAREFLOW_DATABASE_URL."""
    from careflow.config import get_settings
    from careflow.db import create_engine
    from careflow.migrate import upgrade_head

    async def run() -> None:
        settings = get_settings()
        engine = create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
        try:
            await upgrade_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo("migrations applied")


@app.command()
def token(
    org: Annotated[int, typer.Option(help="Organisation id")] = 1,
    role: Annotated[
        str, typer.Option(help="admin, specialist, patient, support or service")
    ] = "admin",
    sub: Annotated[str, typer.Option(help="Subject (user id)")] = "usr_1",
    ttl: Annotated[int, typer.Option(help="Seconds until the token expires")] = 86_400,
) -> None:
    """Print a signed token for local use."""
    from careflow.auth import Role, issue_token
    from careflow.config import get_settings

    try:
        Role(role)
    except ValueError:
        raise typer.BadParameter(f"unknown role {role!r}", param_hint="--role") from None
    typer.echo(issue_token(get_settings(), org_id=org, role=role, sub=sub, ttl_seconds=ttl))


@app.command()
def demo(
    database: Annotated[
        str | None, typer.Option(help="SQLite file to use (default: a fresh temporary one)")
    ] = None,
) -> None:
    """Show the whole mission end to end on the embedded default."""
    from careflow.demo import run_demo

    asyncio.run(run_demo(database))


if __name__ == "__main__":
    app()
