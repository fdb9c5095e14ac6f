"""``python -m filejobs.cli`` runs the ``filejobs`` command."""

from filejobs.cli import app

app()
