#!/usr/bin/env bash
# The VM sandbox's guest kernel: Debian's current linux-image-amd64 package,
# downloaded once and cached under ~/.cache/skiff/vm/PACKAGE/:
#   vmlinux        the uncompressed kernel, booted through its PVH entry
#                  (decompressing the bzImage alone takes ~9 s under TCG)
#   modules/*.ko   the drivers the guest needs, and modules/order, the
#                  order the agent loads them in
#   modules/9p/    the same for 9p over virtio, loaded only for a run with
#                  volumes
# Prints that directory. Usage (as root): vm/guest-kernel.sh
set -euo pipefail
die() { echo "guest-kernel: $*" >&2; exit 1; }

# virtio over MMIO (microvm's bus), the block device and console, EROFS and overlay.
MODULES="virtio_ring virtio virtio_mmio virtio_blk virtio_console crc32c_generic libcrc32c erofs overlay"
# 9p over virtio, for -v volumes, in dependency order.
SHARE_MODULES="netfs fscache 9pnet 9pnet_virtio 9p"

cache=${SKIFF_CACHE:-$HOME/.cache/skiff}/vm
mkdir -p "$cache"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || die "no linux-image-amd64 in apt's lists: run apt-get update"
dir=$cache/$pkg
if [ ! -f "$dir/modules/order" ] || [ ! -f "$dir/modules/9p/order" ]; then
  tmp=$(mktemp -d "$cache/.kernel.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # (apt warns that its sandbox user cannot write here; it downloads anyway)
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "could not download $pkg"
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  mkdir -p "$tmp/out/modules"
  /usr/bin/python3 - "$(ls "$tmp"/x/boot/vmlinuz-*)" "$tmp/out/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("guest-kernel: no xz stream in " + sys.argv[1])
out = lzma.LZMADecompressor().decompress(data[at:])
if out[:4] != b"\x7fELF":
    sys.exit("guest-kernel: the xz stream is not an ELF kernel")
open(sys.argv[2], "wb").write(out)
PY
  mkdir -p "$tmp/out/modules/9p"
  for m in $MODULES; do
    ko=$(find "$tmp/x/lib/modules" -name "$m.ko" | head -1)
    [ -n "$ko" ] || die "$pkg has no $m.ko"
    cp "$ko" "$tmp/out/modules/"
    echo "$m.ko" >>"$tmp/out/modules/order"
  done
  for m in $SHARE_MODULES; do
    ko=$(find "$tmp/x/lib/modules" -name "$m.ko" | head -1)
    [ -n "$ko" ] || die "$pkg has no $m.ko"
    cp "$ko" "$tmp/out/modules/9p/"
    echo "$m.ko" >>"$tmp/out/modules/9p/order"
  done
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
fi
echo "$dir"
