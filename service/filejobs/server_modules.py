"""The import names of what the ``server`` extra installs (pyproject.toml), for the service's
commands to look for (``filejobs.cli.server_extra``) and the client-only tests to block. Nothing
is imported here: this module must import on a client-only install."""

#: The import names of the ``server`` extra's distributions (pyproject.toml), in its order.
SERVER_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "python_multipart",
    "aiofiles",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "puremagic",
    "charset_normalizer",
    "psycopg",
    "PIL",
    "pypdf",
    "cryptography",
    "prometheus_client",
    "celery",
    "redis",
    "fastapi_offline",
    "boto3",
    "standardwebhooks",
)
