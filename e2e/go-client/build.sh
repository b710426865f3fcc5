#!/usr/bin/env bash
# Builds the Go test client from Debian's packages only, offline: protoc and protoc-gen-go
# (golang-goprotobuf-dev 1.3, whose `plugins=grpc` is the grpc-go 1.33 generator) generate the
# gRPC code from the gateway's .proto into the build dir, and `go build` compiles it in GOPATH
# mode against the sources Debian's golang-*-dev packages put in /usr/share/gocode (grpc-go
# 1.33, golang/protobuf 1.3, x/net). No module proxy, no network.
#   build.sh [OUT_DIR]   (default: e2e/go-client/.build); prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/.build}"
proto_dir="$here/../../apps/gateway/proto"
gocode=/usr/share/gocode

missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null || missing+=(golang-goprotobuf-dev)
[ -d "$gocode/src/google.golang.org/grpc" ] || missing+=(golang-google-grpc-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "go-client: missing Debian packages: ${missing[*]} (tools/install-deps.sh installs them)" >&2
  exit 1
fi

gopath="$out/gopath"
pkg="$gopath/src/sysboxmgrpb"
rm -rf "$pkg"
mkdir -p "$pkg"
protoc -I "$proto_dir" --go_out="plugins=grpc,paths=source_relative:$pkg" "$proto_dir/sysboxMgr.proto"

export GO111MODULE=off GOPATH="$gopath:$gocode" GOPROXY=off GOFLAGS= GOCACHE="$out/cache" CGO_ENABLED=0
go build -o "$out/sysbox-mgr-go-client" "$here/main.go"
echo "$out/sysbox-mgr-go-client"
