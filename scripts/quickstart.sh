#!/usr/bin/env bash
# The README's first command: install, build, and run the whole market loop on this machine:
# a market in-process with the embedded Fashion-MNIST task, this rig's agent training it and
# writing its proof-of-learning bundle, publishing it to a local folder, and a second (verifier)
# identity fetching it, replaying it and posting an accepting verdict. No server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=runs/local
rm -rf "$out"
build/solver agent --local --work-dir "$out"
