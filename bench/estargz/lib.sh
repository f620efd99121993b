# Shared by build.sh, convert.sh and selftest.sh; source it, don't run it.
# Logs go to stderr so callers can keep stdout for results.

log() { printf 'estargz: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The Debian packages the eStargz path needs. golang-github-containerd-
# stargz-snapshotter-dev depends on every Go library main.go imports.
ESTARGZ_PKGS=(golang-go golang-github-containerd-stargz-snapshotter-dev
  stargz-snapshotter containerd runc fuse3 jq)

# ensure_pkgs PKG...: apt-get installs the ones not installed yet; updates the
# package lists only when a first try fails (a fresh machine has none).
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
}

# wait_for TIMEOUT_S CMD...: polls CMD every 0.1 s; fails after TIMEOUT_S.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

# start_containerd DIR [SNAPSHOTTER_SOCK]: starts a private containerd whose
# root, state, sockets and config all live in DIR (never /run/containerd's
# daemon), optionally with the eStargz proxy snapshotter registered as
# "stargz". Sets CONTAINERD_PID and CONTAINERD_SOCK. Stop with stop_containerd.
start_containerd() {
  local dir=$1 sn=${2:-}
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
# CRI would look for CNI and start a streaming server: not wanted here.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
  if [ -n "$sn" ]; then
    cat >>"$dir/config.toml" <<EOF
[proxy_plugins.stargz]
  type = "snapshot"
  address = "$sn"
EOF
  fi
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  CONTAINERD_SOCK=$dir/containerd.sock
  wait_for 30 ctr -a "$CONTAINERD_SOCK" version ||
    { tail -20 "$dir/containerd.log" >&2; die "containerd did not start (log: $dir/containerd.log)"; }
  log "containerd $CONTAINERD_PID on $CONTAINERD_SOCK"
}

# stop_pid PID [TIMEOUT_S]: SIGTERM, then SIGKILL if it outlives the timeout.
stop_pid() {
  local pid=$1 t=${2:-20}
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  wait_for "$t" sh -c "! kill -0 $pid" || { log "pid $pid ignored SIGTERM; killing"; kill -KILL "$pid" 2>/dev/null; }
  wait "$pid" 2>/dev/null || true
}

# stop_containerd DIR: stops the containerd started by start_containerd, its
# leftover shims, and unmounts whatever it left under DIR.
stop_containerd() {
  local dir=$1 p m
  stop_pid "${CONTAINERD_PID:-}"
  CONTAINERD_PID=
  # Shims outlive containerd by design; ours are the ones naming our socket.
  for p in $(pgrep -f "containerd-shim.*-address $dir/containerd.sock" || true); do stop_pid "$p" 5; done
  # Deepest first, so nested mounts come off before their parents.
  for m in $(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# start_snapshotter BIN ROOT SOCK [ARGS...]: starts skiff-bench-estargz and
# waits for its socket. Sets SNAPSHOTTER_PID; its log is ROOT.log.
start_snapshotter() {
  local bin=$1 root=$2 sock=$3; shift 3
  "$bin" --root "$root" --address "$sock" "$@" >"$root.log" 2>&1 &
  SNAPSHOTTER_PID=$!
  wait_for 30 test -S "$sock" ||
    { tail -20 "$root.log" >&2; die "snapshotter did not start (log: $root.log)"; }
  log "snapshotter $SNAPSHOTTER_PID on $sock"
}

# stop_snapshotter ROOT: SIGTERM (the daemon unmounts its FUSE layers), then
# lazily unmounts anything a killed daemon left under ROOT. Fails if it had to.
stop_snapshotter() {
  local root=$1 m left=0
  stop_pid "${SNAPSHOTTER_PID:-}"
  SNAPSHOTTER_PID=
  for m in $(awk -v d="$root/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    log "left mounted: $m"; left=1
    umount -l "$m" 2>/dev/null || true
  done
  return $left
}
