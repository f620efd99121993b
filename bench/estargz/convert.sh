#!/usr/bin/env bash
# convert.sh SRC_REF DST_REF [--optimize -- CMD ARGS...]
#
# Converts an image already in a registry to eStargz with
# `ctr-remote image optimize` and pushes it as DST_REF. Without --optimize
# the layers are converted as they are (--no-optimize); with it, ctr-remote
# runs CMD ARGS in the image, records the files it opens and puts them first
# in each layer behind a prefetch landmark.
#
# Registries are reached over plain HTTP (the benchmark's have no TLS).
# ctr-remote needs a containerd: CONTAINERD_ADDRESS names a running one;
# otherwise a private one is started in a temp dir and torn down after.
# OPTIMIZE_PERIOD (s, default 10) caps how long the workload is watched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

usage() { echo "usage: $0 SRC_REF DST_REF [--optimize -- CMD ARGS...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
src=$1 dst=$2; shift 2
opt=(--no-optimize)
if [ $# -gt 0 ]; then
  [ "$1" = --optimize ] && [ "${2:-}" = -- ] && [ $# -ge 3 ] || usage
  shift 2
  # ctr-remote takes the workload as JSON arrays; the image's entrypoint
  # is replaced so CMD runs exactly as given.
  opt=(--period "${OPTIMIZE_PERIOD:-10}"
    --entrypoint "$(jq -cn '[$ARGS.positional[0]]' --args -- "$@")"
    --args "$(jq -cn '$ARGS.positional[1:]' --args -- "$@")")
fi

ensure_pkgs stargz-snapshotter containerd runc jq

tmp=$(mktemp -d /tmp/skiff-estargz-convert.XXXXXX)
cleanup() {
  [ -z "${CONTAINERD_ADDRESS:-}" ] && stop_containerd "$tmp"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
  sock=$CONTAINERD_ADDRESS
else
  start_containerd "$tmp/containerd"
  sock=$CONTAINERD_SOCK
fi
# A namespace of our own, so a shared containerd's images are left alone.
ns=skiff-estargz-convert-$$
ctr_remote() { ctr-remote -a "$sock" -n "$ns" "$@"; }
# Progress bars go to a log, shown only when a step fails.
step() {
  "$@" >"$tmp/step.log" 2>&1 || { tail -20 "$tmp/step.log" >&2; die "failed: $*"; }
}

log "pulling $src"
step ctr_remote image pull --plain-http "$src"
log "converting to eStargz (${opt[*]})"
step ctr_remote image optimize --oci "${opt[@]}" "$src" "$dst"
log "pushing $dst"
step ctr_remote image push --plain-http "$dst"
# Leave nothing in a shared containerd: images, then their content (GC).
ctr_remote image rm --sync "$src" "$dst" >/dev/null 2>&1 || true
ctr -a "$sock" namespaces rm "$ns" >/dev/null 2>&1 || true
log "pushed $dst"
