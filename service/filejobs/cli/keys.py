"""``filejobs keys create|list|revoke``: the API keys, made and revoked where the database is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from filejobs.cli.common import stdout
from filejobs.cli.server_extra import require_server
from filejobs.errors import Problem
from filejobs.settings import get_settings

if TYPE_CHECKING:
    from filejobs.db import Database

keys_app = typer.Typer(
    name="keys",
    help="Make, list and revoke API keys. Once a key exists, every /v1 request needs one.",
    no_args_is_help=True,
)


@keys_app.callback()
def _server_installed(ctx: typer.Context) -> None:
    require_server(f"keys {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "keys")


def _database() -> Database:
    from filejobs.db import Database
    from filejobs.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if settings.auto_migrate:
        upgrade(url)
    return Database(url)


@keys_app.command("create")
def create(name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it).")]) -> None:
    """Make a key and print it, alone, on standard output: it is shown this once and stored only as
    a hash."""
    from filejobs import keys

    db = _database()
    try:
        _key, secret = keys.create_key(db, name)
    except (ValueError, Problem) as exc:
        typer.echo(f"filejobs keys create: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    typer.echo(secret)


@keys_app.command("list")
def list_(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """The keys: name, the first characters, when made and when revoked (never the key itself)."""
    import json

    from filejobs import keys

    db = _database()
    try:
        rows = keys.list_keys(db)
    finally:
        db.dispose()
    if json_output:
        for key in rows:
            typer.echo(
                json.dumps(
                    {
                        "name": key.name,
                        "prefix": key.prefix,
                        "created_at": key.created_at.isoformat(),
                        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                    }
                )
            )
        return
    table = Table("name", "key starts with", "created", "revoked")
    for key in rows:
        table.add_row(
            key.name,
            key.prefix + "…",
            key.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC") if key.revoked_at else "",
        )
    stdout().print(table)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: requests with it get 401 at once. Its jobs are kept until retention."""
    from filejobs import keys

    db = _database()
    try:
        key = keys.revoke_key(db, name)
    except Problem as exc:
        typer.echo(f"filejobs keys revoke: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    typer.echo(f"revoked {key.name}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app)
