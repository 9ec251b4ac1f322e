#!/usr/bin/env bash
# Build llama.cpp ONCE into a cache outside the repository, from the sources that llama-cpp-python's sdist
# vendors: its converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py, with their own gguf-py) are what the
# GGUF export runs, and its C++ tools (llama-quantize for q4_k_m; llama-completion, which the tests load
# the exports with) come from the same commit, so converter and loader always agree on the format.
#
#   bash scripts/llama_cpp.sh            # fetch + build where missing; prints the cache dir
#   bash scripts/llama_cpp.sh --source   # fetch + unpack the sources only (converters; no compiler needed)
#
# The cache is $TUNEFORGE_LLAMA_CPP_HOME, default ~/.cache/tuneforge/llama.cpp-<llama-cpp-python version>.
# Only the targets Tuneforge uses are built (no tests, examples, server, web UI, HTTPS): 138 compile steps,
# mostly ggml and llama-common. Measured 2026-12-07: 78 minutes with -j2 on 2 cores under a load average of
# about 20 (other sessions' tests); expect a few minutes on a quiet multi-core machine.
set -euo pipefail

VERSION="${TUNEFORGE_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
HOME_DIR="${TUNEFORGE_LLAMA_CPP_HOME:-$HOME/.cache/tuneforge/llama.cpp-$VERSION}"
JOBS="${TUNEFORGE_LLAMA_CPP_JOBS:-$(nproc)}"
TARGETS=(llama-quantize llama-completion)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="python3 -m pip"

mkdir -p "$HOME_DIR"
src="$HOME_DIR/llama.cpp"
# Two callers at once fetch once and build once: one lock for the sources, one for the build (so that
# `--source` callers need not wait for a build in progress).
exec 8>"$HOME_DIR/.lock-source"
flock 8
if [ ! -f "$src/.unpacked" ]; then
    tmp="$(mktemp -d "$HOME_DIR/.fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # The registry's ordinary client; --no-binary so it is the source distribution, not a wheel.
    $PIP download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" >&2
    tar -xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
    rm -rf "$src"
    mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$src"
    touch "$src/.unpacked"
fi

flock -u 8
if [ "${1:-}" = "--source" ]; then
    echo "$HOME_DIR"
    exit 0
fi

build="$HOME_DIR/build"
exec 9>"$HOME_DIR/.lock"
flock 9
missing=0
for t in "${TARGETS[@]}"; do [ -x "$build/bin/$t" ] || missing=1; done
if [ "$missing" = 1 ]; then
    echo "building llama.cpp ($VERSION) targets ${TARGETS[*]} into $build with -j$JOBS" >&2
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
    cmake --build "$build" -j "$JOBS" --target llama-quantize llama-completion >&2
fi
echo "$HOME_DIR"
