#!/usr/bin/python3
"""The Wasm sandbox against the namespace sandbox (issue 19's targets), side by side in one run.

Paths, interleaved run by run, each from `skiff run --rm` to its first line of output:
  wasm cold     a WASI hello (tests/wasm/probe.c, clang --target=wasm32-wasi) with the node's
                compiled-module cache emptied first: the runner compiles it;
  wasm pooled   the same with its compiled module cached, run in the node's Wasm pool (the
                default);
  wasm process  the same in a runner process of its own (SKIFF_WASM_POOL=off);
  native        a static C hello of the same source (gcc -static) in the namespace sandbox.
Both images are local OCI layouts, converted and mounted by a first run before the table.

Memory: one foreground `skiff run` of the module sleeping: the skiff process, and what the
pool grew by (VmRSS and PSS); then N detached instances alive at once in the pool, and what
each adds to the pool, and with its supervisor. Then the same module N times in one shim
(Debian's containerd 1.6, `ctr run -d --runtime io.containerd.skiff-wasm.v2`, one pod's
annotation grouping them): what each adds to the shim and to the pool.

Usage: bench/wasm.py [--runs 15] [--density 20] [--no-docs]   (as root; after `make release wasm`)
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "coldstart"))
from harness import write_docs_section, SKIFF, BenchError, Containerd, log, sh  # noqa: E402

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
        # The first runs convert and mount both images, compile the module once and start
        # the pool.
        for img in (wasm_img, native_img):
            first_line(run(img), env)
        cache = os.path.join(root, "wasm")
        engines = [d for d in os.listdir(cache) if d not in ("runners", "pool")]
        own_process = dict(env, SKIFF_WASM_POOL="off")
        paths = {"wasm cold": [], "wasm pooled": [], "wasm process": [], "native": []}
        totals = {k: [] for k in paths}
        for i in range(a.runs):
            for name in paths:
                if name == "wasm cold":
                    for e in engines:
                        shutil.rmtree(os.path.join(cache, e), ignore_errors=True)
                img = native_img if name == "native" else wasm_img
                first, done = first_line(run(img), own_process if name == "wasm process" else env)
                paths[name].append(first)
                totals[name].append(done)
            log(f"run {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in paths.items()))

        pool = int(open(os.path.join(cache, "pool", "pool.pid")).read())
        # One instance: a foreground `skiff run` (the module's supervisor) and what the pool
        # grew by while it sleeps.
        before = (status_kib(pool, "VmRSS"), pss_kib(pool))
        fg = subprocess.Popen([SKIFF, "run", "--rm", wasm_img, "sleep", "600"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        fg.stdout.readline()
        time.sleep(1)
        during = (status_kib(pool, "VmRSS"), pss_kib(pool))
        one = {"supervisor": (status_kib(fg.pid, "VmRSS"), pss_kib(fg.pid)),
               "pool": (during[0] - before[0], during[1] - before[1]),
               "pool_total": during}
        fg.terminate()
        fg.wait()

        # N at once in the pool: what each adds to it, and each one's supervisor (`run -d`).
        def detached(img, *args):
            out = subprocess.run([SKIFF, "run", "-d", img, *args], env=env, capture_output=True, check=True)
            return out.stdout.decode().strip()
        time.sleep(1)
        before = pss_kib(pool)
        ids = [detached(wasm_img, "sleep", "600") for _ in range(a.density)]
        time.sleep(2)
        ps = json.loads(subprocess.run([SKIFF, "ps", "--json"], env=env, capture_output=True, check=True).stdout)
        supervisors = [c["pid"] for c in ps if c.get("pid")]
        pool_added = (pss_kib(pool) - before) / len(ids)
        supervisor_pss = sum(pss_kib(p) for p in supervisors) / len(ids)
        subprocess.run([SKIFF, "rm", "-f", *ids], env=env, capture_output=True)
        density = {"n": len(ids), "pool": pool_added, "supervisor": supervisor_pss}
        shim = shim_density(work, wasm_img, a.density)
        text = render(paths, totals, one, density, a.runs, shim)
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
    ax.bar(names, [statistics.median(paths[n]) * 1000 for n in names], color=["#c66", "#69c", "#9bd", "#999"])
    for i, n in enumerate(names):
        ax.plot([i] * len(paths[n]), [v * 1000 for v in paths[n]], "k.", markersize=3)
    ax.set_ylabel("ms to first output")
    ax.set_title("skiff run --rm: a WASI hello against a static native one")
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "img", "wasm-start.png"), dpi=100)


def shim_density(work, image, n):
    """N sleeping modules of one pod in one containerd-shim-skiff-v2: the PSS each adds to
    the shim and to the shim's pool, measured from the second (the first starts the pool)."""
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    shim_bin = os.path.join(os.path.dirname(os.path.realpath(SKIFF)), "containerd-shim-skiff-v2")
    if not os.path.exists(shim_bin):
        raise BenchError("containerd-shim-skiff-v2 is not beside skiff; run `make release`")
    for name in ("containerd-shim-skiff-v2", "containerd-shim-skiff-wasm-v2"):
        os.symlink(shim_bin, os.path.join(bindir, name))
    os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]
    archive = os.path.join(work, "wasm.tar")
    sh(["skopeo", "copy", "-q", f"oci:{image.split(':', 1)[1]}", f"oci-archive:{archive}:bench/wasm:1"], quiet=True)
    ctd = Containerd(os.path.join(work, "containerd"))
    ctd.start()
    ids = []
    log(f"shim density: {n} more modules in one shim")
    try:
        sh(ctd.ctr("image", "import", "--platform", "wasi/wasm", "--base-name", "bench/wasm", archive), quiet=True)
        ref = subprocess.run(ctd.ctr("image", "ls", "-q"), capture_output=True, text=True).stdout.split()[0]

        def start(i):
            cid = f"wasm-density-{i}"
            sh(ctd.ctr("run", "-d", "--platform", "wasi/wasm", "--runtime", "io.containerd.skiff-wasm.v2",
                       "--annotation", "io.kubernetes.cri.sandbox-id=density", ref, cid,
                       "/hello.wasm", "sleep", "600"), quiet=True)
            ids.append(cid)
        start(0)
        time.sleep(1)
        tasks = subprocess.run(ctd.ctr("task", "ls"), capture_output=True, text=True).stdout
        shim = int(tasks.splitlines()[1].split()[1])
        pool_pid = int(open("/run/skiff-shim/skiffbench/.wasm/pool/pool.pid").read())
        before = (pss_kib(shim), pss_kib(pool_pid), status_kib(shim, "VmRSS"))
        for i in range(1, n + 1):
            start(i)
        time.sleep(2)
        tasks = subprocess.run(ctd.ctr("task", "ls"), capture_output=True, text=True).stdout
        running = sum(1 for line in tasks.splitlines() if "RUNNING" in line)
        if running != n + 1:
            raise BenchError(f"{running} of {n + 1} modules run in the shim:\n{tasks}")
        after = (pss_kib(shim), pss_kib(pool_pid), status_kib(shim, "VmRSS"))
        return {"n": n, "shim": (after[0] - before[0]) / n, "pool": (after[1] - before[1]) / n,
                "shim_rss": after[2]}
    finally:
        for cid in ids:
            subprocess.run(ctd.ctr("task", "kill", "-s", "SIGKILL", cid), capture_output=True)
        time.sleep(1)
        for cid in ids:
            subprocess.run(ctd.ctr("task", "delete", cid), capture_output=True)
            subprocess.run(ctd.ctr("container", "delete", cid), capture_output=True)
        ctd.stop()


def render(paths, totals, one, density, runs, shim):
    med = {k: statistics.median(v) for k, v in paths.items()}
    tot = {k: statistics.median(v) for k, v in totals.items()}
    version = subprocess.run([SKIFF, "--version"], capture_output=True).stdout.decode().strip()
    lines = [HEADING, "",
             f"`skiff run --rm IMAGE` to its first line of output, medians of {runs} runs, the four paths "
             "interleaved run by run in one run; both images are local OCI layouts, converted and mounted by "
             f"a first run. The module is tests/wasm/probe.c built with clang for wasm32-wasi; the native "
             f"hello is the same source built with `gcc -static`. {version}, {os.uname().release}.", "",
             "| path | to first output | to exit | ÷ native (first output) |", "|---|---:|---:|---:|"]
    for k in paths:
        lines.append(f"| {k} | {med[k] * 1000:.0f} ms | {tot[k] * 1000:.0f} ms | {med[k] / med['native']:.2f}× |")
    s, p, t = one["supervisor"], one["pool"], one["pool_total"]
    ratio = med["wasm pooled"] / med["native"]
    lines += ["", "![Wasm start](img/wasm-start.png)", "",
              "| one sleeping instance (`skiff run`, in the pool) | VmRSS | PSS |", "|---|---:|---:|",
              f"| what the pool grew by (its store, memory, WASI) | {p[0]:.0f} KiB | {p[1]:.0f} KiB |",
              f"| its supervisor (the `skiff run` process) | {s[0] / 1024:.1f} MiB | {s[1] / 1024:.1f} MiB |",
              f"| the pool itself, shared by every module (wasmtime, the loaded module) | {t[0] / 1024:.1f} MiB | {t[1] / 1024:.1f} MiB |", "",
              f"{density['n']} detached instances alive at once: each adds {density['pool']:.0f} KiB of PSS to the pool, "
              f"and its supervisor (`skiff supervise`) {density['supervisor']:.0f} KiB.", "",
              f"{shim['n']} more modules of one pod in one `containerd-shim-skiff-v2` (`ctr run -d`, held by the "
              f"shim itself): each adds {shim['shim']:.0f} KiB of PSS to the shim and {shim['pool']:.0f} KiB to the pool "
              f"(the shim's VmRSS then {shim['shim_rss'] / 1024:.1f} MiB).", "",
              "Targets:",
              f"- a cached start ≤ 0.5× the native hello's: {ratio:.2f}× in the pool, "
              f"{'met' if ratio <= 0.5 else 'not met'};",
              f"- ≤ 10 MiB RSS for one `skiff run --sandbox wasm`: the module adds {p[0]:.0f} KiB to the pool; "
              f"its `skiff run` process is {s[0] / 1024:.1f} MiB ({s[1] / 1024:.1f} MiB PSS);",
              f"- ≤ 100 KiB per extra instance in a shared shim: {shim['shim'] + shim['pool']:.0f} KiB "
              f"({'met' if shim['shim'] + shim['pool'] <= 100 else 'not met'}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench/wasm.py: {e}")
