# The stord sidecar image: `docker build -t stord .`, then
#   docker run -p 127.0.0.1:50051:50051 -v stord-data:/data stord
# The default command is `serve --insecure`: without API keys the daemon trusts every caller, and inside the
# container it must listen on 0.0.0.0, so publish the port only to the application beside it (as above).
# With API keys (see README, "Security"), mount the keys file and drop --insecure:
#   docker run -p 50051:50051 -v stord-data:/data -v "$PWD/keys.yaml:/etc/stord/keys.yaml:ro" \
#     -e STORD_API_KEYS_FILE=/etc/stord/keys.yaml stord serve

FROM python:3.11-slim AS build
WORKDIR /src
COPY client/ client/
COPY server/ server/
COPY migrations/ migrations/
COPY pyproject.toml setup.py README.md ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./client .

FROM python:3.11-slim
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
