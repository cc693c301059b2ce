# The streamgnn worker image (also runs the other sub-commands, e.g. `streamgnn produce`).
#
#   docker build -t streamgnn .
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> -t streamgnn .
#
# TORCH_INDEX_URL, when set, is an extra pip index for torch: PyTorch's CPU-only wheels
# make the image several GB smaller than the default CUDA ones.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY models ./models
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --extra-index-url "$TORCH_INDEX_URL" . ; \
    else \
        pip install . ; \
    fi

# State (graph store, checkpoints, the publisher's version ledger) lives on one volume:
# the ledger must survive exactly as long as the store does. Every state path is set
# here (the defaults are relative to the working directory, /app, which is root's).
RUN useradd --system --uid 10001 --home-dir /var/lib/streamgnn streamgnn \
    && mkdir -p /var/lib/streamgnn \
    && chown streamgnn /var/lib/streamgnn
USER streamgnn
ENV STREAMGNN_METRICS_ADDRESS=0.0.0.0:9464 \
    STREAMGNN_STORE_PATH=/var/lib/streamgnn/graph \
    STREAMGNN_CHECKPOINT_DIR=/var/lib/streamgnn/checkpoints \
    STREAMGNN_VERSION_LEDGER=/var/lib/streamgnn/publish/versions.json
VOLUME ["/var/lib/streamgnn"]
EXPOSE 9464

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=4)"]

# An unhandled error exits non-zero; the orchestrator (compose: restart) restarts it.
CMD ["streamgnn", "worker"]
