"""Where the client finds the server: arguments first, then ``FILEJOBS_URL`` / ``FILEJOBS_API_KEY``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    """The client's settings, read from ``FILEJOBS_*`` environment variables.

    The server's own ``FILEJOBS_*`` variables share the prefix and are ignored here.
    """

    model_config = SettingsConfigDict(env_prefix="FILEJOBS_", extra="ignore")

    #: The service's base URL (a path prefix is kept: ``https://host/filejobs``).
    url: str = DEFAULT_URL
    #: Sent as ``Authorization: Bearer <key>`` when set.
    api_key: str | None = Field(default=None, repr=False)


def resolve(
    base_url: str | None, api_key: str | None, settings: ClientSettings | None
) -> tuple[str, str | None]:
    """The base URL and API key to use: the arguments, else ``settings`` (read from the
    environment when not given)."""
    if base_url is None or api_key is None:
        settings = settings or ClientSettings()
        base_url = base_url or settings.url
        api_key = api_key if api_key is not None else settings.api_key
    return base_url, api_key
