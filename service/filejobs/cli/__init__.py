"""The ``filejobs`` command: the service (``serve``, ``worker``, ``migrate``, ``keys``), batch
submission (``submit``) and one-job commands (``status``, ``wait``, ``list``, ``result``,
``cancel``, ``retry``, ``delete``, ``processors``) and the key's ``webhooks``."""

from __future__ import annotations

import typer

from filejobs.cli import jobs, keys, serve, submit, webhooks
from filejobs.cli.entry import Commands

app = typer.Typer(
    name="filejobs",
    cls=Commands,
    help="Upload a file, get 202 Accepted, process it in the background.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold an API key
)

serve.register(app)
submit.register(app)
jobs.register(app)
keys.register(app)
webhooks.register(app)

__all__ = ["app"]
