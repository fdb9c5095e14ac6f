"""``python -m service.cli`` runs the ``filejobs`` command."""

from service.cli import app

app()
