#!/usr/bin/env bash
# Installs everything solver needs to build and test on Debian 12, from Debian's packages.
# Idempotent: packages already present are left alone. Runs as root, or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  unzip                    # a LibTorch zip from pytorch.org (SOLVER_LIBTORCH, scripts/libtorch.sh)
  libtorch-dev             # LibTorch 1.13 (CPU); the GPU machine builds against PyTorch's own
  nlohmann-json3-dev libssl-dev libcurl4-openssl-dev zlib1g-dev
  libfmt-dev libcli11-dev
  libpugixml-dev           # S3's XML replies
  libsystemd-dev           # sd_notify: readiness, status and watchdog under systemd (Type=notify)
  libcpp-httplib-dev libsqlite3-dev  # the agent's metrics endpoint and the tests' fake HTTP servers; the reference market's database
  catch2
  prometheus               # tests only: promtool check metrics on a scrape of the agent's endpoint
  dataset-fashion-mnist    # real data: /usr/share/datasets/fashion-mnist
  python3-torch python3-numpy  # tests only: exported models and independent readers (/usr/bin/python3)
  python3-botocore awscli ipfs-cid  # tests only: independent SigV4 signer, S3 reader, CIDv0 calculator
  systemd                  # tests only: systemd-analyze verify and security on the packaged unit
  zip                      # tests only: LibTorch zips for scripts/libtorch.sh's tests
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
