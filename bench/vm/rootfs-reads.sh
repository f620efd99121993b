#!/usr/bin/env bash
# The VM sandbox's rootfs, measured against the shared-filesystem ways a
# guest could read the same image (issue 18): cold reads in the guest of
#   block    skiff's lazy, verified EROFS block device (skiff mount --nbd),
#            attached by QEMU's NBD client to virtio-blk, as skiff run
#            --sandbox vm does;
#   virtiofs virtio-fs (Debian's virtiofsd) over the host's skiff FUSE
#            mount of the image;
#   9p       virtio-9p (QEMU's local fsdev) over the same FUSE mount.
# One guest per row: Debian's kernel and a small static init that mounts
# the rootfs read-only, reads a list of small files and then a list of
# large ones, each file whole, and prints the times and a checksum of the
# bytes (every way must read the same bytes). Both host paths use one
# chunk cache under one --root, filled first; the host's page cache is
# dropped before every boot, so each row reads from the chunk cache.
#
# Usage (as root): bench/vm/rootfs-reads.sh [--runs N] [--image IMAGE]
# SKIFF_BIN names skiff (default: the release build). The default image is
# the tests' Debian image.
set -euo pipefail

runs=3
image=""
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift ;;
    --image) image=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "rootfs-reads: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "rootfs-reads: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
[ -x /usr/lib/qemu/virtiofsd ] || missing="$missing qemu-system-common"
command -v cpio >/dev/null || missing="$missing cpio"
command -v gcc >/dev/null || missing="$missing gcc libc6-dev"
command -v bc >/dev/null || missing="$missing bc"
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
    die "could not install$missing: run apt-get update, then retry"
fi

cache_root=${SKIFF_CACHE:-$HOME/.cache/skiff}
cache=$cache_root/vm
skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$cache_root/target}/release/skiff}
[ -x "$skiff" ] || die "no skiff at $skiff (make release, or set SKIFF_BIN)"
if [ -z "$image" ]; then
  image="oci:$(bash "$repo/tests/images/build-debian.sh"):full"
fi
kdir=$("$repo/vm/guest-kernel.sh")
pkg=$(basename "$kdir")

# fuse and virtiofs, which skiff's guest never loads: from the same
# kernel package, once.
extra=$cache/bench-modules-$pkg
if [ ! -f "$extra/virtiofs.ko" ]; then
  tmp=$(mktemp -d "$cache/.bench-modules.XXXXXX")
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "could not download $pkg"
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  mkdir -p "$tmp/out"
  for m in fuse virtiofs; do
    ko=$(find "$tmp/x/lib/modules" -name "$m.ko" | head -1)
    [ -n "$ko" ] || die "$pkg has no $m.ko"
    cp "$ko" "$tmp/out/"
  done
  rm -rf "$extra"
  mv "$tmp/out" "$extra"
  rm -rf "$tmp"
fi

work=$(mktemp -d /var/tmp/skiff-rootfs-reads.XXXXXX)
root=$work/root
vfsd=""
cleanup() {
  [ -n "$vfsd" ] && kill "$vfsd" 2>/dev/null
  [ -S "$work/block.sock" ] && "$skiff" --root "$root" umount "$work/block.sock" >/dev/null 2>&1
  [ -d "$work/tree" ] && "$skiff" --root "$root" umount --lazy "$work/tree" >/dev/null 2>&1
  grep -q " $work/tree " /proc/mounts && umount -l "$work/tree"
  rm -rf "$work"
}
trap cleanup EXIT

"$skiff" --root "$root" -q mount --daemon "$image" "$work/tree" >/dev/null ||
  die "skiff mount $image failed"
"$skiff" --root "$root" -q mount --daemon --nbd "$image" "$work/block.sock" >/dev/null ||
  die "skiff mount --nbd $image failed"

# The workloads, as paths in the image: up to 2000 small files (at most
# 16 KiB) in path order, and the largest files, largest first, up to
# 64 MiB in all.
(cd "$work/tree" && find usr etc -type f -size -17k 2>/dev/null | LC_ALL=C sort | awk 'NR <= 2000') \
  >"$work/small.list"
(cd "$work/tree" && find usr -type f -size +256k -printf '%s %p\n' 2>/dev/null | sort -rn |
  awk '!done { if (sum + $1 > 64 * 1048576 && n > 0) done = 1; else { sum += $1; n++; print $2 } }') >"$work/large.list"
[ -s "$work/small.list" ] && [ -s "$work/large.list" ] || die "the image has too few files to read"
# Fill the chunk cache through the FUSE mount.
(cd "$work/tree" && cat "$work/small.list" "$work/large.list" | xargs cat >/dev/null)

cat >"$work/init.c" <<'C'
/* The benchmark's guest init: loads /modules.order, mounts the rootfs that
   /fs names at /mnt, reads /small.list then /large.list, prints one line. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void halt(const char *why) {
  if (why) printf("skiff-bench error %s\n", why);
  fflush(stdout);
  reboot(RB_POWER_OFF);
  exit(1);
}

static char buf[1 << 20];

/* Reads every file the list names under /mnt; FNV-1a over the bytes. */
static double read_list(const char *list, long *files, long *bytes, unsigned long long *sum) {
  FILE *l = fopen(list, "r");
  char path[4096], full[4200];
  double t0 = now();
  *files = 0; *bytes = 0; *sum = 1469598103934665603ULL;
  if (!l) halt("no list");
  while (fgets(path, sizeof path, l)) {
    path[strcspn(path, "\n")] = 0;
    snprintf(full, sizeof full, "/mnt/%s", path);
    int fd = open(full, O_RDONLY);
    if (fd < 0) { printf("skiff-bench error open %s\n", full); halt(0); }
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
      for (ssize_t i = 0; i < n; i += 512) { *sum ^= (unsigned char)buf[i]; *sum *= 1099511628211ULL; }
      *bytes += n;
    }
    if (n < 0) { printf("skiff-bench error read %s\n", full); halt(0); }
    close(fd);
    (*files)++;
  }
  fclose(l);
  return now() - t0;
}

int main(void) {
  char fs[32] = {0}, line[256];
  mount("devtmpfs", "/dev", "devtmpfs", 0, "");
  FILE *order = fopen("/modules.order", "r");
  if (!order) halt("no modules.order");
  while (fgets(line, sizeof line, order)) {
    line[strcspn(line, "\n")] = 0;
    int fd = open(line, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) { printf("skiff-bench error module %s\n", line); halt(0); }
    close(fd);
  }
  fclose(order);
  FILE *f = fopen("/fs", "r");
  if (!f || !fgets(fs, sizeof fs, f)) halt("no /fs");
  fs[strcspn(fs, "\n")] = 0;
  double t0 = now();
  int rc;
  if (!strcmp(fs, "block")) {
    struct stat st;
    for (int i = 0; i < 1000 && stat("/dev/vda", &st) != 0; i++) usleep(10000);
    rc = mount("/dev/vda", "/mnt", "erofs", MS_RDONLY, "");
  } else if (!strcmp(fs, "virtiofs")) {
    rc = mount("rootfs", "/mnt", "virtiofs", MS_RDONLY, "");
  } else {
    /* skiff's options for -v volumes. */
    rc = mount("rootfs", "/mnt", "9p", MS_RDONLY, "trans=virtio,version=9p2000.L,msize=262144,access=client");
  }
  if (rc != 0) halt("mount");
  double mounted = now() - t0;
  long sf, sb, lf, lb;
  unsigned long long ssum, lsum;
  double small = read_list("/small.list", &sf, &sb, &ssum);
  double large = read_list("/large.list", &lf, &lb, &lsum);
  printf("skiff-bench fs=%s mount=%.3f small_files=%ld small_bytes=%ld small=%.3f small_sum=%llx "
         "large_files=%ld large_bytes=%ld large=%.3f large_sum=%llx\n",
         fs, mounted, sf, sb, small, ssum, lf, lb, large, lsum);
  halt(0);
  return 0;
}
C
gcc -static -O2 -o "$work/init" "$work/init.c" || die "could not build the guest's init"

# One initramfs per way: the init, its lists, the modules it loads.
initramfs() {
  local fs=$1 dir=$work/initrd-$1
  mkdir -p "$dir/dev" "$dir/mnt" "$dir/modules"
  cp "$work/init" "$dir/init"
  cp "$work/small.list" "$work/large.list" "$dir/"
  echo "$fs" >"$dir/fs"
  : >"$dir/modules.order"
  add() { cp "$1" "$dir/modules/"; echo "/modules/$(basename "$1")" >>"$dir/modules.order"; }
  while read -r m; do add "$kdir/modules/$m"; done <"$kdir/modules/order"
  case $fs in
    9p) while read -r m; do add "$kdir/modules/9p/$m"; done <"$kdir/modules/9p/order" ;;
    virtiofs) add "$extra/fuse.ko"; add "$extra/virtiofs.ko" ;;
  esac
  mknod "$dir/dev/console" c 5 1
  (cd "$dir" && find . | cpio -o -H newc --quiet) >"$work/$fs.cpio"
}
for fs in block virtiofs 9p; do initramfs "$fs"; done

khz=$(awk '/cpu MHz/ {printf "%d", $4 * 1000; exit}' /proc/cpuinfo)
# boot FS: the guest's result line.
boot() {
  local fs=$1 args=()
  local machine="microvm"
  case $fs in
    block)
      args=(-blockdev "driver=nbd,node-name=rootfs,server.type=unix,server.path=$work/block.sock,read-only=on"
            -device virtio-blk-device,drive=rootfs) ;;
    9p)
      args=(-fsdev "local,id=rootfs,path=$work/tree,security_model=none,readonly=on"
            -device virtio-9p-device,fsdev=rootfs,mount_tag=rootfs) ;;
    virtiofs)
      rm -f "$work/vfs.sock"
      /usr/lib/qemu/virtiofsd --socket-path="$work/vfs.sock" -o source="$work/tree" -o cache=auto \
        >"$work/virtiofsd.log" 2>&1 &
      vfsd=$!
      for _ in $(seq 100); do [ -S "$work/vfs.sock" ] && break; sleep 0.05; done
      machine="microvm,memory-backend=mem"
      args=(-object memory-backend-memfd,id=mem,size=256M,share=on
            -global virtio-mmio.force-legacy=false
            -chardev "socket,id=vfs,path=$work/vfs.sock"
            -device vhost-user-fs-device,chardev=vfs,tag=rootfs) ;;
  esac
  sync
  echo 3 >/proc/sys/vm/drop_caches
  timeout 300 qemu-system-x86_64 -M "$machine" -accel tcg -cpu max -m 256 -smp 1 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$kdir/vmlinux" -initrd "$work/$fs.cpio" "${args[@]}" \
    -append "console=ttyS0 tsc_early_khz=${khz:-2000000} quiet panic=-1 reboot=t" 2>&1 |
    tr -d '\r' | grep -m1 "^skiff-bench" || true
  if [ -n "$vfsd" ]; then kill "$vfsd" 2>/dev/null || true; wait "$vfsd" 2>/dev/null || true; vfsd=""; fi
}
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }

echo "| run | rootfs | mount, s | $(wc -l <"$work/small.list") small files, s | $(wc -l <"$work/large.list") large files, s |"
echo "|---|---|---:|---:|---:|"
declare -A small large sums
for i in $(seq "$runs"); do
  for fs in block virtiofs 9p; do
    line=$(boot "$fs")
    case $line in "skiff-bench fs="*) ;; *) die "the $fs guest gave no result: ${line:-nothing}" ;; esac
    printf "| %d | %s | %s | %s | %s |\n" "$i" "$fs" "$(field "$line" mount)" \
      "$(field "$line" small)" "$(field "$line" large)"
    small[$fs]="${small[$fs]:-} $(field "$line" small)"
    large[$fs]="${large[$fs]:-} $(field "$line" large)"
    sums[$fs]="$(field "$line" small_sum)/$(field "$line" large_sum) $(field "$line" small_bytes)/$(field "$line" large_bytes)"
  done
done
[ "${sums[block]}" = "${sums[virtiofs]}" ] && [ "${sums[block]}" = "${sums[9p]}" ] ||
  die "the ways read different bytes: block ${sums[block]}, virtiofs ${sums[virtiofs]}, 9p ${sums[9p]}"
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
echo "| median | small files, s | ÷ virtio-fs | large files, s | ÷ virtio-fs |"
echo "|---|---:|---:|---:|---:|"
vs=$(echo "${small[virtiofs]}" | median); vl=$(echo "${large[virtiofs]}" | median)
for fs in block virtiofs 9p; do
  s=$(echo "${small[$fs]}" | median); l=$(echo "${large[$fs]}" | median)
  printf "| %s | %.3f | %.2f× | %.3f | %.2f× |\n" "$fs" "$s" "$(echo "$s / $vs" | bc -l)" \
    "$l" "$(echo "$l / $vl" | bc -l)"
done
# The plot, docs/img/vm-rootfs-reads.png: median seconds per way.
if ! command -v gnuplot >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null || true
fi
if command -v gnuplot >/dev/null; then
  for fs in block virtiofs 9p; do
    echo "$fs $(echo "${small[$fs]}" | median) $(echo "${large[$fs]}" | median)"
  done >"$work/plot.dat"
  gnuplot <<GP
set terminal pngcairo size 800,400
set output '$repo/docs/img/vm-rootfs-reads.png'
set style data histograms
set style histogram clustered gap 1
set style fill solid
set key left top
set ylabel 'seconds, median of $runs cold guests'
set title 'Reading the image in a TCG guest: skiff block device vs virtio-fs and 9p'
set yrange [0:*]
plot '$work/plot.dat' using 2:xtic(1) title '$(wc -l <"$work/small.list") small files', '' using 3 title '$(wc -l <"$work/large.list") large files'
GP
fi
echo
echo "bytes read: ${sums[block]#* } (small/large), the same by every way; kernel $pkg,"
echo "$(qemu-system-x86_64 --version | head -1), TCG, 1 vCPU, 256 MiB; host page cache dropped before each boot"
