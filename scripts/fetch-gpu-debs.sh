#!/usr/bin/env bash
# Run on a Debian 12 machine with network access: downloads (without installing) the Debian
# packages that scripts/gpu.sh unpacks on a GPU machine that has PyTorch but no package
# registry. They land in third_party/debs/ (ignored by git; carry it to the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  cmake cmake-data ninja-build libjsoncpp25 librhash0 libuv1 libarchive13  # the build tools
  nlohmann-json3-dev libfmt-dev libfmt9 libcli11-dev catch2                 # header and small libraries
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli1 libbrotli-dev            # the market's HTTP server
  libsqlite3-dev libsqlite3-0                                                # the market's database
  libcurl4-openssl-dev libcurl4 libssl-dev zlib1g-dev                        # HTTP client, OpenSSL, zlib
  dataset-fashion-mnist                                                      # the reference task's data
)
mkdir -p third_party/debs
cd third_party/debs
apt-get download "${packages[@]}"
echo "fetch-gpu-debs: $(ls ./*.deb | wc -l) packages in third_party/debs ($(du -sh . | cut -f1))"
