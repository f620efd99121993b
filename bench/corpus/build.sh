#!/usr/bin/env bash
# The benchmark corpus: real OCI images built from Debian packages
# (debootstrap --variant=minbase bookworm, then one umoci layer per step),
# cached as OCI layouts under ${SKIFF_CACHE:-~/.cache/skiff}/images/corpus/NAME
# with the tag `latest`. Each image is rebuilt only when its `.complete`
# marker is missing or names an older corpus version. The minbase layer is
# built once and shared. Layers carry the parent directories of what they
# change, as Docker's do.
#
#   python    minbase + python3
#   node      minbase + nodejs
#   gcc       minbase + gcc libc6-dev
#   large     minbase + JRE + numpy/scipy + a C/C++ toolchain (>= 1 GB, 4 layers)
#   h1, h2    h1 = minbase + python3 + ca-certificates; h2 = h1 + an update layer
#   addrmadd  minbase + ADD a 100 MB tar, then rm it, then ADD it again
#
# Usage: bench/corpus/build.sh [NAME...]   (default: all). Prints each layout path.
set -euo pipefail

all=(python node gcc large h1 h2 addrmadd)
cache=${SKIFF_CACHE:-$HOME/.cache/skiff}
dir=$cache/images/corpus
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump when the way images are built changes: cached images are rebuilt.
version=corpus-2
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "bench/corpus: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
for n in "$@"; do
  [[ " ${all[*]} " == *" $n "* ]] || die "unknown image '$n' (known: ${all[*]})"
done
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")

missing=""
for p in debootstrap umoci; do command -v $p >/dev/null || missing="$missing $p"; done
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2 ||
    die "could not install$missing: run apt-get update, then retry"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-corpus.XXXXXX")
cleanup() {
  for m in proc dev; do umount -l "$work/bundle/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$dir"

# layout_copy SRC DST: a new layout sharing SRC's blobs (hard links).
# index.json is copied, not linked: umoci may rewrite it in place.
layout_copy() {
  rm -rf "$2"; cp -al "$1" "$2"
  rm -f "$2/index.json" "$2/.complete"; cp "$1/index.json" "$2/index.json"
}

# layer LAYOUT FROM_TAG TO_TAG SCRIPT: unpack FROM_TAG, run SCRIPT (bash, with
# $root set and /proc, /dev mounted), repack as TO_TAG.
layer() {
  local layout=$1 from=$2 to=$3 script=$4
  umoci unpack --image "$layout:$from" "$work/bundle" >&2
  local root=$work/bundle/rootfs
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  touch "$work/stamp"
  root=$root bash -euo pipefail -c "$script" >&2
  : >"$root/etc/resolv.conf"
  # umoci leaves unchanged parent directories out of a layer (valid OCI, but
  # ctr-remote's optimizer rejects it); Docker includes them, so do the same:
  # touch every ancestor of what changed, and umoci writes it.
  find "$root" -xdev -cnewer "$work/stamp" -print0 | python3 -c '
import os, sys
root = sys.argv[1]
dirs = set()
for p in sys.stdin.buffer.read().split(b"\0"):
    p = os.path.dirname(os.fsdecode(p))
    while len(p) > len(root) and p not in dirs:
        dirs.add(p)
        p = os.path.dirname(p)
for d in dirs:
    os.utime(d, follow_symlinks=False)' "$root"
  umount "$root/dev" "$root/proc"
  umoci repack --image "$layout:$to" "$work/bundle" >&2
  rm -rf "$work/bundle"
}

# apt_layer LAYOUT FROM TO PKG...: one layer that installs packages.
apt_layer() {
  local layout=$1 from=$2 to=$3; shift 3
  layer "$layout" "$from" "$to" "
    chroot \"\$root\" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    chroot \"\$root\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $*
    chroot \"\$root\" apt-get clean
    rm -rf \"\$root\"/var/lib/apt/lists/*"
}

finish() { # finish LAYOUT NAME CMD...: config, gc, move into place
  local layout=$1 name=$2; shift 2
  local args=()
  for c in "$@"; do args+=(--config.cmd "$c"); done
  umoci config --image "$layout:latest" "${args[@]}" --config.env "$path_env" >&2
  umoci gc --layout "$layout"
  rm -rf "${dir:?}/$name"
  mv "$layout" "$dir/$name"
  echo "$version" >"$dir/$name/.complete"
}
complete() { [ "$(cat "$dir/$1/.complete" 2>/dev/null)" = "$version" ]; }

minbase() {
  complete minbase && return
  echo "bench/corpus: building minbase (debootstrap $suite)" >&2
  local l=$work/minbase
  umoci init --layout "$l"
  umoci new --image "$l:latest"
  umoci unpack --image "$l:latest" "$work/bundle" >&2
  debootstrap --variant=minbase "$suite" "$work/bundle/rootfs" "$mirror" >&2 ||
    die "debootstrap failed: check that $mirror is reachable (DEBIAN_MIRROR overrides it)"
  rm -rf "$work/bundle/rootfs/var/cache/apt/archives/"*.deb "$work/bundle/rootfs/var/lib/apt/lists/"*
  umoci repack --image "$l:latest" "$work/bundle" >&2
  rm -rf "$work/bundle"
  finish "$l" minbase /bin/bash
}

# A deterministic 100 MB tar of incompressible files (SHAKE-256 of a fixed seed).
make_tar() {
  python3 - "$1" <<'PY'
import hashlib, io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT) as t:
    for i in range(25):
        data = hashlib.shake_256(b"skiff-corpus-%d" % i).digest(4 << 20)
        info = tarfile.TarInfo(f"payload/part{i:02}.bin")
        info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
        t.addfile(info, io.BytesIO(data))
PY
}

build() {
  local name=$1
  if complete "$name"; then echo "$dir/$name"; return; fi
  minbase
  echo "bench/corpus: building $name" >&2
  local l=$work/$name
  case $name in
  python)
    layout_copy "$dir/minbase" "$l"
    apt_layer "$l" latest latest python3
    finish "$l" python python3 ;;
  node)
    layout_copy "$dir/minbase" "$l"
    apt_layer "$l" latest latest nodejs
    finish "$l" node node ;;
  gcc)
    layout_copy "$dir/minbase" "$l"
    apt_layer "$l" latest latest gcc libc6-dev
    finish "$l" gcc gcc --version ;;
  large)
    layout_copy "$dir/minbase" "$l"
    apt_layer "$l" latest latest default-jdk-headless
    apt_layer "$l" latest latest python3-numpy python3-scipy python3-pandas
    apt_layer "$l" latest latest g++ clang gfortran
    finish "$l" large java -version ;;
  h1)
    layout_copy "$dir/minbase" "$l"
    apt_layer "$l" latest latest python3 ca-certificates
    finish "$l" h1 python3 ;;
  h2)
    build h1 >/dev/null
    layout_copy "$dir/h1" "$l"
    # The update: new dependencies of the app and a changed config file.
    layer "$l" latest latest "
      chroot \"\$root\" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      chroot \"\$root\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-requests python3-yaml
      chroot \"\$root\" apt-get clean
      rm -rf \"\$root\"/var/lib/apt/lists/*
      echo 'version=2' >\"\$root/etc/app.conf\""
    finish "$l" h2 python3 ;;
  addrmadd)
    layout_copy "$dir/minbase" "$l"
    make_tar "$work/payload.tar"
    layer "$l" latest latest "cp '$work/payload.tar' \"\$root/payload.tar\""
    layer "$l" latest latest "rm \"\$root/payload.tar\""
    layer "$l" latest latest "cp '$work/payload.tar' \"\$root/payload.tar\""
    finish "$l" addrmadd /bin/bash ;;
  esac
  echo "$dir/$name"
}

for n in "${names[@]}"; do build "$n"; done
