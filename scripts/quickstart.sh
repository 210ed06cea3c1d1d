#!/usr/bin/env bash
# The README's first command: install, build, train the embedded default task on
# Fashion-MNIST, write its proof-of-learning bundle, and verify it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=runs/quickstart
rm -rf "$out"
build/solver run --out "$out"
build/solver verify "$out"
