# Slim image running `dashboard serve` as a non-root user.
# Build: docker build -t pg-ops-dashboard .
# Run:   docker run -e DASHBOARD_DATABASE_URL=postgresql://... -e DASHBOARD_SECRET_KEY=... \
#          -v $PWD/alembic:/app/alembic:ro -p 8000:8000 pg-ops-dashboard
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
COPY alembic ./alembic
COPY alembic.ini ./
# gcc only while installing: it builds the pool's checkout stack walker
# (dashboard/pool/_framewalk.c); without it the same walk runs in Python, slower.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install -e . \
    && python -c "import dashboard.pool._framewalk" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin dashboard \
    && chown -R dashboard /app

USER dashboard
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
# Bind all interfaces inside the container; put an authenticating proxy in front
# (DASHBOARD_AUTH_MODE=proxy, DASHBOARD_TRUSTED_PROXIES=<proxy address>).
CMD ["dashboard", "serve", "--host", "0.0.0.0", "--port", "8000"]
