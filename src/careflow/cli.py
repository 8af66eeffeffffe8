"""The ``careflow`` command: serve, worker, migrate, token, demo.

A problem the operator can fix (a setting, a database that cannot be reached, a port in
use) ends the command with one line on standard error and exit status 1; ``careflow
--debug …`` shows the traceback as well. Usage mistakes (an unknown option, a value out of
range) are refused by the option parser with exit status 2.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from careflow import __version__

if TYPE_CHECKING:
    from careflow.config import Settings

app = typer.Typer(
    name="careflow",
    help="careflow: automations and pathway routing for practice platforms.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: flags read as --worker / --no-worker, not as a <bool> value.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# How long `serve`, `worker` and `migrate` wait for the database to answer at start.
DATABASE_CHECK_SECONDS = 15.0


class CommandError(Exception):
    """A problem the operator can fix, told in one line."""


class _Options:
    debug = False


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (as uvicorn does for ``serve``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"careflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, print its traceback too.")
    ] = False,
) -> None:
    _Options.debug = debug


def _settings() -> Settings:
    from careflow.config import get_settings

    return get_settings()


def _start_logging(settings: Settings) -> None:
    import structlog

    from careflow.logging import configure_logging

    configure_logging(settings)
    if settings.uses_development_secret and settings.env == "development":
        structlog.get_logger("careflow").warning(
            "config.development_jwt_secret",
            hint="set CAREFLOW_JWT_SECRET before handling real data",
        )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    """The innermost cause's message on one line (drivers wrap what the server said)."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    return " ".join(str(exc).split()) or type(exc).__name__


async def _check_database(settings: Settings) -> None:
    """One ``SELECT 1``: a missing database, a refused login or an unreachable server is
    told at start, in one line, rather than by a worker retrying for ever."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from careflow.db import create_engine

    where = _safe_url(settings.database_url)
    if settings.is_sqlite:
        # The file opened (and created, as serve and migrate would) by the standard module:
        # a failed aiosqlite connect leaves its thread calling back into a closed loop.
        path = make_url(settings.database_url).database
        if path and path != ":memory:":
            try:
                sqlite3.connect(path).close()
            except sqlite3.Error as exc:
                raise CommandError(f"cannot open the database {where}: {_reason(exc)}") from exc
        return
    engine = create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise CommandError(
            f"cannot connect to the database {where}: no answer within {DATABASE_CHECK_SECONDS:g} s"
        ) from None
    except Exception as exc:
        raise CommandError(f"cannot connect to the database {where}: {_reason(exc)}") from exc
    finally:
        await engine.dispose()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts (the worker inside ``serve``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise CommandError(f"cannot listen on {host}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"port {port} on {host} is already in use") from exc
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _http_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, metavar="PORT", help="Port to listen on (0: any free one)."
        ),
    ] = 8000,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run a job worker inside the API process; --no-worker when `careflow worker` "
            "processes run elsewhere.",
        ),
    ] = True,
) -> None:
    """Serve the API (with a job worker inside, unless --no-worker)."""
    import uvicorn

    from careflow.app import create_app
    from careflow.auth import TokenVerifier
    from careflow.token_keys import KeyConfigError

    settings = _settings()
    # Token keys are checked before anything is served: a key that cannot be used would
    # otherwise answer 401 to every request.
    verifier = TokenVerifier(settings)
    try:
        verifier.prepare()
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from exc
    sock = _bind(host, port)
    try:
        _run(_check_database(settings))
        _start_logging(settings)
        url = _http_url(sock)

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started:
                    typer.echo(f"careflow {__version__} listening on {url}")

        api = create_app(settings, run_worker=worker, token_verifier=verifier)
        server = Server(uvicorn.Config(api, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CommandError("the API did not start (its error is logged above)")


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            metavar="N",
            help="Jobs run at once in this process [default: CAREFLOW_WORKER_CONCURRENCY].",
        ),
    ] = None,
) -> None:
    """Run a job worker until SIGTERM/SIGINT (finishes or releases in-flight jobs)."""
    from careflow.worker_process import run_worker_process

    settings = _settings()
    _run(_check_database(settings))
    _start_logging(settings)
    _run(run_worker_process(concurrency=concurrency))


@app.command()
def migrate() -> None:
    """Apply schema migrations to CAREFLOW_DATABASE_URL."""
    from careflow.db import create_engine
    from careflow.migrate import upgrade_head

    settings = _settings()
    asyncio.run(_check_database(settings))

    async def run() -> None:
        engine = create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
        try:
            await upgrade_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo("migrations applied")


@app.command()
def token(
    org: Annotated[int, typer.Option("--org", min=1, metavar="ID", help="Organisation id.")] = 1,
    role: Annotated[
        str,
        typer.Option(
            "--role", metavar="ROLE", help="admin, specialist, patient, support or service."
        ),
    ] = "admin",
    sub: Annotated[str, typer.Option("--sub", metavar="SUB", help="Subject (user id).")] = "usr_1",
    ttl: Annotated[
        int,
        typer.Option("--ttl", min=1, metavar="SECONDS", help="Seconds until the token expires."),
    ] = 86_400,
) -> None:
    """Print a signed token for local use."""
    from careflow.auth import Role, issue_token

    try:
        Role(role)
    except ValueError:
        raise typer.BadParameter(f"unknown role {role!r}", param_hint="--role") from None
    typer.echo(issue_token(_settings(), org_id=org, role=role, sub=sub, ttl_seconds=ttl))


@app.command("console-url")
def console_url(
    org: Annotated[int, typer.Option("--org", min=1, metavar="ID", help="Organisation id.")] = 1,
    role: Annotated[
        str,
        typer.Option("--role", metavar="ROLE", help="admin or specialist (or any other role)."),
    ] = "admin",
    sub: Annotated[
        str, typer.Option("--sub", metavar="SUB", help="Who signs in (audit entries).")
    ] = "console",
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="Where careflow serves [default: CAREFLOW_PUBLIC_URL, else http://127.0.0.1:8000].",
        ),
    ] = None,
) -> None:
    """Print a one-time sign-in link to the console (valid 5 minutes, for local use)."""
    from careflow.auth import Role
    from careflow.console import service
    from careflow.db import create_engine, create_sessionmaker
    from careflow.migrate import upgrade_head

    try:
        chosen = Role(role)
    except ValueError:
        raise typer.BadParameter(f"unknown role {role!r}", param_hint="--role") from None
    settings = _settings()
    asyncio.run(_check_database(settings))
    base = (url or settings.public_url or "http://127.0.0.1:8000").rstrip("/")

    async def mint() -> str:
        engine = create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
        try:
            if settings.is_sqlite:
                await upgrade_head(engine)  # as serve does on the embedded default
            now = datetime.now(UTC)
            async with create_sessionmaker(engine)() as session, session.begin():
                keys = await service.keys(session, now, None)
            return service.mint_ticket(keys, org_id=org, role=chosen, sub=sub, now=now)
        finally:
            await engine.dispose()

    ticket = asyncio.run(mint())
    typer.echo(f"{base}/console/login?ticket={ticket}")


@app.command()
def demo(
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            metavar="FILE",
            help="SQLite file to use [default: a fresh temporary one].",
        ),
    ] = None,
) -> None:
    """Show the whole mission end to end on the embedded default."""
    from careflow.demo import run_demo

    asyncio.run(run_demo(database))


def _describe(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors():
            # The message only: pydantic's full text quotes the value, which may be a secret.
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = "CAREFLOW_" + "_".join(str(part) for part in error["loc"]).upper()
                message = f"{name}: {message}"
            problems.append(message)
        return "configuration: " + "; ".join(problems)
    return f"{type(exc).__name__}: {_reason(exc)}"


def main() -> None:
    """The ``careflow`` entry point: the commands, with errors told in one line."""
    try:
        app(prog_name="careflow")
    except Exception as exc:
        if _Options.debug:
            raise
        typer.echo(f"careflow: error: {_describe(exc)} (--debug shows the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
