# Tollway's ext_authz servers. Envoy, Redis and ClickHouse run as their own containers/services.
# Installs the same way as `make install` does, minus the development and local-server extras.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The ClickHouse migrations ship inside the package: src/tollway/warehouse/sql links to clickhouse/migrations.
COPY clickhouse ./clickhouse
RUN python -m venv /opt/tollway \
 && /opt/tollway/bin/python -m pip install --no-cache-dir --upgrade pip \
 && /opt/tollway/bin/python -m pip install --no-cache-dir .

FROM python:3.11-slim
# WeasyPrint renders invoice PDFs with the system's Pango (and needs a font): Debian's packages.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric user (10001): Kubernetes' runAsNonRoot can check it, and volumes can be owned by it.
RUN groupadd --system --gid 10001 tollway \
 && useradd --system --uid 10001 --gid tollway --home-dir /nonexistent --shell /usr/sbin/nologin tollway
COPY --from=build /opt/tollway /opt/tollway
# The package ships the single-server migrations; the cluster variant is here for
# `tollway db migrate --migrations /usr/share/tollway/clickhouse/cluster` (docs/operations.md).
COPY clickhouse/cluster /usr/share/tollway/clickhouse/cluster
ENV PATH=/opt/tollway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOLLWAY_HOST=0.0.0.0 \
    TOLLWAY_HTTP_PORT=9191 \
    TOLLWAY_GRPC_PORT=9192 \
    TOLLWAY_ADMIN_PORT=9193 \
    TOLLWAY_METERING_PORT=9194 \
    TOLLWAY_SPOOL_DIR=/var/lib/tollway/spool \
    TOLLWAY_CLICKHOUSE_DSN=chdb:///var/lib/tollway/chdb
# The usage spool (and the embedded ClickHouse, when used) must outlive the container: mount a volume here.
RUN mkdir -p /var/lib/tollway && chown tollway:tollway /var/lib/tollway
VOLUME /var/lib/tollway
USER 10001:10001
EXPOSE 9191 9192 9193 9194
# The pepper comes from a secret: TOLLWAY_PEPPER or a mounted file named by TOLLWAY_PEPPER_FILE.
# Healthy = GET /readyz on the admin port answers 200 (Redis answers, the spool takes writes, listeners open).
# No curl in the slim image: the venv's Python asks (any error, a 503 included, exits 1 = unhealthy).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('TOLLWAY_ADMIN_PORT', '9193'), timeout=2)"]
# On SIGTERM: stop accepting, let in-flight checks finish (TOLLWAY_SHUTDOWN_GRACE_S), drain the loader, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tollway"]
CMD ["serve"]
