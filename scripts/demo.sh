#!/usr/bin/env bash
# The demo: start a registry on 127.0.0.1, push the real Debian test image,
# convert it to skiff registry to registry, show what came out, then run a
# command in it lazily: cold cache first, then warm.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${SKIFF_CACHE:-$HOME/.cache/skiff}
skiff=${CARGO_TARGET_DIR:-$cache/target}/release/skiff
image=$(bash tests/images/build-debian.sh)
work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
export SKIFF_ROOT=$work/root
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
cleanup() {
	for t in "$SKIFF_ROOT"/images/*/tree; do [ -d "$t" ] && "$skiff" umount --lazy "$t" >/dev/null 2>&1; done
	kill $registry_pid 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "pushing the Debian test image (3 layers) to the registry at 127.0.0.1:$port"
skopeo copy --quiet --dest-tls-verify=false "oci:$image:full" "docker://127.0.0.1:$port/demo/debian:full"
skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/demo/debian:full" | jq -r '"  layers: \(.Layers | length), created \(.Created)"'

say "skiff convert 127.0.0.1:$port/demo/debian:full 127.0.0.1:$port/demo/debian:skiff"
"$skiff" convert "127.0.0.1:$port/demo/debian:full" "127.0.0.1:$port/demo/debian:skiff"

say "skiff inspect 127.0.0.1:$port/demo/debian:skiff"
"$skiff" inspect "127.0.0.1:$port/demo/debian:skiff"

say "skiff check (every chunk against its digest)"
"$skiff" check "127.0.0.1:$port/demo/debian:skiff"

say "the result is an ordinary OCI image: skopeo inspect --raw"
skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$port/demo/debian:skiff" \
	| jq -r '.layers[] | "  \(.mediaType)  \(.size) bytes"'

# Time from the command to its first line of output, then the rest.
first_output() {
	python3 - "$@" <<'PY'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
first = p.stdout.readline()
t1 = time.monotonic()
rest = p.stdout.read()
p.wait()
sys.stdout.write(first + rest)
print(f"  -> first output after {1000 * (t1 - t0):.0f} ms, exit code {p.returncode}")
PY
}
ref="127.0.0.1:$port/demo/debian:skiff"
image_bytes=$("$skiff" inspect --json "$ref" | jq .blob_bytes)
cmd=(python3 -c 'import sys; print("hello from python", sys.version.split()[0])')

say "skiff run --rm $ref python3 ... (cold: empty chunk cache, nothing mounted)"
first_output "$skiff" run --rm "$ref" "${cmd[@]}"
fetched=$("$skiff" cache stats --json | jq .bytes)
echo "  fetched $fetched bytes of the image's $image_bytes ($((100 * fetched / image_bytes))%), all verified"

say "skiff run again (warm: the image stays mounted, chunks are cached)"
first_output "$skiff" run --rm "$ref" "${cmd[@]}"

say "the node's chunk cache: skiff cache stats"
"$skiff" cache stats
