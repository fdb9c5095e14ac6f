# syntax=docker/dockerfile:1
# One image for the API (`filejobs serve`, the default command) and the Celery workers
# (`filejobs worker`). Build: docker build -t filejobs .

# ---- builder: the project and its dependencies, installed into a venv at /opt/venv ----------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The venv gets no pip or setuptools of its own (the base image's pip installs into it), so
# the runtime image carries only the project and its dependencies.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src
# README.md is the package's readme; migrations/ goes into the wheel as filejobs/_migrations
# (pyproject: [tool.hatch.build.targets.wheel.force-include]).
COPY pyproject.toml README.md ./
COPY migrations/ ./migrations/
COPY service/ ./service/
# The service: the base install is only the client (pyproject.toml); the `server` extra is the rest.
# ("./", not ".": hadolint takes "./…" for a local path, ".[server]" for an unpinned package.)
RUN pip --python /opt/venv/bin/python install --no-cache-dir "./[server]"

# ---- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# A fixed, unprivileged uid/gid, so a bind-mounted /data can be chown'd to 10001 on the host.
RUN groupadd --system --gid 10001 filejobs \
    && useradd --system --uid 10001 --gid filejobs --create-home --home-dir /home/filejobs \
        --shell /usr/sbin/nologin filejobs \
    && mkdir /data \
    && chown filejobs:filejobs /data

COPY --from=builder /opt/venv /opt/venv

# The API listens on 0.0.0.0 in a container: it requires API keys from the start
# (docker exec <container> filejobs keys create NAME).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FILEJOBS_DATA_DIR=/data \
    FILEJOBS_REQUIRE_AUTH=true

# Uploads, outputs, temp files (and the SQLite database when FILEJOBS_DATABASE_URL is unset).
# The API and the workers must share it: a worker reads the upload the API stored.
VOLUME /data
WORKDIR /data
EXPOSE 8000

# Numeric, so runtimes that check "non-root" without reading /etc/passwd (Kubernetes runAsNonRoot) can.
USER 10001:10001

# Liveness of `serve` (stdlib only: the slim image has no curl). Proxies are bypassed so an
# HTTP_PROXY in the environment cannot turn a local probe into a remote one. A container running
# `worker` serves no HTTP: compose.yaml disables this check there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["filejobs"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
