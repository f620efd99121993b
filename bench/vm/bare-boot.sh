#!/usr/bin/env bash
# The VM sandbox's floor on this machine (issue 18): Debian's guest kernel,
# booted directly (PVH entry of the uncompressed vmlinux) by QEMU's microvm,
# into an initramfs whose init prints one line and powers off. Measures the
# time from starting QEMU to that line, and to QEMU's exit.
#
# With --image IMAGE, each run also times `skiff run --rm --sandbox vm
# IMAGE sh -c 'echo ...'` from its start to the agent being ready (the
# supervisor's log line) and to the first output, interleaved with the bare
# boot: side by side, as ratios. Then one detached VM's host memory, once
# its command has run python3 (if the image has it): QEMU, its supervisor,
# and the image's block device daemon (shared by all VMs of the image).
#
# --kernels minimal,debian (the default) runs each of these per run, in
# turn: skiff's minimal guest kernel (vm/minimal-kernel.sh, skiff's
# default) and Debian's generic one (vm/guest-kernel.sh); each one's skiff
# runs use that kernel (SKIFF_VM_KERNEL) and are set against its own floor.
#
# Usage (as root): bench/vm/bare-boot.sh [--runs N] [--image IMAGE] [--kernels LIST]
# The kernels and initramfs are cached under ~/.cache/skiff/vm; SKIFF_BIN and
# SKIFF_AGENT name the binaries (default: the release build, make agent's).
set -euo pipefail

runs=5
image=""
kernels=minimal,debian
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift ;;
    --image) image=$2; shift ;;
    --kernels) kernels=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
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
# kernel_dir NAME: the cached kernel's directory (built or fetched once).
kernel_dir() {
  case $1 in
    minimal) "$(dirname "$0")/../../vm/minimal-kernel.sh" ;;
    debian) "$(dirname "$0")/../../vm/guest-kernel.sh" ;;
    *) die "unknown kernel $1 (minimal or debian)" ;;
  esac
}
declare -A kdirs
for k in ${kernels//,/ }; do kdirs[$k]=$(kernel_dir "$k"); done

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

skiff=""
if [ -n "$image" ]; then
  cache_root=${SKIFF_CACHE:-$HOME/.cache/skiff}
  skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$cache_root/target}/release/skiff}
  [ -x "$skiff" ] || die "no skiff at $skiff (make release, or set SKIFF_BIN)"
  work=$(mktemp -d /var/tmp/skiff-vm-bench.XXXXXX)
  cleanup() {
    for s in "$work"/root/images/*/block.sock; do
      [ -S "$s" ] && "$skiff" --root "$work/root" umount "$s" >/dev/null 2>&1
    done
    for t in "$work"/root/images/*/tree; do
      [ -d "$t" ] && "$skiff" --root "$work/root" umount --lazy "$t" >/dev/null 2>&1
    done
    rm -rf "$work"
  }
  trap cleanup EXIT
  # One run first with each kernel: the image mount, its block device
  # and the initramfs are made once per node, not per VM.
  for k in ${kernels//,/ }; do
    SKIFF_VM_KERNEL=${kdirs[$k]} "$skiff" --root "$work/root" -q run --rm --sandbox vm "$image" true \
      2>"$work/first.err" || die "skiff run --sandbox vm failed: $(tail -3 "$work/first.err")"
  done
fi

# vmrun KDIR: prints "to-agent-ready to-first-output" in s, from skiff's start.
vmrun() {
  local t0 out="" line ready
  t0=$(date +%s.%N)
  while IFS= read -r line; do
    case $line in *"skiff-vm ready"*) [ -n "$out" ] || out=$(date +%s.%N) ;; esac
  done < <(SKIFF_VM_KERNEL=$1 SKIFF_LOG=info timeout 120 "$skiff" --root "$work/root" run --rm --sandbox vm \
    "$image" sh -c 'echo skiff-vm ready' 2>"$work/err")
  [ -n "$out" ] || die "skiff run --sandbox vm printed nothing: $(tail -3 "$work/err")"
  ready=$(grep -m1 "agent is ready" "$work/err" | cut -d' ' -f1)
  [ -n "$ready" ] || die "no 'agent is ready' line in skiff's log"
  echo "$(echo "$(date -d "$ready" +%s.%N) - $t0" | bc) $(echo "$out - $t0" | bc)"
}

# microvm under TCG: the TSC is given (calibrating it hangs), ACPI stays on
# (virtio-mmio devices are found through it); TCG's translation cache is
# skiff's size (crates/vm/src/hypervisor.rs, TCG).
khz=$(awk '/cpu MHz/ {printf "%d", $4 * 1000; exit}' /proc/cpuinfo)
# The boot work skiff's guests skip (crates/vm/src/hypervisor.rs, BOOT_TRIMS):
# the floor boots the same way.
trims="cryptomgr.notests audit=0 i8042.noaux i8042.nokbd i8042.nopnp rcupdate.rcu_expedited=1"
# boot KDIR INITRD MARKER CMDLINE [EXTRA QEMU ARGS...]: prints "to-marker to-exit" in s.
boot() {
  local kdir=$1 initrd=$2 marker=$3 cmdline=$4; shift 4
  local t0 t1 ready="" line
  t0=$(date +%s.%N)
  while IFS= read -r line; do
    case $line in *"$marker"*) [ -n "$ready" ] || ready=$(date +%s.%N) ;; esac
  done < <(timeout 120 qemu-system-x86_64 -M microvm -accel tcg,tb-size=24 -cpu max -m 256 -smp 1 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$kdir/vmlinux" -initrd "$initrd" "$@" \
    -append "console=ttyS0 tsc_early_khz=${khz:-2000000} quiet panic=-1 reboot=t $trims $cmdline" 2>&1)
  t1=$(date +%s.%N)
  [ -n "$ready" ] || die "the guest never printed '$marker' (a TCG boot hang? see docs/vm.md)"
  echo "$(echo "$ready - $t0" | bc) $(echo "$t1 - $t0" | bc)"
}
if [ -n "$skiff" ]; then
  echo "| run | kernel | bare init's line, s | skiff run → agent ready, s | → first output, s | ready ÷ bare | output ÷ bare |"
  echo "|---|---|---:|---:|---:|---:|---:|"
else
  echo "| run | kernel | to init's line, s | to QEMU's exit, s |"
  echo "|---|---|---:|---:|"
fi
for i in $(seq "$runs"); do
  for k in ${kernels//,/ }; do
    read -r bare bare_exit < <(boot "${kdirs[$k]}" "$initrd" "skiff-bare-init ready" "")
    if [ -n "$skiff" ]; then
      read -r ready out < <(vmrun "${kdirs[$k]}")
      printf "| %d | %s | %.2f | %.2f | %.2f | %.2f× | %.2f× |\n" "$i" "$k" "$bare" "$ready" "$out" \
        "$(echo "$ready / $bare" | bc -l)" "$(echo "$out / $bare" | bc -l)"
    else
      printf "| %d | %s | %.2f | %.2f |\n" "$i" "$k" "$bare" "$bare_exit"
    fi
  done
done
echo
for k in ${kernels//,/ }; do
  echo "kernel $k: $(basename "${kdirs[$k]}"), $(stat -c %s "${kdirs[$k]}/vmlinux" | awk '{printf "%.1f MB", $1 / 1e6}') vmlinux"
done
echo "$(qemu-system-x86_64 --version | head -1), TCG, 1 vCPU, 256 MiB"
if [ -n "$skiff" ]; then
  # Host memory of one running VM sandbox, as RSS (MiB), with each kernel.
  # RSS counts the QEMU binary's and libraries' pages (and the kernel file
  # QEMU maps), which every VM on the node shares; RssAnon is the VM's
  # own; PSS splits the shared pages.
  mem() { awk -v k="$2" '$1 == k":" {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
  pss() { awk '$1 == "Pss:" {printf "%.0f", $2 / 1024}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
  echo
  echo "| host memory of one VM sandbox, MiB | kernel | RSS | RssAnon (its own) | PSS |"
  echo "|---|---|---:|---:|---:|"
  for k in ${kernels//,/ }; do
    # A sandbox that has done some work: TCG's translation cache grows as
    # the guest runs code, up to skiff's cap.
    id=$(SKIFF_VM_KERNEL=${kdirs[$k]} "$skiff" --root "$work/root" run -d --sandbox vm "$image" \
      sh -c 'python3 -c "print(1)" >/dev/null 2>&1; echo started; sleep 600' 2>/dev/null)
    for _ in $(seq 100); do
      "$skiff" --root "$work/root" logs "$id" 2>/dev/null | grep -q started && break
      sleep 0.2
    done
    sleep 1
    qemu=$("$skiff" --root "$work/root" ps --json | jq -r '.[0].pid')
    sup=$(pgrep -f "supervise $id" | head -1)
    block=$(pgrep -f "$work/root/.*block.sock" | head -1)
    total_rss=0; total_anon=0; total_pss=0
    for row in "QEMU (guest RAM touched, TCG's code cache, devices):$qemu" \
               "its supervisor (skiff):$sup" \
               "the image's block device daemon (shared by every VM of the image):$block"; do
      name=${row%:*}; pid=${row##*:}
      r=$(mem "$pid" VmRSS); a=$(mem "$pid" RssAnon); p=$(pss "$pid")
      echo "| $name | $k | $r | $a | $p |"
      total_rss=$((total_rss + r)); total_anon=$((total_anon + a)); total_pss=$((total_pss + p))
    done
    echo "| **total** | $k | $total_rss | $total_anon | $total_pss |"
    "$skiff" --root "$work/root" rm -f "$id" >/dev/null
  done
fi
