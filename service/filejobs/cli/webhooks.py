"""``filejobs webhooks add|list|remove|rotate``: the calling key's signed webhooks, through the API
(``--server`` / ``--api-key`` or ``FILEJOBS_URL`` / ``FILEJOBS_API_KEY``, as the job commands)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from filejobs.cli.common import ApiKeyOption, JsonOption, ServerOption, handle_errors, print_json, stdout
from filejobs.cli.jobs import _client
from filejobs.client.models import Webhook

webhooks_app = typer.Typer(
    name="webhooks",
    help="Signed webhooks (Standard Webhooks) of your API key: job events POSTed to your URL.",
    no_args_is_help=True,
)

WebhookId = Annotated[str, typer.Argument(help="The webhook's id (ep_…).", show_default=False)]


def _show(webhook: Webhook, as_json: bool) -> None:
    if as_json:
        print_json(webhook.model_dump(mode="json"))
        return
    typer.echo(f"{webhook.id}  {webhook.url}  events: {', '.join(webhook.events)}")
    if not webhook.secret.endswith("…"):
        typer.echo(f"secret (shown once; verify signatures with it): {webhook.secret}")


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="An https:// URL that resolves to public addresses.")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", help="job.succeeded, job.failed or job.cancelled (repeat; default all)."
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="A note for yourself.")] = "",
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a URL for the key's job events and print its signing secret (shown this once)."""
    with handle_errors(server), _client(server, api_key) as client:
        _show(client.add_webhook(url, events=event or None, description=description), as_json)


@webhooks_app.command("list")
def list_(server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """The key's webhooks: id, URL, events, whether enabled (and why not)."""
    with handle_errors(server), _client(server, api_key) as client:
        webhooks = client.webhooks()
    if as_json:
        for webhook in webhooks:
            print_json(webhook.model_dump(mode="json"))
        return
    table = Table("id", "url", "events", "enabled", "secret")
    for webhook in webhooks:
        enabled = "yes" if webhook.enabled else f"no: {webhook.disabled_reason}"
        table.add_row(webhook.id, webhook.url, ", ".join(webhook.events), enabled, webhook.secret)
    stdout().print(table)


@webhooks_app.command("remove")
def remove(webhook_id: WebhookId, server: ServerOption = None, api_key: ApiKeyOption = None) -> None:
    """Remove a webhook; its undelivered events are not sent."""
    with handle_errors(server), _client(server, api_key) as client:
        client.remove_webhook(webhook_id)


@webhooks_app.command("rotate")
def rotate(
    webhook_id: Annotated[
        str | None, typer.Argument(help="The webhook's id (ep_…).", show_default=False)
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Rotate (or make) the key's default secret for callback_url.")
    ] = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a webhook a new secret and print it; the old one keeps signing too for a grace period."""
    if (webhook_id is None) == (not default):
        typer.echo("filejobs webhooks rotate: name a webhook id, or --default (not both)", err=True)
        raise typer.Exit(2)
    with handle_errors(server), _client(server, api_key) as client:
        if webhook_id is not None:
            _show(client.rotate_webhook_secret(webhook_id), as_json)
            return
        secret = client.rotate_default_secret()
    if as_json:
        print_json(secret.model_dump(mode="json"))
    else:
        typer.echo(secret.secret)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app)
