#!/usr/bin/env bash
# The demo: start a registry on 127.0.0.1, push the real Debian test image,
# convert it to skiff registry to registry, and show what came out.
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
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
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
