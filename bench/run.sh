#!/usr/bin/env bash
# Cold start and dedup benchmarks of issue 5 over a shaped link: builds the
# corpus (bench/corpus), runs bench/coldstart/coldstart.py per link profile and
# bench/dedup/dedup.py, then rewrites the "Cold start" and "Dedup" sections of
# docs/benchmarks.md and docs/img/coldstart.png (bench/coldstart/report.py).
#
#   bench/run.sh                 all workloads at 100mbit, 5 cold runs, plus dedup
#   bench/run.sh --quick         python only at 100mbit, 5 runs, no dedup (under 10 minutes);
#                                its own section of docs/benchmarks.md, the full run's kept
#   bench/run.sh --containerd    python and node at 100mbit and 1gbit, 5 runs, through containerd:
#                                OCI, eStargz, skiff run, and containerd + skiff snapshotter (ctr and
#                                the CRI, through crates/cli/examples/cri_run.rs); its
#                                own section of docs/benchmarks.md
#   bench/run.sh --smoke         python at 1gbit, 1 run; fails unless every path
#                                produced a number; writes no docs (for `make test`)
#   options: --runs N --profiles 1gbit,100mbit,20mbit --workloads python,node,gcc,java,numpy
#            --no-dedup --paths oci,estargz,estargz-opt,skiff,skiff-trace,skiff-vm
#            --baseline BIN   also runs an earlier skiff build (path skiff-baseline;
#                             SKIFF_BASELINE_LABEL names it in the docs)
# As root. Results JSON are kept in ${SKIFF_CACHE:-~/.cache/skiff}/bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full runs=5 profiles=100mbit workloads=python,node,gcc,java,numpy dedup=1 paths=""
while [ $# -gt 0 ]; do
  case $1 in
  --quick) mode=quick profiles=100mbit workloads=python dedup=0 ;;
  --containerd) mode=containerd profiles=100mbit,1gbit workloads=python,node dedup=0 paths=oci,estargz,skiff,skiff-ctr,skiff-ctr-shim,skiff-cri ;;
  --smoke) mode=smoke profiles=1gbit workloads=python runs=1 dedup=0 ;;
  --runs) runs=$2; shift ;;
  --profiles) profiles=$2; shift ;;
  --workloads) workloads=$2; shift ;;
  --paths) paths=$2; shift ;;
  --no-dedup) dedup=0 ;;
  --baseline) export SKIFF_BASELINE_BIN=$2; shift ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: must run as root (netns, containerd, mounts)" >&2; exit 1; }

cache=${SKIFF_CACHE:-$HOME/.cache/skiff}
skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$cache/target}/release/skiff}
[ -x "$skiff" ] || { echo "bench/run.sh: no skiff binary at $skiff; run \`make release\` first" >&2; exit 1; }
py=/usr/bin/python3
# The report draws its chart with Debian's matplotlib (the smoke run writes no docs).
if [ "$mode" != smoke ] && ! dpkg -s python3-matplotlib >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null
fi
results=$cache/bench/results
mkdir -p "$results" /run/skiff-bench-net
stamp=$(date -u +%Y%m%dT%H%M%SZ)

# One shaped link per machine: the netns and veth names are fixed.
exec 9>/run/skiff-bench-net/lock
flock -n 9 || { echo "bench/run.sh: another benchmark holds /run/skiff-bench-net/lock" >&2; exit 1; }
# The Python scripts tear down on their own; this is the net under them.
trap 'bench/net/link.sh down >/dev/null 2>&1 || true' EXIT

bash bench/corpus/build.sh $(echo "$workloads" | tr , '\n' | sed 's/^java$/large/; s/^numpy$/large/' | sort -u) >/dev/null
[ "$dedup" = 1 ] && bash bench/corpus/build.sh h1 h2 addrmadd >/dev/null

files=()
for p in ${profiles//,/ }; do
  out=$results/coldstart-$mode-$p-$stamp.json
  $py bench/coldstart/coldstart.py --profile "$p" --runs "$runs" --workloads "$workloads" \
    ${paths:+--paths "$paths"} --out "$out"
  files+=("$out")
done

if [ "$mode" = smoke ]; then
  $py - "${files[@]}" <<'PY'
import json, sys
bad = []
for f in sys.argv[1:]:
    d = json.load(open(f))
    for w, paths in d["results"].items():
        for p, runs in paths.items():
            note = d["notes"].get(f"{p}/{w}", "no number")
            # Strict: a path that could not run (even "not available") fails the smoke.
            if not runs:
                bad.append(f"{w}/{p}: {note}")
            print(f"smoke: {w} {p}: " + (f"{runs[0]['first']:.2f} s to first output" if runs else note[:400]))
if bad:
    sys.exit("smoke: FAILED: " + "; ".join(bad))
print("smoke: every available path produced a number")
PY
  exit
fi

args=()
if [ "$dedup" = 1 ]; then
  dout=$results/dedup-$stamp.json
  $py bench/dedup/dedup.py --profile 1gbit --out "$dout"
  args=(--dedup "$dout")
fi
cmd="bench/run.sh"
quick=""
containerd=""
[ "$mode" = containerd ] && cmd="bench/run.sh --containerd" containerd=1
[ "$mode" = quick ] && cmd="bench/run.sh --quick${SKIFF_BASELINE_BIN:+ --baseline BIN}" quick=1
[ "$mode" = full ] && cmd="bench/run.sh --runs $runs --profiles $profiles --workloads $workloads${paths:+ --paths $paths}"
$py bench/coldstart/report.py --command "$cmd" ${quick:+--quick} ${containerd:+--containerd} "${files[@]}" "${args[@]}"
