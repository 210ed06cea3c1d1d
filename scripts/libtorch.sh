#!/usr/bin/env bash
# Chooses the LibTorch solver builds against (scripts/build.sh and scripts/gpu.sh run it), says
# which in one line on stderr, and prints its CMake prefix on stdout. In order:
#   1. SOLVER_LIBTORCH: an unpacked LibTorch folder, or a LibTorch zip from pytorch.org whose
#      sha256 must equal SOLVER_LIBTORCH_SHA256; the zip is unpacked once, into
#      ${SOLVER_LIBTORCH_UNPACK_DIR:-third_party}/libtorch-<first 12 hex digits of its sha256>/.
#      When set, it must work: a broken one is an error, never a fallback.
#   2. PyTorch's own LibTorch, when ${PYTHON:-python3} imports a torch built with CUDA.
#   3. Debian's LibTorch (libtorch-dev), which is CPU-only.
# --require-cuda: fail instead of settling for a LibTorch without CUDA (scripts/gpu.sh).
# docs/gpu.md, "Which LibTorch the build uses".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

fail() {
  echo "libtorch: $*" >&2
  exit 1
}

require_cuda=false
case "${1:-}" in
  "") ;;
  --require-cuda) require_cuda=true ;;
  *) fail "unknown argument $1 (the only one is --require-cuda)" ;;
esac

# A LibTorch folder is one CMake can use: it has share/cmake/Torch/TorchConfig.cmake.
check_folder() {
  local config=$1/share/cmake/Torch/TorchConfig.cmake
  [ -f "$config" ] || fail "SOLVER_LIBTORCH=$SOLVER_LIBTORCH is not a LibTorch: $config is missing"
}

# "2.11.0+cu130, CUDA" from the folder's build-version (pytorch.org's zips carry one) and
# libtorch_cuda.so, which only a CUDA build has.
describe_folder() {
  local version=unknown cuda="no CUDA"
  [ -f "$1/build-version" ] && version=$(<"$1/build-version")
  [ -e "$1/lib/libtorch_cuda.so" ] && cuda=CUDA
  echo "$version, $cuda"
}

# Checks the zip's sha256 and unpacks it unless an earlier run did; sets `folder` to the LibTorch
# and `unpacked` to what happened.
unpack_archive() {
  local archive=$1 expected=${SOLVER_LIBTORCH_SHA256:-}
  [ -n "$expected" ] || fail "SOLVER_LIBTORCH=$archive is an archive: set SOLVER_LIBTORCH_SHA256 to the sha256 published for it (docs/gpu.md)"
  expected=${expected,,}
  local actual
  actual=$(sha256sum "$archive" | cut -d' ' -f1)
  [ "$actual" = "$expected" ] ||
    fail "refusing $archive: its sha256 is $actual, but SOLVER_LIBTORCH_SHA256 is $expected (a damaged or different download)"
  local parent=${SOLVER_LIBTORCH_UNPACK_DIR:-$root/third_party}
  folder=$parent/libtorch-${actual:0:12}
  if [ -d "$folder" ]; then
    unpacked="sha256 checked, unpacked before"
    return
  fi
  mkdir -p "$parent"
  # Unpacked beside its final place and renamed, so an interrupted run leaves no half folder.
  local scratch
  scratch=$(mktemp -d "$parent/.libtorch-unpacking.XXXXXX")
  unzip -q "$archive" -d "$scratch" >&2 || { rm -rf "$scratch"; fail "cannot unpack $archive"; }
  [ -d "$scratch/libtorch" ] || { rm -rf "$scratch"; fail "$archive holds no libtorch/ folder: not a LibTorch zip from pytorch.org"; }
  mv "$scratch/libtorch" "$folder"
  rm -rf "$scratch"
  unpacked="sha256 checked, unpacked now"
}

choose_explicit() {
  local given=$SOLVER_LIBTORCH
  [ -e "$given" ] || fail "SOLVER_LIBTORCH=$given does not exist"
  unpacked=""
  if [ -d "$given" ]; then
    folder=$(cd "$given" && pwd)
  else
    unpack_archive "$(realpath "$given")"
  fi
  check_folder "$folder"
  local description
  description=$(describe_folder "$folder")
  if $require_cuda && [[ $description != *", CUDA" ]]; then
    fail "SOLVER_LIBTORCH=$given has no CUDA (no lib/libtorch_cuda.so)"
  fi
  echo "libtorch: SOLVER_LIBTORCH's LibTorch ($description${unpacked:+; $unpacked}): $folder" >&2
  echo "$folder"
}

if [ -n "${SOLVER_LIBTORCH:-}" ]; then
  choose_explicit
  exit 0
fi

if found=$("$python" -c 'import torch; print(torch.version.cuda or ""); print(torch.__version__); print(torch.utils.cmake_prefix_path)' 2>/dev/null); then
  { read -r cuda; read -r version; read -r prefix; } <<<"$found"
  if [ -n "$cuda" ]; then
    echo "libtorch: PyTorch's own LibTorch ($version, CUDA $cuda) from $python: $prefix" >&2
    echo "$prefix"
    exit 0
  fi
  reason="SOLVER_LIBTORCH unset; $python's torch $version has no CUDA"
else
  reason="SOLVER_LIBTORCH unset; $python cannot import torch"
fi

$require_cuda && fail "no CUDA LibTorch found ($reason); set PYTHON to an interpreter whose torch has CUDA, or SOLVER_LIBTORCH (docs/gpu.md)"
debian_config=$(compgen -G "/usr/lib/*/cmake/Torch/TorchConfigVersion.cmake" | head -n 1) ||
  fail "no LibTorch at all ($reason; Debian's libtorch-dev is not installed): run scripts/install-deps.sh, or see docs/gpu.md"
debian_version=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$debian_config")
echo "libtorch: no CUDA LibTorch found ($reason); building for the CPU with Debian's LibTorch $debian_version (/usr) — see docs/gpu.md" >&2
echo /usr
