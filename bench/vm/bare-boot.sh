#!/usr/bin/env bash
# The VM sandbox's floor on this machine (issue 18): Debian's guest kernel,
# booted directly (PVH entry of the uncompressed vmlinux) by QEMU's microvm,
# into an initramfs whose init prints one line and powers off. Measures the
# time from starting QEMU to that line, and to QEMU's exit.
#
# With --image IMAGE, each run also boots skiff's agent (make agent) from
# `skiff mount --nbd IMAGE` and times it to the first line its command
# prints, interleaved with the bare boot: the two side by side, as a ratio.
#
# Usage (as root): bench/vm/bare-boot.sh [--runs N] [--image IMAGE]
# The kernel and initramfs are cached under ~/.cache/skiff/vm; SKIFF_BIN and
# SKIFF_AGENT name the binaries (default: the release build, make agent's).
set -euo pipefail

runs=5
image=""
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift ;;
    --image) image=$2; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bare-boot: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "bare-boot: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
command -v cpio >/dev/null || missing="$missing cpio"
command -v gcc >/dev/null || missing="$missing gcc libc6-dev"
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades $missing >/dev/null ||
    die "could not install$missing: run apt-get update, then retry"
fi

cache=${SKIFF_CACHE:-$HOME/.cache/skiff}/vm
kdir=$("$(dirname "$0")/../../vm/guest-kernel.sh")
pkg=$(basename "$kdir")

initrd=$cache/bare-init.cpio
if [ ! -f "$initrd" ]; then
  tmp=$(mktemp -d "$cache/.init.XXXXXX")
  mkdir -p "$tmp/root/dev"
  cat >"$tmp/init.c" <<'C'
#include <stdio.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
  puts("skiff-bare-init ready");
  fflush(stdout);
  sync();
  reboot(RB_POWER_OFF);
  return 0;
}
C
  gcc -static -O2 -o "$tmp/root/init" "$tmp/init.c"
  mknod "$tmp/root/dev/console" c 5 1
  (cd "$tmp/root" && find . | cpio -o -H newc --quiet) >"$tmp/init.cpio"
  mv "$tmp/init.cpio" "$initrd"
  rm -rf "$tmp"
fi

agent_initrd=""
if [ -n "$image" ]; then
  cache_root=${SKIFF_CACHE:-$HOME/.cache/skiff}
  skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$cache_root/target}/release/skiff}
  agent=${SKIFF_AGENT:-$cache_root/agent-target/skiff-agent}
  [ -x "$skiff" ] || die "no skiff at $skiff (make release, or set SKIFF_BIN)"
  [ -x "$agent" ] || die "no agent at $agent (make agent, or set SKIFF_AGENT)"
  work=$(mktemp -d /var/tmp/skiff-vm-bench.XXXXXX)
  trap '"$skiff" --root "$work/root" umount "$work/rootfs.sock" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  mkdir -p "$work/initramfs/dev"
  cp "$agent" "$work/initramfs/init"
  mknod "$work/initramfs/dev/console" c 5 1
  cp -r "$kdir/modules" "$work/initramfs/modules"
  (cd "$work/initramfs" && find . | cpio -o -H newc --quiet) >"$work/agent.cpio"
  agent_initrd=$work/agent.cpio
  "$skiff" --root "$work/root" -q mount --daemon --nbd "$image" "$work/rootfs.sock" >/dev/null
  argv=$(printf 'sh\0-c\0echo skiff-vm ready' | od -An -tx1 | tr -d ' \n')
fi

# microvm under TCG: the TSC is given (calibrating it hangs), ACPI stays on
# (virtio-mmio devices are found through it).
khz=$(awk '/cpu MHz/ {printf "%d", $4 * 1000; exit}' /proc/cpuinfo)
# boot INITRD MARKER [EXTRA QEMU ARGS...]: prints "to-marker to-exit" in s.
boot() {
  local initrd=$1 marker=$2 cmdline=$3; shift 3
  local t0 t1 ready="" line
  t0=$(date +%s.%N)
  while IFS= read -r line; do
    case $line in *"$marker"*) [ -n "$ready" ] || ready=$(date +%s.%N) ;; esac
  done < <(timeout 120 qemu-system-x86_64 -M microvm -accel tcg -cpu max -m 256 -smp 1 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$kdir/vmlinux" -initrd "$initrd" "$@" \
    -append "console=ttyS0 tsc_early_khz=${khz:-2000000} quiet panic=-1 reboot=t $cmdline" 2>&1)
  t1=$(date +%s.%N)
  [ -n "$ready" ] || die "the guest never printed '$marker' (a TCG boot hang? see docs/vm.md)"
  echo "$(echo "$ready - $t0" | bc) $(echo "$t1 - $t0" | bc)"
}
if [ -n "$agent_initrd" ]; then
  echo "| run | bare init's line, s | agent + NBD rootfs, first output, s | ratio |"
  echo "|---|---:|---:|---:|"
else
  echo "| run | to init's line, s | to QEMU's exit, s |"
  echo "|---|---:|---:|"
fi
for i in $(seq "$runs"); do
  read -r bare bare_exit < <(boot "$initrd" "skiff-bare-init ready" "")
  if [ -n "$agent_initrd" ]; then
    read -r vm _ < <(boot "$agent_initrd" "skiff-vm ready" "skiff_argv=$argv" \
      -drive "file=nbd+unix:///?socket=$work/rootfs.sock,format=raw,if=none,id=rootfs,readonly=on" \
      -device virtio-blk-device,drive=rootfs)
    printf "| %d | %.2f | %.2f | %.2f× |\n" "$i" "$bare" "$vm" "$(echo "$vm / $bare" | bc -l)"
  else
    printf "| %d | %.2f | %.2f |\n" "$i" "$bare" "$bare_exit"
  fi
done
echo
echo "kernel: $pkg ($(qemu-system-x86_64 --version | head -1)), TCG, 1 vCPU, 256 MiB"
