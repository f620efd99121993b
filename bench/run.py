#!/usr/bin/python3
"""Container start benchmark for `skiff run` (issue 4), cached image.

Side by side in one run, create + start + exit of `/bin/true`:

  - `skiff run --rm IMAGE /bin/true`: the whole command, image already
    mounted and cached (overlay, spec, sandbox, wait, teardown);
  - `runc run` (Debian's runc) on a bundle holding the same tree and the
    config.json skiff generated (so the same namespaces, seccomp policy,
    masked paths and cgroups);
  - `crun run` on the same bundle, where it runs (crun 1.8 refuses hybrid
    cgroup hosts; the table says so).

and, since the container's streams are pipes that skiff copies (issue 13),
the cost of that copy on large transfers: 1 GiB through the container's
stdout and stdin, `skiff run` against `runc run` (which hands the container
its own descriptors) and the same pipeline on the host alone; and the start
with a bounded writable layer (`--storage-opt size=10G`).

With --baseline BIN, another skiff build (an earlier commit's) starts the
same image in the same interleaved loop, so a regression shows as a ratio
measured in one run.

Rewrites the "Run" section of docs/benchmarks.md.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
SKIFF = os.environ.get("SKIFF_BIN") or os.path.join(TARGET, "release", "skiff")
_parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
_parser.add_argument("--runs", type=int, default=30, help="interleaved start runs (default 30)")
_parser.add_argument("--stream-runs", type=int, default=5, help="1 GiB stream runs (default 5)")
_parser.add_argument("--baseline", metavar="BIN", help="another skiff binary to start side by side")
_parser.add_argument("--baseline-label", metavar="TEXT", default="baseline",
                     help="its name in the table, e.g. the commit it was built from")
ARGS = _parser.parse_args()
RUNS = ARGS.runs
STREAM_RUNS = ARGS.stream_runs
GIB = 1 << 30


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def timed(cmd, env=None):
    t = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    return time.monotonic() - t, r


def version(cmd):
    try:
        return sh(cmd).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"unavailable ({e})"


def ensure_packages(*names):
    missing = [n for n in names if subprocess.run(["dpkg", "-s", n], capture_output=True).returncode]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def main():
    ensure_packages("runc", "crun")
    image = sh(["bash", os.path.join(ROOT, "tests/images/build-debian.sh")]).strip().splitlines()[-1]
    work = tempfile.mkdtemp(prefix="skiff-bench-run.")
    env = dict(os.environ, SKIFF_ROOT=os.path.join(work, "root"))
    layout = f"oci:{work}/skiff:full"
    sh([SKIFF, "convert", "-q", f"oci:{image}:full", layout], env=env)
    # Warm: mounted, cached.
    sh([SKIFF, "run", "--rm", layout, "/bin/true"], env=env)

    # The same tree and the spec skiff generates, as an OCI bundle.
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle)
    sh([SKIFF, "unpack", layout, os.path.join(bundle, "rootfs")], env=env)
    cid = sh([SKIFF, "run", "-d", layout, "sleep", "60"], env=env).strip()
    spec = json.load(open(os.path.join(work, "root", "containers", cid, "config.json")))
    sh([SKIFF, "rm", "-f", cid], env=env)
    spec["root"]["path"] = "rootfs"
    spec["process"]["args"] = ["/bin/true"]
    spec["linux"]["cgroupsPath"] = "/skiff-bench/runc"
    json.dump(spec, open(os.path.join(bundle, "config.json"), "w"))
    # Bundles for the stream runs: the same tree and spec, other commands.
    stream_bundles = {}
    for name, args in [("out", ["head", "-c", str(GIB), "/dev/zero"]), ("in", ["sh", "-c", "cat > /dev/null"])]:
        b = os.path.join(work, f"bundle-{name}")
        os.makedirs(b)
        spec["root"]["path"] = os.path.join(bundle, "rootfs")
        spec["process"]["args"] = args
        spec["linux"]["cgroupsPath"] = f"/skiff-bench/runc-{name}"
        # Unconfined on both sides: a seccomp filter costs every write
        # syscall, and runc's and skiff's filters are compiled differently;
        # what is left to differ is the copy.
        stream_spec = json.loads(json.dumps(spec))
        stream_spec["linux"].pop("seccomp", None)
        json.dump(stream_spec, open(os.path.join(b, "config.json"), "w"))
        stream_bundles[name] = b

    skiff_rows = [("skiff run", SKIFF, []),
                  ("skiff run --storage-opt size=10G", SKIFF, ["--storage-opt", "size=10G"])]
    if ARGS.baseline:
        # Its own root: the two builds' state formats may differ.
        base_env = dict(os.environ, SKIFF_ROOT=os.path.join(work, "baseline-root"))
        sh([ARGS.baseline, "run", "--rm", layout, "/bin/true"], env=base_env)
        skiff_rows.append((f"skiff run ({ARGS.baseline_label})", ARGS.baseline, []))
    rows = {name: [] for name, _, _ in skiff_rows}
    rows.update({"runc run": [], "crun run": []})
    notes = {}
    for i in range(RUNS):
        # Interleaved, so drift hits every row alike.
        for name, binary, extra in skiff_rows:
            run_env = base_env if binary is not SKIFF else env
            t, r = timed([binary, "run", "--rm", *extra, layout, "/bin/true"], env=run_env)
            if r.returncode == 0:
                rows[name].append(t)
            else:
                notes[name] = r.stderr.strip()[:200]
        for name, binary in [("runc run", "runc"), ("crun run", "crun")]:
            if name in notes:
                continue
            t, r = timed([binary, "--root", os.path.join(work, name), "run", "--bundle", bundle, f"b{i}"])
            if r.returncode == 0:
                rows[name].append(t)
            else:
                notes[name] = r.stderr.strip().splitlines()[-1][:200] if r.stderr.strip() else f"exit {r.returncode}"
                subprocess.run([binary, "--root", os.path.join(work, name), "delete", "-f", f"b{i}"],
                               capture_output=True)

    runc = statistics.median(rows["runc run"]) if rows["runc run"] else None
    lines = [
        f"Create + start + exit of `/bin/true`, cached image, median of {RUNS} interleaved runs. "
        f"{version(['runc', '--version'])}; {version(['crun', '--version'])}; kernel {os.uname().release}.",
        "",
        "| runtime | median ms | vs runc |",
        "|---|---:|---:|",
    ]
    for name, ts in rows.items():
        if ts:
            m = statistics.median(ts)
            ratio = f"{m / runc:.2f}×" if runc else "–"
            lines.append(f"| {name} | {1000 * m:.1f} | {ratio} |")
        else:
            lines.append(f"| {name} | – | fails here: {notes.get(name, 'no runs')} |")
    lines += [
        "",
        "`skiff run` does more than `runc run` in each iteration: it reads the image config, "
        "mounts and removes an overlay, writes its state, and resolves the user in the image. "
        "runc moves its init into the cgroup by pid, which waits for the kernel's cgroup migration "
        "lock (an RCU grace period when idle, 8-16 ms here, and its spread is most of runc's run-to-run "
        "variance); skiff's runtime clones the init into its cgroup and never migrates a process "
        "(docs/run.md, The runtime and Start time).",
    ]
    lines += ["", *streams(env, layout, stream_bundles, work)]
    table = "\n".join(lines)
    print(table)
    doc = os.path.join(ROOT, "docs/benchmarks.md")
    text = open(doc).read()
    section = "## Run (`bench/run.py`)\n\n" + table + "\n\nReproduce: `bench/run.py --runs 30` (as root).\n"
    if "## Run (" in text:
        text = re.sub(r"## Run \(.*?(?=\n## |\Z)", section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section
    open(doc, "w").write(text)
    for binary, root in [(SKIFF, "root"), (ARGS.baseline, "baseline-root")]:
        images = os.path.join(work, root, "images")
        for t in os.listdir(images) if binary and os.path.isdir(images) else []:
            subprocess.run([binary, "umount", "--lazy", os.path.join(images, t, "tree")],
                           env=dict(os.environ, SKIFF_ROOT=os.path.join(work, root)), capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def shell_timed(cmd, env):
    """Seconds for a shell pipeline, or None if it failed."""
    t = time.monotonic()
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True)
    return (time.monotonic() - t) if r.returncode == 0 else None


def streams(env, layout, bundles, work):
    """1 GiB out of and into a container: skiff's relay against runc's,
    against the container holding the pipeline's own descriptors, and
    against the host pipeline alone; interleaved."""
    q = lambda s: "'" + s.replace("'", "'\\''") + "'"  # noqa: E731
    state = q(os.path.join(work, "runc-streams"))
    runc = f"runc --root {state} run --bundle"
    unconfined = "--security-opt seccomp=unconfined"
    # Detached, runc gives the container its own stdio: the direct case.
    # The pipeline ends when the container's end of the pipe closes.
    detached = lambda b, i: f"{runc} {q(b)} -d {i}"  # noqa: E731
    cases = {
        "out": {
            "host alone": f"head -c {GIB} /dev/zero | cat > /dev/null",
            "runc run -d (direct descriptors)": f"{detached(bundles['out'], 'sd-out')} | cat > /dev/null",
            "runc run (relays with io.Copy)": f"{runc} {q(bundles['out'])} s-out | cat > /dev/null",
            "skiff run": f"{q(SKIFF)} run --rm {unconfined} {q(layout)} head -c {GIB} /dev/zero | cat > /dev/null",
        },
        "in": {
            "host alone": f"head -c {GIB} /dev/zero | cat > /dev/null",
            "runc run -d (direct descriptors)": f"head -c {GIB} /dev/zero | {detached(bundles['in'], 'sd-in')}",
            "runc run (relays with io.Copy)": f"head -c {GIB} /dev/zero | {runc} {q(bundles['in'])} s-in",
            "skiff run": f"head -c {GIB} /dev/zero | {q(SKIFF)} run --rm -i {unconfined} {q(layout)} sh -c 'cat > /dev/null'",
        },
    }
    if ARGS.baseline:
        base = f"SKIFF_ROOT={q(os.path.join(work, 'baseline-root'))} {q(ARGS.baseline)}"
        label = f"skiff run ({ARGS.baseline_label})"
        cases["out"][label] = f"{base} run --rm {unconfined} {q(layout)} head -c {GIB} /dev/zero | cat > /dev/null"
        cases["in"][label] = (f"head -c {GIB} /dev/zero | {base} run --rm -i {unconfined} {q(layout)} "
                              f"sh -c 'cat > /dev/null'")
    direct = "runc run -d (direct descriptors)"
    got = {(d, n): [] for d, c in cases.items() for n in c}
    for _ in range(STREAM_RUNS):
        for d, c in cases.items():
            for n, cmd in c.items():
                t = shell_timed(cmd, env)
                if t is not None:
                    got[(d, n)].append(t)
                for i in ("sd-out", "sd-in", "s-out", "s-in"):
                    subprocess.run(["runc", "--root", os.path.join(work, "runc-streams"), "delete", "-f", i],
                                   capture_output=True)
    out = [
        f"**Streams.** 1 GiB through the container's stdout (to `cat > /dev/null`) and stdin "
        f"(from `head -c 1G /dev/zero`), whole command including start and exit, median of "
        f"{STREAM_RUNS} interleaved runs, without seccomp on either side (a filter costs every write "
        f"syscall, and the two runtimes compile theirs differently). skiff copies the container's "
        f"pipes with splice(2); `runc run` in the foreground relays through pipes too (Go's io.Copy); "
        f"detached, runc hands the container the pipeline's own descriptors, the case with no copy.",
        "",
        "| direction | path | median s | GiB/s | vs direct |",
        "|---|---|---:|---:|---:|",
    ]
    for d, c in cases.items():
        base = statistics.median(got[(d, direct)]) if got[(d, direct)] else None
        for n in c:
            ts = got[(d, n)]
            if not ts:
                out.append(f"| {d} | {n} | – | – | failed |")
                continue
            m = statistics.median(ts)
            ratio = f"{m / base:.2f}×" if base else "–"
            out.append(f"| {d} | {n} | {m:.2f} | {1 / m:.2f} | {ratio} |")
    return out


if __name__ == "__main__":
    main()
