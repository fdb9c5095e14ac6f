"""The process ``filejobs serve`` becomes: uvicorn running the app, with nothing of the CLI loaded.

``filejobs serve`` checks its settings, migrates and refuses what it must (in the CLI, which imports
typer, rich and the whole Python client for its other commands), then replaces itself with this
module (``os.execv``: the same process id, the environment it handed over). The API process then
holds only what the app imports: about 8 MB less than when uvicorn ran inside the CLI. Run as
``python -m filejobs.server_process HOST PORT LOG_LEVEL PROCESSES``; nothing else calls it.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # boto3's chatter ("Found credentials in environment variables") at every client made.
    for name in ("boto3", "botocore", "s3transfer"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def run(host: str, port: int, log_level: str, processes: int) -> None:
    import uvicorn

    from filejobs.http_protocol import PROTOCOL
    from filejobs.shutdown import GRACEFUL_TIMEOUT

    configure_logging(log_level)
    # uvicorn handles SIGTERM itself (graceful shutdown), then restores the previous handler and
    # raises the signal again; with the default handler the process would die by SIGTERM (exit 143)
    # even though it shut down cleanly. This handler makes a completed graceful shutdown exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "filejobs.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # Long-polls end within this; then running jobs get FILEJOBS_SHUTDOWN_GRACE to finish.
        timeout_graceful_shutdown=int(GRACEFUL_TIMEOUT),
        server_header=False,
        # httptools with bounded request heads and idle connections (service/filejobs/http_protocol.py).
        http=PROTOCOL,
        workers=processes if processes > 1 else None,
    )


def command(host: str, port: int, log_level: str, processes: int) -> list[str]:
    """The command line :func:`run` is started by (for ``os.execv``)."""
    return [sys.executable, "-m", "filejobs.server_process", host, str(port), log_level, str(processes)]


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
