#!/usr/bin/env bash
# Builds the real multi-layer test image from Debian packages and caches it as
# an OCI image layout. Tags:
#   base   debootstrap --variant=minbase bookworm
#   pkgs   base + a layer that installs packages and deletes files
#   full   pkgs + a layer that rewrites files and hardlinks across layers
# Usage: build-debian.sh [OUT_DIR]   (default $HOME/.cache/skiff/images/debian)
# Prints the layout path. Rebuilds only when the layout is missing.
set -euo pipefail

out=${1:-${SKIFF_CACHE:-$HOME/.cache/skiff}/images/debian}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
missing=""
need debootstrap debootstrap
need umoci umoci
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-image.XXXXXX")
cleanup() {
  for m in proc sys dev/pts dev; do
    umount -l "$work/bundle/rootfs/$m" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "building test image in $out (debootstrap $suite)" >&2
rm -rf "$out"
mkdir -p "$(dirname "$out")"
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:base"
umoci config --image "$layout:base" --config.cmd /bin/bash \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Layer 1: minbase.
umoci unpack --image "$layout:base" "$work/bundle" >&2
debootstrap --variant=minbase "$suite" "$work/bundle/rootfs" "$mirror" >&2
rm -rf "$work/bundle/rootfs/var/cache/apt/archives/"*.deb
umoci repack --image "$layout:base" "$work/bundle" >&2
rm -rf "$work/bundle"

# Layer 2: install packages (iputils-ping carries a security.capability xattr),
# then delete files so the layer carries whiteouts.
umoci unpack --image "$layout:base" "$work/bundle" >&2
root="$work/bundle/rootfs"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends libcap2-bin iputils-ping python3-minimal >&2
chroot "$root" apt-get clean
umount "$root/dev" "$root/proc"
rm -rf "$root/var/lib/apt/lists/"* "$root/usr/share/doc/"* "$root/usr/share/man/"*
rm -rf "$root/usr/share/locale"
umoci repack --image "$layout:pkgs" "$work/bundle" >&2
rm -rf "$work/bundle"

# Layer 3: rewrite files, add a hardlink to a lower-layer file, a fifo, and
# replace a directory with a file.
umoci unpack --image "$layout:pkgs" "$work/bundle" >&2
root="$work/bundle/rootfs"
echo 'SKIFF_TEST_LAYER=3' >>"$root/etc/os-release"
printf 'rewritten by layer 3\n' >"$root/etc/motd"
ln "$root/usr/bin/dpkg" "$root/usr/local/bin/dpkg-hardlink"
mkfifo "$root/var/local/test.fifo"
rm -rf "$root/usr/share/common-licenses"
printf 'a file where a directory was\n' >"$root/usr/share/common-licenses"
umoci repack --image "$layout:full" "$work/bundle" >&2
rm -rf "$work/bundle"

umoci gc --layout "$layout"
mv "$layout" "$out"
touch "$out/.complete"
echo "$out"
