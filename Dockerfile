# The gateway on the embedded default; set IAP_DATABASE_URL=postgresql+asyncpg://... for PostgreSQL.
FROM python:3.11-slim
WORKDIR /srv/iap
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . && useradd --system iap && mkdir /data && chown iap /data
USER iap
ENV IAP_DATABASE_URL=sqlite+aiosqlite:////data/iap.db
EXPOSE 8000
CMD ["iap", "serve", "--host", "0.0.0.0", "--port", "8000"]
