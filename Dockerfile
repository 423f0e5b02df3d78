# The stord sidecar image: `docker build -t stord .`, then
#   docker run -p 127.0.0.1:50051:50051 -v stord-data:/data stord
# The default command is `serve --insecure`: without API keys the daemon trusts every caller, and inside the
# container it must listen on 0.0.0.0, so publish the port only to the application beside it (as above).
# With API keys (see README, "Security"), mount the keys file and drop --insecure:
#   docker run -p 50051:50051 -v stord-data:/data -v "$PWD/keys.yaml:/etc/stord/keys.yaml:ro" \
#     -e STORD_API_KEYS_FILE=/etc/stord/keys.yaml stord serve
# With TLS (STORD_TLS_CERT, STORD_TLS_KEY), the HEALTHCHECK's `stord health` speaks TLS too; give it the CA to
# trust in STORD_TLS_CA (and STORD_TLS_SERVER_NAME unless the certificate names 127.0.0.1 or localhost; with
# STORD_TLS_CLIENT_CA, a client certificate in STORD_TLS_CLIENT_CERT and STORD_TLS_CLIENT_KEY).
#
# BASE_IMAGE: any image with python3 (3.11+) and pip first on PATH. The default is pinned by digest: a digest
# two public repositories pin for python:3.11-slim, not checked against a registry (none is reachable where
# this was written); refresh it with `docker buildx imagetools inspect python:3.11-slim`. `make image-test`
# builds FROM a Debian bookworm root file system of its own instead (see README, "Container image").
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY client/ client/
COPY server/ server/
COPY migrations/ migrations/
COPY pyproject.toml setup.py README.md ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./client .

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin stord \
    && mkdir -p /data && chown stord:stord /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels stord stord-client && rm -rf /wheels
USER stord
VOLUME ["/data"]
ENV STORD_LISTEN=0.0.0.0:50051 \
    STORD_DATA_DIR=/data \
    STORD_LOG_FORMAT=json
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["stord", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["stord"]
CMD ["serve", "--insecure"]
