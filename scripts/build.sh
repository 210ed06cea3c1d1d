#!/usr/bin/env bash
# Configures and builds solver into build/ (Release, Ninja) against the LibTorch scripts/libtorch.sh
# chooses (SOLVER_LIBTORCH, PyTorch's own with CUDA, or Debian's CPU one: docs/gpu.md). Extra
# arguments go to CMake, e.g. scripts/build.sh -DSOLVER_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_prefix=$(scripts/libtorch.sh)
# A cache made against another LibTorch keeps that one's paths (Torch_DIR, Caffe2_DIR, its
# libraries), so a change of LibTorch starts the cache afresh; ccache keeps the compiled objects.
if [ -f build/CMakeCache.txt ] && [ "$(cat build/libtorch-prefix 2>/dev/null)" != "$torch_prefix" ]; then
  echo "build: build/ was configured against another (or an unrecorded) LibTorch; configuring it afresh for $torch_prefix" >&2
  rm build/CMakeCache.txt
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" "$@"
echo "$torch_prefix" > build/libtorch-prefix
cmake --build build
