#!/usr/bin/env bash
# The VM sandbox's minimal guest kernel: Debian's kernel source
# (linux-source-6.1) built with vm/minimal-kernel.config on top of
# allnoconfig: every driver the guest needs built in, no modules, nothing
# else. It boots in about half the time of Debian's generic kernel under
# TCG and touches far less guest memory (docs/vm.md, "The guest kernel").
# Built once and cached under ~/.cache/skiff/vm/linux-minimal-VERSION-HASH/:
#   vmlinux            the uncompressed kernel, booted through its PVH entry
#   config, release    its configuration and `uname -r`
#   modules/order      empty: nothing to load
#   modules/9p/order   empty
# Prints that directory. Usage (as root): vm/minimal-kernel.sh
set -euo pipefail
die() { echo "minimal-kernel: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/minimal-kernel.config
cache=${SKIFF_CACHE:-$HOME/.cache/skiff}/vm
mkdir -p "$cache"

need="linux-source-6.1 bc flex bison libelf-dev libssl-dev gcc make"
missing=""
for p in $need; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "minimal-kernel: installing$missing" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } ||
    die "could not install$missing (see apt-get's message above)"
fi

version=$(dpkg-query -W -f '${Version}' linux-source-6.1)
hash=$(sha256sum "$fragment" | cut -c1-12)
dir=$cache/linux-minimal-$version-$hash
if [ -f "$dir/vmlinux" ] && [ -f "$dir/release" ] && [ -f "$dir/modules/9p/order" ]; then
  echo "$dir"
  exit 0
fi

tmp=$(mktemp -d "$cache/.minimal.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "minimal-kernel: building linux-source-6.1 $version (a few minutes, once)" >&2
tar -xf /usr/src/linux-source-6.1.tar.xz -C "$tmp"
src=$(ls -d "$tmp"/linux-source-*)
make -C "$src" -s allnoconfig KCONFIG_ALLCONFIG="$fragment" >/dev/null
# Kconfig drops what its dependencies refuse, silently: refuse that here.
lost=""
while IFS= read -r line; do
  case $line in CONFIG_*=y) grep -qx "$line" "$src/.config" || lost="$lost ${line%=y}" ;; esac
done <"$fragment"
[ -z "$lost" ] || die "Kconfig turned off$lost: fix vm/minimal-kernel.config"
make -C "$src" -s -j"$(nproc)" vmlinux >"$tmp/build.log" 2>&1 ||
  { tail -30 "$tmp/build.log" >&2; die "the kernel build failed (log above)"; }
mkdir -p "$tmp/out/modules/9p"
cp "$src/vmlinux" "$tmp/out/vmlinux"
cp "$src/.config" "$tmp/out/config"
make -C "$src" -s kernelrelease >"$tmp/out/release"
: >"$tmp/out/modules/order"
: >"$tmp/out/modules/9p/order"
rm -rf "$dir"
mv "$tmp/out" "$dir"
echo "$dir"
