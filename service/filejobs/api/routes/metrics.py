"""``/metrics``: Prometheus metrics (uploads, job outcomes and durations, jobs by status, queue)."""

from __future__ import annotations

from functools import partial

from anyio import to_thread
from fastapi import APIRouter, Request, Response

from filejobs.api.deps import ServicesDep
from filejobs.api.exposition import render_metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text format (OpenMetrics when the Accept header asks for it).",
            "content": {"text/plain": {}, "application/openmetrics-text": {}},
        }
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Counters and histograms of this process (of every process sharing ``PROMETHEUS_MULTIPROC_DIR``
    in multiprocess mode), and gauges read from the database at each scrape."""
    payload, content_type = await to_thread.run_sync(
        partial(
            render_metrics,
            services.db,
            services.settings.prometheus_multiproc_dir,
            request.headers.get("accept", ""),
        )
    )
    return Response(payload, media_type=content_type)
