# The gateway. One image runs `serve` (the default), `worker` and `sandbox`; it starts in
# production mode, which needs its own configuration and secrets: docs/deployment.md.

# Build: the package and every dependency as wheels, at the versions in requirements/.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c requirements/runtime.lock .

# Run: the wheels installed (code owned by root, read-only to the gateway), no compiler, no
# sources; a non-root user whose only writable place is /data.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin iap \
    && mkdir -p /data/attachments && chown -R iap:iap /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels iap && rm -r /wheels
USER iap
WORKDIR /data
ENV IAP_ENV=production \
    IAP_DATABASE_URL=sqlite+aiosqlite:////data/iap.db \
    IAP_DEV_KEY_FILE=/data/.iap-dev-key \
    IAP_ATTACHMENTS__DIRECTORY=/data/attachments \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000
# python-slim has no curl. A worker answers it with `worker --health-port 8000` (compose does),
# or run it with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["iap"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-sandbox"]
