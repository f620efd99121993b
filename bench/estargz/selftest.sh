#!/usr/bin/env bash
# End-to-end check of the eStargz path on this machine: a local registry, a
# real image converted to eStargz with and without optimization, and for
# each a cold lazy pull and `cat /etc/debian_version` through containerd and
# skiff-bench-estargz. Fails unless the output is right, the layers are FUSE
# mounts, the bytes fetched before first output are under half the image's,
# and the daemon unmounts everything on SIGTERM.
#
# SELFTEST_IMAGE: an OCI layout source for skopeo (default: the debian test
# image skiff's own tests cache, tag pkgs: two layers, 72 MB compressed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cache=${SKIFF_CACHE:-$HOME/.cache/skiff}
image=${SELFTEST_IMAGE:-oci:$cache/images/debian:pkgs}
[ -d "$(echo "$image" | cut -d: -f2)" ] || die "no OCI layout for $image (set SELFTEST_IMAGE=oci:DIR:TAG)"

bin=$(bash "$here/build.sh")
ensure_pkgs docker-registry skopeo curl

t=$(mktemp -d /tmp/skiff-estargz-selftest.XXXXXX)
REGISTRY_PID=
cleanup() {
  stop_containerd "$t/conv" 2>/dev/null || true
  stop_containerd "$t/ctd" 2>/dev/null || true
  stop_snapshotter "$t/sn" 2>/dev/null || true
  stop_pid "$REGISTRY_PID"
  rm -rf "$t"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- registry on a free loopback port; REGISTRY_* variables would override
# the config, so none are passed on.
for _ in $(seq 50); do
  port=$((20000 + RANDOM % 40000))
  [ -z "$(ss -Htln "sport = :$port")" ] && break
done
cat >"$t/registry.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $t/registry}}
http: {addr: 127.0.0.1:$port}
EOF
env $(env | sed -n 's/^\(REGISTRY_[^=]*\)=.*/-u \1/p') \
  docker-registry serve "$t/registry.yml" >"$t/registry.log" 2>&1 &
REGISTRY_PID=$!
wait_for 30 curl -fs "http://127.0.0.1:$port/v2/" || die "registry did not start"
repo=127.0.0.1:$port/x/debian
log "registry on 127.0.0.1:$port"

skopeo copy -q --dest-tls-verify=false "$image" "docker://$repo:src" >&2

# --- conversions: one in convert.sh's own containerd, one in a running one.
timeout 900 bash "$here/convert.sh" "$repo:src" "$repo:esgz"
start_containerd "$t/conv"
CONTAINERD_ADDRESS=$CONTAINERD_SOCK timeout 900 bash "$here/convert.sh" \
  "$repo:src" "$repo:esgz-opt" --optimize -- cat /etc/debian_version
stop_containerd "$t/conv"

# landmarks TAG: the prefetch landmark of each layer, read from the head of
# the blob: optimize puts the files the workload read first, then
# .prefetch.landmark; --no-optimize layers start with .no.prefetch.landmark,
# and optimized layers the workload read nothing from have neither.
landmarks() (
  set +o pipefail # tar and grep stop reading early, on purpose
  for l in $(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$port/v2/x/debian/manifests/$1" | jq -r '.layers[].digest'); do
    curl -fs -r 0-262143 "http://127.0.0.1:$port/v2/x/debian/blobs/$l" |
      gzip -dc 2>/dev/null | tar t 2>/dev/null | grep -m1 'prefetch.landmark' || echo none
  done | sort | uniq -c | xargs
)
lm=$(landmarks esgz); echo "esgz landmarks: $lm"
[[ $lm != *" .prefetch.landmark"* ]] || die "esgz has a prefetch landmark"
lm=$(landmarks esgz-opt); echo "esgz-opt landmarks: $lm"
[[ $lm == *" .prefetch.landmark"* ]] || die "esgz-opt has no prefetch landmark: optimize recorded nothing"

# registry_blob_bytes FROM_LINE: bytes of blob GETs in the access log since.
registry_blob_bytes() {
  tail -n +"$1" "$t/registry.log" |
    awk '$6 == "\"GET" && $7 ~ /\/blobs\// && $10 ~ /^[0-9]+$/ {s += $10} END {print s + 0}'
}

# cold_run TAG: fresh snapshotter + containerd, lazy pull, run, checks, stop.
cold_run() {
  local ref=$repo:$1 out mark fetched size fuse
  rm -rf "$t/sn" "$t/ctd"
  start_snapshotter "$bin" "$t/sn" "$t/sn.sock"
  start_containerd "$t/ctd" "$t/sn.sock"
  mark=$(($(wc -l <"$t/registry.log") + 1))

  timeout 120 ctr-remote -a "$CONTAINERD_SOCK" image rpull --plain-http "$ref" >"$t/rpull.log" 2>&1 ||
    { cat "$t/rpull.log" >&2; die "rpull $ref failed"; }
  out=$(timeout 120 ctr -a "$CONTAINERD_SOCK" run --rm --snapshotter stargz "$ref" selftest cat /etc/debian_version) ||
    die "ctr run failed"
  fetched=$(registry_blob_bytes "$mark")
  size=$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$port/v2/x/debian/manifests/$1" | jq '[.layers[].size] | add')
  fuse=$(awk -v d="$t/sn/" 'index($2, d) == 1 && $3 ~ /^fuse/' /proc/mounts | wc -l)

  echo "$1: output '$out'; $fuse FUSE layer mounts; fetched $fetched of $size compressed bytes before first output"
  [[ $out =~ ^[0-9]+\.[0-9]+$ ]] || die "$1: unexpected output '$out'"
  [ "$fuse" -ge 1 ] || die "$1: no FUSE mounts: the pull was not lazy"
  [ "$fetched" -lt $((size / 2)) ] || die "$1: fetched $fetched of $size bytes: not lazy"

  stop_containerd "$t/ctd"
  stop_snapshotter "$t/sn" || die "$1: snapshotter left mounts behind"
  echo "$1: clean shutdown, $(grep -o 'peak memory.*' "$t/sn.log" | tr -d '"')"
}

cold_run esgz
cold_run esgz-opt
echo "selftest: 2 passed, 0 failed"
