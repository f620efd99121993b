#!/usr/bin/python3
"""The Wasm sandbox against the namespace sandbox (issue 19's targets), side by side in one run.

Paths, interleaved run by run, each from `skiff run --rm` to its first line of output:
  wasm cold    a WASI hello (tests/wasm/probe.c, clang --target=wasm32-wasi) with the node's
               compiled-module cache emptied first: the runner compiles it;
  wasm cached  the same with its compiled module cached;
  native       a static C hello of the same source (gcc -static) in the namespace sandbox.
Both images are local OCI layouts, converted and mounted by a first run before the table.

Memory: one detached `skiff run -d` of the module sleeping, the runner's and its supervisor's
VmRSS and PSS; then N such instances alive at once, and what each adds (its runner's and its
supervisor's PSS).

Usage: bench/wasm.py [--runs 15] [--density 20] [--no-docs]   (as root; after `make release wasm`)
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "coldstart"))
from harness import write_docs_section, SKIFF, BenchError, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "tests", "wasm", "probe.c")
HEADING = "## Wasm sandbox (`bench/wasm.py`, issue 19)"


def sha256(b):
    import hashlib
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_with(files):
    """An uncompressed tar holding {path: (bytes, mode)}."""
    import io, tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def layout(dir, tag, files, platform, entrypoint):
    """An OCI image layout at dir: one plain tar layer, the given platform and entrypoint."""
    blobs = os.path.join(dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(b):
        d = sha256(b)
        open(os.path.join(blobs, d[7:]), "wb").write(b)
        return d
    layer = tar_with(files)
    ld = put(layer)
    config = json.dumps({"os": platform[0], "architecture": platform[1],
                         "config": {"Entrypoint": entrypoint},
                         "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    cd = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}]}).encode()
    md = put(manifest)
    open(os.path.join(dir, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]},
              open(os.path.join(dir, "index.json"), "w"))
    return f"oci:{dir}:{tag}"


def first_line(cmd, env):
    """Seconds from starting cmd to its first line of output, and to its exit."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = p.stdout.readline()
    first = time.monotonic() - t
    rest, err = p.communicate()
    done = time.monotonic() - t
    if p.returncode != 0 or not line:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace')[-400:]}")
    return first, done


def status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kib(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def children(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--density", type=int, default=20)
    ap.add_argument("--no-docs", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise BenchError("run as root")
    work = tempfile.mkdtemp(prefix="skiff-wasm-bench.", dir="/var/tmp")
    root = os.path.join(work, "root")
    env = dict(os.environ, SKIFF_ROOT=root)
    env.pop("SKIFF_LOG", None)
    try:
        wasm = os.path.join(work, "probe.wasm")
        native = os.path.join(work, "probe")
        subprocess.run(["clang", "--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o", wasm, PROBE], check=True)
        subprocess.run(["gcc", "-static", "-O2", "-s", "-o", native, PROBE], check=True)
        wasm_img = layout(os.path.join(work, "wasm"), "hello", {"hello.wasm": (open(wasm, "rb").read(), 0o755)},
                          ("wasi", "wasm"), ["/hello.wasm"])
        native_img = layout(os.path.join(work, "native"), "hello", {"hello": (open(native, "rb").read(), 0o755)},
                            ("linux", "amd64"), ["/hello"])
        run = lambda img: [SKIFF, "run", "--rm", img]
        # The first runs convert and mount both images, and compile the module once.
        for img in (wasm_img, native_img):
            first_line(run(img), env)
        cache = os.path.join(root, "wasm")
        engines = [d for d in os.listdir(cache) if d != "runners"]
        paths = {"wasm cold": [], "wasm cached": [], "native": []}
        totals = {k: [] for k in paths}
        for i in range(a.runs):
            for name in paths:
                if name == "wasm cold":
                    for e in engines:
                        shutil.rmtree(os.path.join(cache, e), ignore_errors=True)
                img = native_img if name == "native" else wasm_img
                first, done = first_line(run(img), env)
                paths[name].append(first)
                totals[name].append(done)
            log(f"run {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in paths.items()))

        # One instance's memory, sleeping.
        def detached(img, *args):
            out = subprocess.run([SKIFF, "run", "-d", img, *args], env=env, capture_output=True, check=True)
            return out.stdout.decode().strip()
        cid = detached(wasm_img, "sleep", "600")
        time.sleep(1.5)
        ps = json.loads(subprocess.run([SKIFF, "ps", "--json"], env=env, capture_output=True, check=True).stdout)
        runner = ps[0]["pid"]
        supervisor = int(open(f"/proc/{runner}/stat").read().rsplit(") ", 1)[1].split()[1])
        one = {"runner": (status_kib(runner, "VmRSS"), pss_kib(runner)),
               "supervisor": (status_kib(supervisor, "VmRSS"), pss_kib(supervisor))}
        subprocess.run([SKIFF, "rm", "-f", cid], env=env, capture_output=True)

        # N at once: what each adds, as the PSS of its runner and its supervisor (the shared
        # pages of the skiff binary split between them).
        ids = [detached(wasm_img, "sleep", "600") for _ in range(a.density)]
        time.sleep(2)
        ps = json.loads(subprocess.run([SKIFF, "ps", "--json"], env=env, capture_output=True, check=True).stdout)
        runners = [c["pid"] for c in ps if c.get("pid")]
        supervisors = [int(open(f"/proc/{p}/stat").read().rsplit(") ", 1)[1].split()[1]) for p in runners]
        runner_pss = sum(pss_kib(p) for p in runners)
        supervisor_pss = sum(pss_kib(p) for p in supervisors)
        subprocess.run([SKIFF, "rm", "-f", *ids], env=env, capture_output=True)
        density = {"n": len(runners), "runner": runner_pss / len(runners),
                   "supervisor": supervisor_pss / len(runners)}
        text = render(paths, totals, one, density, a.runs)
        print(text)
        if not a.no_docs:
            plot(paths)
            write_docs_section(HEADING, text)
    finally:
        subprocess.run([SKIFF, "rm", "-f", *[l for l in subprocess.run([SKIFF, "ps", "-aq"], env=env, capture_output=True).stdout.decode().split()]],
                       env=env, capture_output=True)
        for d in os.listdir(os.path.join(root, "images")) if os.path.isdir(os.path.join(root, "images")) else []:
            subprocess.run([SKIFF, "umount", "--lazy", os.path.join(root, "images", d, "tree")], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def plot(paths):
    """docs/img/wasm-start.png: each path's start times, run by run, and their medians."""
    if subprocess.run(["dpkg", "-s", "python3-matplotlib"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3-matplotlib"], capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(paths)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, [statistics.median(paths[n]) * 1000 for n in names], color=["#c66", "#69c", "#999"])
    for i, n in enumerate(names):
        ax.plot([i] * len(paths[n]), [v * 1000 for v in paths[n]], "k.", markersize=3)
    ax.set_ylabel("ms to first output")
    ax.set_title("skiff run --rm: a WASI hello against a static native one")
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "img", "wasm-start.png"), dpi=100)


def render(paths, totals, one, density, runs):
    med = {k: statistics.median(v) for k, v in paths.items()}
    tot = {k: statistics.median(v) for k, v in totals.items()}
    version = subprocess.run([SKIFF, "--version"], capture_output=True).stdout.decode().strip()
    lines = [HEADING, "",
             f"`skiff run --rm IMAGE` to its first line of output, medians of {runs} runs, the three paths "
             "interleaved run by run in one run; both images are local OCI layouts, converted and mounted by "
             f"a first run. The module is tests/wasm/probe.c built with clang for wasm32-wasi; the native "
             f"hello is the same source built with `gcc -static`. {version}, {os.uname().release}.", "",
             "| path | to first output | to exit | ÷ native (first output) |", "|---|---:|---:|---:|"]
    for k in ("wasm cold", "wasm cached", "native"):
        lines.append(f"| {k} | {med[k] * 1000:.0f} ms | {tot[k] * 1000:.0f} ms | {med[k] / med['native']:.2f}× |")
    r, s = one["runner"], one["supervisor"]
    lines += ["", "![Wasm start](img/wasm-start.png)", "", "| one sleeping instance | VmRSS | PSS |", "|---|---:|---:|",
              f"| the runner (wasmtime, the module, WASI) | {r[0] / 1024:.1f} MiB | {r[1] / 1024:.1f} MiB |",
              f"| its supervisor (skiff) | {s[0] / 1024:.1f} MiB | {s[1] / 1024:.1f} MiB |", "",
              f"{density['n']} instances alive at once: each adds {(density['runner'] + density['supervisor']) / 1024:.1f} MiB "
              f"of PSS ({density['runner'] / 1024:.1f} MiB its runner, {density['supervisor'] / 1024:.1f} MiB its supervisor).", "",
              "Targets:",
              f"- a cached start ≤ 0.5× the native hello's: {med['wasm cached'] / med['native']:.2f}×, "
              f"{'met' if med['wasm cached'] / med['native'] <= 0.5 else 'not met'};",
              f"- ≤ 10 MiB RSS for one `skiff run --sandbox wasm`: the runner {r[0] / 1024:.1f} MiB, "
              f"with its supervisor {(r[0] + s[0]) / 1024:.1f} MiB;",
              f"- ≤ 100 KiB per extra instance in a shared shim: not met; each instance is a runner process "
              f"of its own, {(density['runner'] + density['supervisor']):.0f} KiB each here.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench/wasm.py: {e}")
