#!/usr/bin/env bash
# The README's second command (and what CI runs): install, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-test-servers.sh
scripts/build.sh -DSOLVER_BUILD_TESTS=ON
ctest --test-dir build --output-on-failure -j 2 --timeout 900
