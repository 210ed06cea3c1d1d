#!/usr/bin/env bash
# The README's second command (and what CI runs): install, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-test-servers.sh
scripts/build.sh -DSOLVER_BUILD_TESTS=ON
ctest --test-dir build --output-on-failure -j 2 --timeout 900
# Every test case must have reached CTest: a name CMake cannot keep in a list (with [ ] or ;)
# silently drops it and the rest of its executable from discovery.
expected=0
for tests in build/tests/solver_*_tests; do
  names=$("$tests" --list-test-names-only || true)  # Catch2 exits with the number of tests it listed
  expected=$((expected + $(grep -c . <<<"$names")))
done
known=$(ctest --test-dir build -N | grep -c ' Test *#')
if [ "$known" -ne "$expected" ]; then
  echo "test: CTest ran $known test cases but the test executables hold $expected; a test name with [ ] or ; breaks discovery" >&2
  exit 1
fi
