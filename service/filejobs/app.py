"""The application factory: ``create_app()`` (``uvicorn --factory filejobs.app:create_app``)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from types import FrameType
from typing import Any

from anyio import to_thread
from fastapi import FastAPI

from filejobs import __version__
from filejobs.api.cors import Cors
from filejobs.api.fast_status import StatusApp
from filejobs.api.head import HeadAsGet
from filejobs.api.problems import ProblemDetails, install_handlers
from filejobs.api.routes import (
    by_hash,
    dashboard,
    docs,
    events,
    files,
    health,
    jobs,
    metrics,
    processors,
    uploads,
    webhooks,
)
from filejobs.api.security_headers import SecurityHeaders
from filejobs.api.tus_headers import TusHeaders
from filejobs.jobs.dispatch import Dispatcher
from filejobs.jobs.sweeper import SweepReport, sweep
from filejobs.services import Services, build_services
from filejobs.settings import Settings, get_settings
from filejobs.storage import StorageUnavailable

log = logging.getLogger(__name__)

#: Orphaned uploads are looked for at startup and then every this many sweeps.
ORPHAN_SCAN_EVERY = 60
#: Seconds between checks that a supervised HTTP process still has its supervisor.
ORPHAN_CHECK_EVERY = 0.5
#: Seconds each background component (webhook sender, key watch, change feed) gets to stop when
#: the app shuts down: one that is stuck (say, an HTTP client's close that never returns) is logged
#: and left behind, so shutdown, and the worker and database after it, still run.
STOP_WITHIN = 10.0


async def _sweep(services: Services, *, scan_orphans: bool = True) -> SweepReport | None:
    """One sweeper pass, in a worker thread, if this process holds the sweeper lock (else None)."""
    if not await to_thread.run_sync(services.sweep_lock.acquire):
        return None
    return await to_thread.run_sync(
        partial(
            sweep,
            db=services.db,
            storage=services.storage,
            settings=services.settings,
            dispatcher=services.dispatcher,
            scan_orphans=scan_orphans,
            uploads=services.uploads,
        )
    )


async def _sweep_forever(services: Services) -> None:
    passes = 0
    while True:
        await asyncio.sleep(services.settings.sweep_interval)
        passes += 1
        try:
            await _sweep(services, scan_orphans=passes % ORPHAN_SCAN_EVERY == 0)
        except Exception:
            log.exception("sweep failed; trying again in %.0f s", services.settings.sweep_interval)


async def _stop_when_orphaned(supervisor: int) -> None:
    """One of several HTTP processes (``serve --processes``): shut down gracefully (SIGTERM to
    ourselves) once the supervisor is gone, e.g. killed with SIGKILL, instead of serving on."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 - nothing to wait on: a parent's death has no event
        await asyncio.sleep(ORPHAN_CHECK_EVERY)
    log.warning("the filejobs serve supervisor (pid %d) is gone; shutting down", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


async def _stop_within(stopping: Coroutine[Any, Any, None], what: str) -> None:
    """Await ``stopping`` for at most :data:`STOP_WITHIN` seconds; log and go on after that."""
    try:
        async with asyncio.timeout(STOP_WITHIN):
            await stopping
    except TimeoutError:
        log.warning("%s did not stop within %g s; shutting down without it", what, STOP_WITHIN)


def _end_streams_on_signals(services: Services) -> None:
    """Chain onto uvicorn's SIGINT/SIGTERM handlers (installed before the lifespan starts): open
    event streams end at once, so the graceful shutdown need not wait out its timeout for them, and
    uploads still receiving at the shutdown's cutoff are answered 503 before uvicorn would cancel
    them. uvicorn restores its predecessors' handlers when it exits. Main thread only (not TestClient)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            loop.call_soon_threadsafe(services.feed.close_streams)
            loop.call_soon_threadsafe(services.shutdown.begin)
            previous(number, frame)

        signal.signal(signum, handler)


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    """Build the app. ``settings`` default to the environment; a ``dispatcher`` (tests) replaces the
    worker pool, and jobs then run only when the caller runs them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        resolved = settings or get_settings()
        services = await to_thread.run_sync(lambda: build_services(resolved, dispatcher=dispatcher))
        app.state.processor_names = services.registry.names()
        app.state.max_upload_bytes = resolved.max_upload_bytes
        app.openapi_schema = None  # made again, with this server's processors
        services.hub.bind(asyncio.get_running_loop())
        services.feed.start()
        services.key_watch.start()
        _end_streams_on_signals(services)
        if services.worker is not None:
            services.worker.start()
        # Every process, not only the sweeper's: the temp files this node's dead processes left
        # (killed mid-upload) go now (the sweep removes them; a process that is not the sweeper
        # does only that part); other nodes' wait for TEMP_MAX_AGE (see filejobs.storage).
        try:
            report = await _sweep(services)
            removed = (
                report.temp_removed
                if report is not None
                else await to_thread.run_sync(services.storage.remove_stale_temp, resolved.temp_max_age)
            )
        except StorageUnavailable as exc:  # `serve` checked it; the periodic sweeps will try again
            log.warning("startup sweep skipped, the storage is unavailable: %s", exc)
            removed = 0
        if removed:
            log.info("removed %d upload temp file(s) left by stopped processes", removed)
        sweeper = asyncio.create_task(_sweep_forever(services))
        services.webhooks.start()  # sends only while this process holds the sweeper lock
        # The supervisor's pid comes from it (FILEJOBS_SUPERVISED, set by serve --processes):
        # getppid() here would already be 1 had it died while this process was starting.
        orphan_watch = (
            asyncio.create_task(_stop_when_orphaned(resolved.supervised))
            if resolved.supervised is not None
            else None
        )
        if resolved.backend == "celery":
            log.info(
                "filejobs ready: data in %s, jobs go to Celery queue %r", resolved.data_dir, resolved.queue
            )
        else:
            log.info(
                "filejobs ready: data in %s, %d worker process(es)%s",
                resolved.data_dir,
                services.worker.size if services.worker else getattr(services.dispatcher, "size", 0),
                ", their threads in a process of their own" if services.worker is None else "",
            )
        try:
            yield {"services": services}
        finally:
            if orphan_watch is not None:
                orphan_watch.cancel()
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await _stop_within(services.webhooks.stop(), "the webhook sender")
            await _stop_within(services.key_watch.stop(), "the key watch")
            await _stop_within(services.feed.stop(), "the change feed")
            if services.worker is not None:
                await to_thread.run_sync(services.worker.stop)
            await to_thread.run_sync(services.close)

    app = StatusApp(
        title="filejobs",
        version=__version__,
        summary="Upload a file, get 202 Accepted, and follow its processing.",
        lifespan=lifespan,
        openapi_url=None,  # served by filejobs.api.routes.docs (a key optional while open)
        docs_url=None,  # served there too, without a CDN
        redoc_url=None,
    )
    install_handlers(app)
    # The last added is the outermost. CORS comes first (preflights answered before anything
    # else; StatusApp leaves a cross-origin poll or plain upload to the route when CORS is on).
    # StatusApp's answers to the poll and the plain upload (before all of this) carry the security
    # headers themselves (api/security_headers); a HEAD is answered by the GET route.
    app.add_middleware(HeadAsGet)
    app.add_middleware(TusHeaders)  # tus's Tus-Resumable and 412, on its HEAD too
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Cors)
    app.include_router(by_hash.router)
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    app.include_router(files.router)
    app.include_router(processors.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(webhooks.secret_router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.assets, name="static")
    docs.install(app)
    _document_problem_schema(app)
    return app


def _document_problem_schema(app: FastAPI) -> None:
    """Add ProblemDetails (which the error responses refer to) and the API key scheme of /v1."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["ProblemDetails"] = ProblemDetails.model_json_schema()
            components["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `filejobs keys create NAME`. Required on /v1 once "
                    "any key has been made (or with FILEJOBS_REQUIRE_AUTH).",
                }
            }
            _list_processors(schema, getattr(app.state, "processor_names", None))
            _bound_upload_length(schema, getattr(app.state, "max_upload_bytes", None))
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bound_upload_length(schema: dict[str, Any], limit: int | None) -> None:
    """The tus creation's ``Upload-Length`` at most this server's MAX_UPLOAD_BYTES (Tus-Max-Size)."""
    if limit is None:
        return
    operation = schema["paths"]["/v1/uploads"]["post"]
    operation["parameters"] = parameters = copy.deepcopy(operation["parameters"])  # not the route's own
    for parameter in parameters:
        if parameter["name"] == "Upload-Length":
            parameter["schema"]["maximum"] = limit


def _list_processors(schema: dict[str, Any], names: list[str] | None) -> None:
    """The upload's ``processor`` field as an enum of the registered processors (known once the
    lifespan has built the registry), and the empty value that stands for the default."""
    if not names:
        return
    operation = schema["paths"]["/v1/jobs"]["post"]
    operation["requestBody"] = body = copy.deepcopy(operation["requestBody"])  # not the route's own
    # "" too: an empty field is the default processor, as an absent one is
    body["content"]["multipart/form-data"]["schema"]["properties"]["processor"]["enum"] = [*names, ""]
