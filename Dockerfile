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
RUN groupadd --system tollway && useradd --system --gid tollway --home-dir /nonexistent --shell /usr/sbin/nologin tollway
COPY --from=build /opt/tollway /opt/tollway
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
USER tollway
EXPOSE 9191 9192 9193 9194
# The pepper comes from a secret: TOLLWAY_PEPPER or a mounted file named by TOLLWAY_PEPPER_FILE.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tollway"]
CMD ["serve"]
