# One image for the four services: the same dependencies (one lock file), one build, one scan;
# the Deployment picks the service by its command (mailintake-config-api, -scheduler,
# -fetcher, -store; mailintake-migrate for the pre-rollout Job). Build from the repository
# root: docker build -t mailintake:0.1.0 .

# --- build: the locked dependencies and the workspace packages into /app/.venv -------------
FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY . .
# --frozen: exactly uv.lock, or fail; --no-editable: the packages are copied into the
# environment, so that the runtime image needs no source tree.
RUN uv sync --frozen --no-dev --no-editable

# --- runtime: the environment only, as a non-root user ----------------------------------
FROM python:3.11.14-slim-bookworm AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mailintake
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILINTAKE_HTTP_HOST=0.0.0.0 \
    MAILINTAKE_HTTP_PORT=8000
# Nothing is written at run time: the root filesystem can be mounted read-only.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['MAILINTAKE_HTTP_PORT'], timeout=4)"]
CMD ["mailintake-config-api"]
