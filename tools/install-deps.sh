#!/usr/bin/env bash
# Installs what the daemons and tests need on a Debian/Ubuntu host: the Debian packages
# (nats-server, rsync, acl, util-linux, python3-grpcio for an independent gRPC client; Go, grpc-go
# 1.33, protoc and protoc-gen-go for e2e's Go client, built offline from Debian's sources) and the
# npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v rsync >/dev/null || need+=(rsync)
command -v setfacl >/dev/null || need+=(acl)
command -v mount >/dev/null || need+=(mount)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
# e2e/go-client/build.sh: GOPATH mode against /usr/share/gocode, no module proxy.
command -v go >/dev/null || need+=(golang-go)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null || need+=(golang-goprotobuf-dev)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Exactly the committed lock, or a failure saying it is out of date. vite 8.4.0 names an optional
  # dependency the registry does not have (napi-windows-process-start-time), which no lock can
  # list, so `npm ci` refused the lock: the root package.json pins vite to 8.3.8 (`overrides`),
  # which does not name it. Drop the override once the registry has that package.
  echo "install-deps: npm ci (from package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
fi
