# Container image for the Pezzottify catalog server.
# Stop with a grace above shutdown_timeout_sec: `docker stop -t 45` (the default 10 s is too short
# for the 30 s default); `stop_grace_period: 45s` in compose.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY daemon daemon
COPY actors actors
COPY api api
COPY storage storage
COPY fake_downloader fake_downloader
RUN pip install --no-cache-dir .
# The data dir, and the media and backup folders deploy/compose.yaml mounts volumes on (a volume
# takes the owner of the folder it is mounted on).
RUN useradd --system --home /var/lib/pezzottify pezzottify \
    && mkdir -p /var/lib/pezzottify /srv/pezzottify/media /var/backups/pezzottify \
    && chown pezzottify /var/lib/pezzottify /srv/pezzottify/media /var/backups/pezzottify
USER pezzottify
VOLUME /var/lib/pezzottify
EXPOSE 3001 9091
STOPSIGNAL SIGTERM
ENTRYPOINT ["pezzottify-server", "--db-dir", "/var/lib/pezzottify"]
