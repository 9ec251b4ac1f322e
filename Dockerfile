# syntax=docker/dockerfile:1.7
# One Dockerfile, two targets:
#   docker build --target api    -t tuneforge-api .     (CPU-only torch; the API never trains)
#   docker build --target worker -t tuneforge-worker .  (CUDA base + the CUDA build of torch)
# Both run the same `tuneforge` CLI that the test suite starts (`tuneforge api|worker|migrate`).

ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------- api
FROM python:3.11-slim AS api
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNEFORGE_DATA_DIR=/data TUNEFORGE_MODELS_DIR=/models HF_HUB_OFFLINE=1
WORKDIR /srv/tuneforge
# torch is a dependency of the package; the CPU wheel keeps the API image small.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md constraints.txt ./
COPY tuneforge ./tuneforge
RUN pip install -c constraints.txt . && useradd --uid 10001 --create-home tuneforge && mkdir -p /data /models \
    && chown tuneforge /data
USER tuneforge
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["tuneforge", "api", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------- worker (GPU)
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNEFORGE_DATA_DIR=/data TUNEFORGE_MODELS_DIR=/models HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH
# wordnet-base: WordNet 3.0 for data.augmentation's synonyms.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv wordnet-base \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /srv/tuneforge
# The default PyPI build of torch for Linux x86-64 is the CUDA one.
RUN pip install "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md constraints.txt ./
COPY tuneforge ./tuneforge
RUN pip install -c constraints.txt ".[integrations]" && useradd --uid 10001 --create-home tuneforge && mkdir -p /data /models \
    && chown tuneforge /data
USER tuneforge
HEALTHCHECK --interval=30s --timeout=10s --retries=3 \
    CMD celery --app tuneforge.worker.celery_app:celery_app inspect ping --timeout 5 >/dev/null || exit 1
CMD ["tuneforge", "worker"]
