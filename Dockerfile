# wspipe: an interruption-resistant WebSocket proxy, as a small non-root image.
#   docker build -t wspipe .
#   docker run --rm -p 8080:8080 -e WSPIPE_BACKENDS=ws://backend:9000/ wspipe
# Configuration: every key is WSPIPE_<KEY> (docs/cli.md); the sample config with every
# key and its default is /etc/wspipe/wspipe.toml (mount your own over it). Reload with
# `docker kill --signal HUP`. SIGTERM closes clients with 1001 within shutdown_grace
# (10 s): keep `docker stop -t` (default 10 s) above it, e.g. `docker stop -t 15`.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE CHANGELOG.md ./
COPY wspipe_core ./wspipe_core
COPY wspipe_anyio ./wspipe_anyio
COPY wspipe_backend ./wspipe_backend
COPY plugins ./plugins
RUN pip install --no-cache-dir "build==1.*" && python -m build --wheel --outdir /dist

FROM python:3.12-slim
# A system user with a home: a generated admin token is kept in ~/.local/state/wspipe.
RUN useradd --system --uid 10001 --create-home --home-dir /home/wspipe \
        --shell /usr/sbin/nologin wspipe
COPY --from=build /dist/ /tmp/dist/
# uvloop (fast), dnspython (SRV discovery) and coredis (--store, a fleet); trio is one
# more extra away. DL3013
# (pin versions) does not apply: this is the wheel just built, pinned by its file name.
# hadolint ignore=DL3013
RUN wheel="$(ls /tmp/dist/wspipe-*.whl)" \
    && pip install --no-cache-dir "${wheel}[fast,dns,redis]" \
    && rm -rf /tmp/dist
COPY deploy/wspipe.toml /etc/wspipe/wspipe.toml
# Listen on every interface of the container (":8080" would be loopback only); the
# admin API stays on loopback unless WSPIPE_ADMIN says otherwise (then it needs a
# token: WSPIPE_ADMIN_TOKEN_FILE pointing at a mounted secret).
ENV WSPIPE_LISTEN=0.0.0.0:8080 \
    WSPIPE_ADMIN=127.0.0.1:9090 \
    WSPIPE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/wspipe
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["wspipe"]
CMD ["serve", "--config", "/etc/wspipe/wspipe.toml"]
