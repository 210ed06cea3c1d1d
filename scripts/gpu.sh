#!/usr/bin/env bash
# The GPU path in one command (docs/gpu.md), on a machine with an NVIDIA GPU and PyTorch:
# builds solver against a CUDA LibTorch (scripts/libtorch.sh) into build-gpu/, runs the unit and torch tests,
# `solver bench --quick` on the GPU, trains the reference task on the GPU, and verifies its
# bundle on the GPU (bitwise) and on the CPU (within the distance threshold).
# Build dependencies the machine lacks come from third_party/debs/ (scripts/fetch-gpu-debs.sh,
# run beforehand where there is network), unpacked with dpkg -x: no registry is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:-runs/gpu}
mkdir -p "$out"

# A CUDA LibTorch: SOLVER_LIBTORCH's, or PyTorch's own (docs/gpu.md, "Which LibTorch the build uses").
torch_prefix=$(PYTHON=$python scripts/libtorch.sh --require-cuda)
"$python" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("gpu: torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))'

prefix=$PWD/build-gpu/prefix
if compgen -G "third_party/debs/*.deb" >/dev/null; then
  mkdir -p "$prefix"
  for deb in third_party/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
  export PATH=$prefix/usr/bin:$PATH
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  [ -d "$prefix/usr/share/cmake-3.25" ] && export CMAKE_ROOT=$prefix/usr/share/cmake-3.25
fi
for tool in cmake ninja nvcc; do
  command -v "$tool" >/dev/null || [ "$tool" = nvcc ] || {
    echo "gpu: $tool not found; run scripts/fetch-gpu-debs.sh on a networked Debian 12 machine and bring third_party/debs here" >&2
    exit 1
  }
done
data=/usr/share/datasets/fashion-mnist
[ -d "$data" ] || data=$prefix/usr/share/datasets/fashion-mnist

# The GPU's own architecture, and the one CI compiles for (sm_80, sm_90).
arch=$("$python" -c 'import torch; m, n = torch.cuda.get_device_capability(0); print(f"{m}{n}")')
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
cmake --build build-gpu

# NCCL (the all-reduce figure of solver bench) is loaded at run time; PyTorch's wheels ship it
# as the nvidia-nccl package, outside the loader's path for binaries that do not link it.
if [ -z "${SOLVER_NCCL_LIBRARY:-}" ]; then
  nccl=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
  [ -n "$nccl" ] && [ -f "$nccl" ] && export SOLVER_NCCL_LIBRARY=$nccl
fi

# The tests that need neither the npm servers nor botocore; the [gpu] ones compare the CUDA
# kernels with their CPU twins.
ctest --test-dir build-gpu -L 'unit|torch' -E 'ipfs|unixfs|s3|S3|sigv4|SigV4' --output-on-failure -j "$(nproc)" | tee "$out/tests.log"
build-gpu/solver bench --quick --json --device cuda:0 | tee "$out/bench.json"

# The reference task on the GPU, its data from wherever it was unpacked.
sed "s#/usr/share/datasets/fashion-mnist#$data#g" configs/tasks/fashion-mnist-mlp.json > "$out/task.json"
rm -rf "$out/bundle"
[ -f "$out/solver.key" ] || build-gpu/solver keygen --key "$out/solver.key"
build-gpu/solver run "$out/task.json" --out "$out/bundle" --device cuda:0 --key "$out/solver.key" 2>&1 | tee "$out/run.log"
build-gpu/solver verify "$out/bundle" --device cuda:0 --json > "$out/verify-gpu.json" || true
build-gpu/solver verify "$out/bundle" --device cpu --json > "$out/verify-cpu.json" || true
build-gpu/solver profile "$out/bundle" --out "$out/profile.json" --json > /dev/null || true
"$python" - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
for name in ("verify-gpu", "verify-cpu"):
    verdict = json.load(open(f"{out}/{name}.json"))
    worst = max((s["distance"]["l2"] for s in verdict.get("segments", [])), default=0.0)
    print(f"gpu: {name}: {'ACCEPTED' if verdict['accepted'] else 'REJECTED'}, same runtime {verdict['same_runtime']}, "
          f"largest l2 {worst:.3g}")
EOF
