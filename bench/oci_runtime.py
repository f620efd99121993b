#!/usr/bin/python3
"""skiff's OCI runtime command against runc (issue 17's targets: <= 0.5x runc on each path).

Three paths, each measured with skiff-oci and with runc interleaved run by run, in one run:
  1. create -> start -> (exit) -> delete of `/bin/true` through the runtime command itself,
     on a bundle whose root is the Debian test image;
  2. `ctr run --rm` of `/bin/true` on a cached image: skiff's shim (`--runtime
     io.containerd.skiff.v2`), and containerd's runc shim with skiff-oci as its runc binary
     (`--runc-binary`), each against the runc shim with runc;
  3. `podman run --rm` of `/bin/true` with `--runtime skiff-oci` against `--runtime runc`.
Also the resident memory (VmRSS) of each shim serving one running container.
Medians of --runs runs. Rewrites the "OCI runtime" section of docs/benchmarks.md.

Usage: bench/oci_runtime.py [--runs 20] [--no-docs]   (as root; after `make release images`)
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "coldstart"))
from harness import write_docs_section, SKIFF, BenchError, Containerd, log, sh  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))
DEBIAN = os.path.join(CACHE, "images", "debian")


def timed(cmd, **kw):
    # stderr to a file, not a pipe: `create` hands its streams to the container, which keeps
    # them open, so a pipe would not reach end-of-file until the container exits.
    with tempfile.TemporaryFile() as err:
        t = time.monotonic()
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, **kw)
        dt = time.monotonic() - t
        if r.returncode != 0:
            err.seek(0)
            raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}): {err.read().decode(errors='replace')[-400:]}")
    return dt


def bundle(work, rootfs):
    b = os.path.join(work, "bundle")
    os.makedirs(b, exist_ok=True)
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
            "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
                    "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
                    "noNewPrivileges": True},
        "root": {"path": rootfs, "readonly": True},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": "/skiff-bench/oci",
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    json.dump(config, open(os.path.join(b, "config.json"), "w"))
    return b


def lifecycle(runtime, root, b, i):
    """create, start, wait until the process has exited, delete."""
    cid = f"bench-{i}"
    t = time.monotonic()
    timed([runtime, "--root", root, "create", "--bundle", b, cid])
    timed([runtime, "--root", root, "start", cid])
    while True:
        out = subprocess.run([runtime, "--root", root, "state", cid], capture_output=True).stdout
        if b'"stopped"' in out:
            break
        time.sleep(0.001)
    timed([runtime, "--root", root, "delete", cid])
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(DEBIAN, "index.json")):
        raise BenchError("the Debian test image is missing; run `make images`")
    # containerd finds skiff's shim on its PATH, built beside the skiff binary.
    os.environ["PATH"] = os.path.dirname(os.path.realpath(SKIFF)) + os.pathsep + os.environ["PATH"]
    if not shutil.which("containerd-shim-skiff-v2"):
        raise BenchError("containerd-shim-skiff-v2 is not beside skiff; run `make release`")
    work = tempfile.mkdtemp(prefix="oci-bench.", dir="/tmp")
    results = {}
    try:
        link = os.path.join(work, "skiff-oci")
        os.symlink(os.path.realpath(SKIFF), link)
        rootfs = os.path.join(work, "rootfs")
        sh(["umoci", "unpack", "--image", f"{DEBIAN}:base", os.path.join(work, "umoci")], quiet=True)
        os.rename(os.path.join(work, "umoci", "rootfs"), rootfs)
        b = bundle(work, rootfs)
        runtimes = {"skiff-oci": link, "runc": shutil.which("runc")}
        # crun is not an anchor here: on this host's v1+v2 hybrid cgroups it refuses to run
        # ("cgroups in hybrid mode not supported").
        log("path 1: create -> start -> delete through the runtime command")
        times = {name: [] for name in runtimes}
        for i in range(args.runs):
            for name, binary in runtimes.items():
                times[name].append(lifecycle(binary, os.path.join(work, f"state-{name}"), b, i))
        results["lifecycle"] = {k: statistics.median(v) for k, v in times.items()}

        log("path 2: ctr run --rm /bin/true through containerd's runc shim")
        archive = os.path.join(work, "base.tar")
        sh(["skopeo", "copy", "-q", f"oci:{DEBIAN}:base", f"oci-archive:{archive}:bench/base:latest"], quiet=True)
        ctd = Containerd(os.path.join(work, "containerd"))
        ctd.start()
        try:
            sh(ctd.ctr("image", "import", "--base-name", "bench/base", archive), quiet=True)
            ref = subprocess.run(ctd.ctr("image", "ls", "-q"), capture_output=True, text=True).stdout.split()[0]
            variants = {
                "shim": ["--runtime", "io.containerd.skiff.v2"],
                "skiff-oci": ["--runc-binary", runtimes["skiff-oci"]],
                "runc": ["--runc-binary", runtimes["runc"]],
            }
            times = {name: [] for name in variants}
            for i in range(args.runs + 1):
                for name, flags in variants.items():
                    dt = timed(ctd.ctr("run", "--rm", *flags, ref, f"b{name}-{i}", "/bin/true"))
                    if i > 0:  # the first run of each warms the snapshot
                        times[name].append(dt)
            med = {k: statistics.median(v) for k, v in times.items()}
            results["shim"] = {"skiff-oci": med["shim"], "runc": med["runc"]}
            results["ctr"] = {"skiff-oci": med["skiff-oci"], "runc": med["runc"]}
            log("shim memory: one running container each")
            rss = {}
            for name, flags, binary in [("skiff", variants["shim"], "containerd-shim-skiff-v2"),
                                        ("runc", variants["runc"], "containerd-shim-runc-v2")]:
                cid = f"rss-{name}"
                sh(ctd.ctr("run", "-d", *flags, ref, cid, "sleep", "1000"), quiet=True)
                time.sleep(1)
                rss[name] = shim_rss(binary, cid)
                sh(ctd.ctr("task", "kill", "-s", "KILL", cid), quiet=True)
                for _ in range(100):
                    if "STOPPED" in subprocess.run(ctd.ctr("task", "ls"), capture_output=True, text=True).stdout:
                        break
                    time.sleep(0.05)
                subprocess.run(ctd.ctr("task", "delete", cid), capture_output=True)
                subprocess.run(ctd.ctr("container", "delete", cid), capture_output=True)
            results["rss"] = rss
        finally:
            ctd.stop()

        if shutil.which("podman"):
            log("path 3: podman run --rm /bin/true")
            proot = os.path.join(work, "podman")
            base = ["podman", "--root", f"{proot}/storage", "--runroot", f"{proot}/run", "--tmpdir", f"{proot}/tmp",
                    "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
            sh(base + ["load", "-q", "-i", archive], quiet=True)
            opts = ["--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
            times = {"skiff-oci": [], "runc": []}
            # The same runs again through a wrapper that times each runtime call, to split
            # podman's time into the runtime's and its own (podman's and conmon's).
            wrapped = {name: timing_wrapper(work, name, runtimes[name]) for name in times}
            shares = {name: [] for name in times}
            for i in range(args.runs + 1):
                for name in times:
                    dt = timed(base + ["--runtime", runtimes[name], "run", "--rm", *opts, "bench/base:latest", "/bin/true"])
                    if i > 0:
                        times[name].append(dt)
                    wrapper, calls = wrapped[name]
                    open(calls, "w").close()
                    dt = timed(base + ["--runtime", wrapper, "run", "--rm", *opts, "bench/base:latest", "/bin/true"])
                    if i > 0:
                        shares[name].append((dt, runtime_calls(calls)))
            results["podman"] = {k: statistics.median(v) for k, v in times.items()}
            results["podman_split"] = {k: split_podman(v) for k, v in shares.items()}
            subprocess.run(base + ["system", "reset", "--force"], capture_output=True)
    finally:
        subprocess.run(["umount", "-R", "-l", work], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    text = render(results, args.runs)
    print(text)
    if not args.no_docs:
        write_section(text)


def timing_wrapper(work, name, runtime):
    """A runtime that runs `runtime` and logs each call's wall time; bash's $EPOCHREALTIME
    keeps the wrapper's own cost to its start-up, which falls outside the timed span."""
    wrapper = os.path.join(work, f"timed-{name}")
    calls = os.path.join(work, f"calls-{name}")
    open(wrapper, "w").write(
        "#!/bin/bash\n"
        "start=$EPOCHREALTIME\n"
        f'"{runtime}" "$@"\n'
        "rc=$?\n"
        f'echo "$start $EPOCHREALTIME" >> "{calls}"\n'
        "exit $rc\n")
    os.chmod(wrapper, 0o755)
    return wrapper, calls


def runtime_calls(path):
    """The wall time in seconds of each runtime call of one wrapped podman run."""
    return [float(end) - float(start) for start, end in (line.split() for line in open(path))]


def split_podman(runs):
    """Medians over runs of the total, the runtime's share, and the number of runtime calls."""
    return {"total": statistics.median(t for t, _ in runs),
            "runtime": statistics.median(sum(c) for _, c in runs),
            "calls": statistics.median(len(c) for _, c in runs)}


def shim_rss(binary, cid):
    """VmRSS in KiB of the shim process serving container `cid`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if args[0].decode().endswith(binary) and cid.encode() in args and b"delete" not in args:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, IndexError):
            continue
    raise BenchError(f"no {binary} serving {cid}")


def render(results, runs):
    rows = [("create → start → delete (runtime command)", "lifecycle"),
            ("`ctr run --rm`: skiff's shim against the runc shim with runc", "shim"),
            ("`ctr run --rm`: the runc shim with skiff-oci (`--runc-binary`)", "ctr"),
            ("`podman run --rm` (`--runtime`)", "podman")]
    lines = ["## OCI runtime (`bench/oci_runtime.py`)", "",
             f"`/bin/true` on the Debian test image, medians of {runs} runs, each path measured with "
             "skiff-oci and runc interleaved in one run.", "",
             "| path | skiff | runc | skiff ÷ runc |", "|---|---:|---:|---:|"]
    for label, key in rows:
        r = results.get(key)
        if not r:
            continue
        lines.append(f"| {label} | {r['skiff-oci'] * 1000:.0f} ms | {r['runc'] * 1000:.0f} ms | "
                     f"{r['skiff-oci'] / r['runc']:.2f}× |")
    met = [k for _, k in rows if k in results and results[k]["skiff-oci"] / results[k]["runc"] <= 0.5]
    measured = [k for _, k in rows if k in results]
    lines += ["", f"Target: ≤ 0.5× runc on each path. Met on {len(met)} of {len(measured)} paths"
              f"{': ' + ', '.join(met) if met else ''}.", ""]
    split = results.get("podman_split")
    if split:
        lines += ["Where `podman run --rm`'s time goes, from the same number of runs through a wrapper "
                  "that times every runtime call (medians):", "",
                  "| runtime | podman run | in the runtime | calls | podman and conmon's own |",
                  "|---|---:|---:|---:|---:|"]
        for name in ("skiff-oci", "runc"):
            r = split[name]
            lines.append(f"| {name} | {r['total'] * 1000:.0f} ms | {r['runtime'] * 1000:.0f} ms | "
                         f"{r['calls']:.0f} | {(r['total'] - r['runtime']) * 1000:.0f} ms |")
        own = split["skiff-oci"]["total"] - split["skiff-oci"]["runtime"]
        lines += ["", f"The runtime's own time: skiff-oci {split['skiff-oci']['runtime'] / split['runc']['runtime']:.2f}× runc's. "
                  f"podman and conmon's own work alone is {own / split['runc']['total']:.2f}× runc's whole "
                  "`podman run`, so on this path no runtime, however fast, can reach 0.5×.", ""]
    rss = results.get("rss")
    if rss:
        lines += ["| shim serving one running container | VmRSS |", "|---|---:|",
                  f"| containerd-shim-skiff-v2 | {rss['skiff'] / 1024:.1f} MiB |",
                  f"| containerd-shim-runc-v2 | {rss['runc'] / 1024:.1f} MiB |", "",
                  f"Target: the shim's RSS ≤ 15 MiB per pod: "
                  f"{'met' if rss['skiff'] <= 15 * 1024 else 'missed'}.", ""]
    return "\n".join(lines)


def write_section(text):
    write_docs_section("## OCI runtime (`bench/oci_runtime.py`)", text)


if __name__ == "__main__":
    main()
