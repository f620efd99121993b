#!/usr/bin/env bash
# Builds skiff-bench-estargz (main.go) offline against Debian's Go packages
# and prints the binary's path on stdout. Rebuilds only when main.go, the Go
# toolchain or the stargz library package changed.
#
# Debian packages Go libraries as sources under /usr/share/gocode/src, not as
# modules, so this builds in GOPATH mode (GO111MODULE=off) with no proxy:
# the versions are exactly the ones Debian ships, and nothing is downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

ensure_pkgs "${ESTARGZ_PKGS[@]}"

out=${SKIFF_CACHE:-$HOME/.cache/skiff}/bench/estargz
bin=$out/skiff-bench-estargz
mkdir -p "$out"

key=$( {
  cat "$here/main.go"
  go version
  dpkg-query -W -f='${Version}\n' golang-github-containerd-stargz-snapshotter-dev golang-github-containerd-containerd-dev
} | sha256sum | cut -d' ' -f1)

if [ -x "$bin" ] && [ "$(cat "$bin.key" 2>/dev/null)" = "$key" ]; then
  log "up to date: $bin"
else
  log "building $bin"
  start=$SECONDS
  # The build cache lives beside the binary so rebuilds are incremental and
  # nothing is written into the clone.
  GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= \
    GOCACHE=$out/gocache CGO_ENABLED=0 \
    go build -trimpath -o "$bin.tmp" "$here/main.go" >&2
  mv "$bin.tmp" "$bin"
  echo "$key" >"$bin.key"
  log "built in $((SECONDS - start)) s"
fi
echo "$bin"
