#!/usr/bin/python3
"""Mount benchmark for `skiff mount` (issue 3).

Side by side in one run, on the Debian test image served by a registry on
127.0.0.1 (no link shaping; see bench/ for shaped-link cold starts):

  - cold start of `python3 -c 'print(1)'` (chroot into the tree): skiff lazy
    mount with an empty cache, the same with a recorded prefetch trace, and
    the same tree unpacked on local disk with the page cache dropped;
  - warm sequential read throughput of the image's large files: page cache
    warm, and page cache dropped with skiff's chunk cache warm, against the
    local tree;
  - `find -type f | xargs stat` over the whole tree, metadata caches dropped;
  - the mount daemon's peak RSS.

Rewrites the "Mount" section of docs/benchmarks.md. Usage: bench/mount.py [--runs N]
"""
import json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
SKIFF = os.path.join(TARGET, "release", "skiff")
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd):
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Skiff:
    def __init__(self, root):
        self.env = dict(os.environ, SKIFF_ROOT=root)

    def run(self, *args):
        return sh([SKIFF, *args], env=self.env)

    def mount(self, image, mnt, *extra):
        self.run("mount", "--daemon", image, mnt, *extra)

    def stats(self, mnt):
        return json.loads(self.run("stats", mnt))

    def umount(self, mnt):
        subprocess.run([SKIFF, "umount", "--lazy", mnt], env=self.env, capture_output=True)


def synthetic_gb(work):
    """An OCI layout with ~1 GB of files: 180 random 5 MiB files and 20,000
    small text files, in one gzip layer (written by GNU tar)."""
    tree = os.path.join(work, "gbtree")
    os.makedirs(os.path.join(tree, "data"))
    os.makedirs(os.path.join(tree, "small"))
    for i in range(180):
        with open(os.path.join(tree, "data", f"f{i:03}"), "wb") as f:
            f.write(os.urandom(5 << 20))
    for i in range(20000):
        with open(os.path.join(tree, "small", f"s{i:05}.txt"), "w") as f:
            f.write(f"small file {i}\n" * (1 + i % 50))
    layout = os.path.join(work, "gblayout")
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:big"])
    bundle = os.path.join(work, "gbbundle")
    sh(["umoci", "unpack", "--image", f"{layout}:big", bundle])
    shutil.rmtree(os.path.join(bundle, "rootfs"))
    shutil.move(tree, os.path.join(bundle, "rootfs"))
    sh(["umoci", "repack", "--image", f"{layout}:big", bundle])
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(bundle, "rootfs")) for f in fs)
    shutil.rmtree(bundle)
    return layout, total


def main():
    image = sh(["bash", os.path.join(ROOT, "tests/images/build-debian.sh")]).strip().splitlines()[-1]
    work = tempfile.mkdtemp(prefix="skiff-mbench-")
    port = free_port()
    cfg = os.path.join(work, "registry.yml")
    open(cfg, "w").write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/reg\nhttp:\n  addr: 127.0.0.1:{port}\n")
    registry = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        reg = f"127.0.0.1:{port}"
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image}:full", f"docker://{reg}/src/debian:full"])
        conv = Skiff(os.path.join(work, "conv"))
        conv.run("convert", "-q", f"{reg}/src/debian:full", f"{reg}/b/debian:plain")
        local = os.path.join(work, "local")
        conv.run("unpack", f"{reg}/b/debian:plain", local)
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt)

        # Record python's start-up trace, and convert with it.
        t = Skiff(os.path.join(work, "trace"))
        trace = os.path.join(work, "py.trace")
        t.mount(f"{reg}/b/debian:plain", mnt, "--record-trace", trace)
        subprocess.run(["chroot", mnt, "/usr/bin/python3", "-c", "print(1)"], check=True, capture_output=True)
        t.umount(mnt)
        conv.run("convert", "-q", f"{reg}/src/debian:full", f"{reg}/b/debian:traced", "--prefetch-trace", trace)
        traced_files = len(open(trace).read().split())

        py = ["/usr/bin/python3", "-c", "print(1)"]
        cold = {"skiff, cold cache": [], "skiff, cold cache, prefetch trace": [], "local disk, page cache dropped": []}
        fetched = {"skiff, cold cache": [], "skiff, cold cache, prefetch trace": []}
        peak_rss = 0
        for i in range(RUNS):
            for name, tag in [("skiff, cold cache", "plain"), ("skiff, cold cache, prefetch trace", "traced")]:
                s = Skiff(os.path.join(work, f"cold-{i}-{tag}"))
                drop_caches()
                t0 = time.monotonic()
                s.mount(f"{reg}/b/debian:{tag}", mnt)
                subprocess.run(["chroot", mnt, *py], check=True, capture_output=True)
                cold[name].append(time.monotonic() - t0)
                fetched[name].append(s.stats(mnt)["metrics"]["fetched_bytes"])
                s.umount(mnt)
                shutil.rmtree(os.path.join(work, f"cold-{i}-{tag}"))
            drop_caches()
            cold["local disk, page cache dropped"].append(timed(["chroot", local, *py]))

        # Warm reads and the metadata walk, on one mount with a full cache.
        w = Skiff(os.path.join(work, "warm"))
        w.mount(f"{reg}/b/debian:plain", mnt, "--prefetch-all")
        pid = w.stats(mnt)["pid"]
        big = sorted(
            (os.path.join(dp, f) for dp, _, fs in os.walk(local) for f in fs
             if os.path.isfile(os.path.join(dp, f)) and not os.path.islink(os.path.join(dp, f))
             and os.path.getsize(os.path.join(dp, f)) > (1 << 20)))
        big_bytes = sum(os.path.getsize(p) for p in big)
        rel = [os.path.relpath(p, local) for p in big]
        subprocess.run(["cat", *[os.path.join(mnt, r) for r in rel]], stdout=subprocess.DEVNULL, check=True)
        deadline = time.time() + 120
        while w.stats(mnt)["metrics"]["inflight_requests"] > 0 and time.time() < deadline:
            time.sleep(0.2)
        rows = {}
        w2 = Skiff(os.path.join(work, "warm"))
        mnt2 = os.path.join(work, "mnt-nopt")
        os.makedirs(mnt2)
        w2.mount(f"{reg}/b/debian:plain", mnt2, "--no-passthrough")
        for label, base in [("skiff", mnt), ("skiff, no passthrough", mnt2), ("local", local)]:
            files = [os.path.join(base, r) for r in rel]
            # 20 passes per sample: one pass is too short to time reliably.
            warm = [timed(["cat", *(files * 20)]) / 20 for _ in range(RUNS)]
            cold_pc = []
            for _ in range(RUNS):
                drop_caches()
                cold_pc.append(timed(["cat", *files]))
            walk = []
            for _ in range(RUNS):
                drop_caches()
                walk.append(timed(["sh", "-c", f"find {base} -type f -print0 | xargs -0 stat > /dev/null"]))
            rows[label] = (statistics.median(warm), statistics.median(cold_pc), statistics.median(walk))
        status = open(f"/proc/{pid}/status").read()
        peak_rss = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        inspect = json.loads(w.run("inspect", "--json", f"{reg}/b/debian:plain"))
        w.umount(mnt)
        w2.umount(mnt2)
        # Peak RSS while reading a ~1 GB image whole.
        big_layout, big_total = synthetic_gb(work)
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{big_layout}:big", f"docker://{reg}/src/big:1"])
        conv.run("convert", "-q", f"{reg}/src/big:1", f"{reg}/b/big:1")
        g = Skiff(os.path.join(work, "gb"))
        g.mount(f"{reg}/b/big:1", mnt)
        gb_pid = g.stats(mnt)["pid"]
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", f"find {mnt} -type f -print0 | xargs -0 cat > /dev/null"], check=True)
        gb_secs = time.monotonic() - t0
        gb_rss = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{gb_pid}/status").read()).group(1))
        g.umount(mnt)
    finally:
        registry.kill()

    cpu = os.popen("grep -m1 'model name' /proc/cpuinfo").read().split(":")[1].strip()
    med = {k: statistics.median(v) for k, v in cold.items()}
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {os.cpu_count()} cores, Linux {os.uname().release}, "
        f"{sh([SKIFF, '--version']).strip()}. Registry on 127.0.0.1 (unshaped loopback). Debian test image "
        f"({inspect['file_bytes']/1e6:.0f} MB of files, {inspect['files']} files). Medians of {RUNS} runs.",
        "",
        "Cold start, `chroot MNT python3 -c 'print(1)'`, including the mount:",
        "",
        "| | seconds | vs local disk | bytes fetched |",
        "|---|---|---|---|",
    ]
    for k in cold:
        f = f"{statistics.median(fetched[k]) / 1e6:.1f} MB" if k in fetched else "-"
        lines.append(f"| {k} | {med[k]:.3f} | {med[k] / med['local disk, page cache dropped']:.2f}x | {f} |")
    lines += [
        "",
        f"The trace held {traced_files} files. Bytes fetched with the trace include prefetching those files whole.",
        "",
        f"Reads of the image's {len(big)} files over 1 MiB ({big_bytes/1e6:.0f} MB), and the metadata walk:",
        "",
        "| | skiff s | local s | skiff / local |",
        "|---|---|---|---|",
    ]
    names = ["warm read (page cache warm)", "read, page cache dropped (skiff: chunk cache warm)", "find -type f | xargs stat, caches dropped"]
    lines[-2] = "| | skiff s | skiff, no passthrough s | local s | skiff / local |"
    lines[-1] = "|---|---|---|---|---|"
    for i, n in enumerate(names):
        s_, n_, l_ = rows["skiff"][i], rows["skiff, no passthrough"][i], rows["local"][i]
        lines.append(f"| {n} | {s_:.3f} | {n_:.3f} | {l_:.3f} | {s_ / l_:.2f}x |")
    lines += [
        "",
        f"Throughput, warm: skiff {big_bytes / rows['skiff'][0] / 1e6:.0f} MB/s, local {big_bytes / rows['local'][0] / 1e6:.0f} MB/s "
        f"(ratio {rows['local'][0] / rows['skiff'][0]:.2f}). Daemon peak RSS after all of the above: {peak_rss / 1024:.0f} MiB.",
        "",
        f"A synthetic {big_total / 1e9:.2f} GB image (180 random 5 MiB files, 20,000 small files), read whole through "
        f"a fresh mount in {gb_secs:.1f} s: daemon peak RSS {gb_rss / 1024:.0f} MiB (target: at most 64 MiB).",
    ]
    table = "\n".join(lines)
    print(table)
    doc = os.path.join(ROOT, "docs/benchmarks.md")
    text = open(doc).read()
    section = "## Mount (`bench/mount.py`)\n\n" + table + "\n\nReproduce: `bench/mount.py --runs 5` (as root).\n"
    if "## Mount" in text:
        text = re.sub(r"## Mount.*?(?=\n## |\Z)", section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section
    open(doc, "w").write(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
