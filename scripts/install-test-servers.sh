#!/usr/bin/env bash
# Installs the real servers the tests start on 127.0.0.1: a js-ipfs node (Kubo RPC API) and
# s3rver (S3 API), from the npm registry, at the exact versions of tests/servers/package-lock.json.
# Node.js and npm come from Debian when absent. Idempotent: skipped when the lock file is unchanged.
# The lock file is npm's, with one edit: electron-eval's optional "headless" dependency (a GitHub
# tarball, unreachable from machines that only see the npm registry, and only used by the WebRTC
# transport the tests never start) is left out, so that `npm ci` accepts the lock.
set -euo pipefail
cd "$(dirname "$0")/../tests/servers"

if ! command -v npm >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install-test-servers: installing Debian's nodejs and npm"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nodejs npm
fi

stamp=node_modules/.solver-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install-test-servers: tests/servers/node_modules is up to date"
  exit 0
fi
echo "install-test-servers: npm ci (js-ipfs and s3rver; a few minutes the first time)"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
