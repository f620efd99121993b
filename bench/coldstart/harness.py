"""Shared parts of the cold-start and dedup benchmarks (python3 stdlib only).

- Link: bench/net/link.sh (registry in a netns behind a shaped veth) and its byte counters;
- Containerd: a private containerd (own root, state, socket) for the OCI and eStargz paths;
- Estargz: the hook for bench/estargz (the eStargz proxy snapshotter), when it is there;
- Skiff: the skiff binary with a fresh --root per cold run;
- timed(): time to first line of output and total, link bytes at both points, and
  peak memory (VmHWM) of the daemons named by a watch function.
Every start has a matching stop that is safe to call twice; run() in the scripts
calls them from `finally` and from SIGINT/SIGTERM handlers.
"""
import json, os, re, selectors, shutil, signal, subprocess, threading, time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
SKIFF = os.environ.get("SKIFF_BIN", os.path.join(TARGET, "release", "skiff"))
# The kubelet stand-in (crates/cli/examples/cri_run.rs), built beside the skiff binary.
CRI_RUN = os.environ.get("SKIFF_CRI_RUN", os.path.join(os.path.dirname(SKIFF), "examples", "cri_run"))
# An earlier build to run side by side (the "skiff-baseline" path), or None.
SKIFF_BASELINE = os.environ.get("SKIFF_BASELINE_BIN") or None
LINK = os.path.join(BENCH, "net", "link.sh")
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Debian packages each part needs: command -> package.
PACKAGES = {"containerd": "containerd", "ctr": "containerd", "runc": "runc", "skopeo": "skopeo",
            "umoci": "umoci", "debootstrap": "debootstrap", "docker-registry": "docker-registry",
            "tc": "iproute2", "zstd": "zstd"}


class BenchError(Exception):
    """A failure with a message that names the thing and the fix."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, env=None, timeout=1800, check=True, quiet=False):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
    return r.stdout


def ensure_packages(commands):
    missing = sorted({PACKAGES[c] for c in commands if shutil.which(c) is None})
    if missing:
        log(f"installing {' '.join(missing)}")
        r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0:
            raise BenchError(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-400:]}; "
                             "run apt-get update and retry")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - shown in the report
        return f"unavailable ({e})"


def rate_bytes_per_s(profile):
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "": 1}
    p = profile.lower()
    num = p.rstrip("bitps")
    mult = units[num[-1]] if num[-1] in units else 1
    num = num[:-1] if num[-1] in units else num
    bits = float(num) * mult
    return bits / 8 if p.endswith("bit") else bits


class Link:
    def __init__(self, storage):
        self.storage = storage
        self.registry = None

    def up(self, profile):
        self.registry = sh([LINK, "up", profile, self.storage]).strip().splitlines()[-1]
        return self.registry

    def shape(self, profile):
        sh([LINK, "shape", profile])

    def counters(self):
        d = f"/sys/class/net/{os.environ.get('SKIFF_NET_NAME', 'skb')}-h/statistics"
        rx, tx = open(f"{d}/rx_bytes"), open(f"{d}/tx_bytes")
        with rx, tx:
            return int(rx.read()), int(tx.read())

    def down(self):
        subprocess.run([LINK, "down"], capture_output=True, timeout=60)


def vm_hwm(pid):
    """Peak resident set of a live process, in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def find_pids(needle):
    """Pids whose command line contains `needle` (bytes), excluding this process."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            out.append((int(d), cmd.split(b"\0")))
    return out


class MemorySampler(threading.Thread):
    """Polls VmHWM of the processes `watch()` names ({pid: label}), keeping each pid's last value
    (VmHWM only grows), so short-lived ones such as shims are caught while they live."""

    def __init__(self, watch, period=0.025, rescan=0.1):
        super().__init__(daemon=True)
        self.watch, self.period, self.rescan = watch, period, rescan
        self.peaks = {}  # pid -> (label, bytes)
        self.stop_evt = threading.Event()

    def run(self):
        pids, last_scan = {}, 0.0
        while not self.stop_evt.is_set():
            now = time.monotonic()
            if now - last_scan >= self.rescan:
                pids.update(self.watch())
                last_scan = now
            self.sample(pids)
            self.stop_evt.wait(self.period)

    def sample(self, pids):
        for pid, label in list(pids.items()):
            v = vm_hwm(pid)
            if v is not None:
                self.peaks[pid] = (label, max(v, self.peaks.get(pid, (label, 0))[1]))

    def finish(self):
        self.stop_evt.set()
        self.join(timeout=5)
        self.sample(self.watch())  # daemons still alive: their final value
        by_label = {}
        for label, v in self.peaks.values():
            by_label[label] = max(by_label.get(label, 0), v)
        return by_label


def timed(cmd, link, env=None, timeout=900, watch=None, log_path=None):
    """Runs cmd; returns first-output and total seconds, link bytes (registry -> host) at both
    points, exit code, output and peak memory per daemon label. stderr goes to log_path."""
    sampler = MemorySampler(watch) if watch else None
    if sampler:
        sampler.start()
    rx0, _ = link.counters()
    err = open(log_path or os.devnull, "w")
    t0, t0_wall = time.monotonic(), time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    buf, t_first, rx_first = b"", None, None
    deadline = t0 + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.killpg(p.pid, signal.SIGKILL)
                raise BenchError(f"`{' '.join(cmd)}` did not finish within {timeout} s")
            if not sel.select(timeout=min(left, 1.0)):
                continue
            data = os.read(p.stdout.fileno(), 65536)
            if not data:
                break
            buf += data
            if t_first is None and b"\n" in buf:
                t_first = time.monotonic() - t0
                rx_first = link.counters()[0] - rx0
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        sel.close()
        err.close()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    total = time.monotonic() - t0
    rx_total = link.counters()[0] - rx0
    mem = sampler.finish() if sampler else {}
    if t_first is None:
        t_first, rx_first = total, rx_total
    return {"first": t_first, "total": total, "bytes_first": rx_first, "bytes": rx_total,
            "rc": rc, "output": buf.decode(errors="replace"), "mem": mem, "t0_wall": t0_wall}


class Containerd:
    """A private containerd (Debian's, with runc and the overlayfs snapshotter), never the system's.
    `proxy` adds a proxy snapshotter plugin {name: socket}."""

    NS = "skiffbench"

    def __init__(self, workdir, proxy=None, cri=None):
        self.dir = workdir
        self.sock = os.path.join(workdir, "containerd.sock")
        self.proxy = proxy or {}
        # TOML for the CRI plugin's section, which is then enabled.
        self.cri = cri
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "config.toml")
        lines = ["version = 2", f'root = "{self.dir}/root"', f'state = "{self.dir}/state"',
                 # The CRI plugin is not needed (but for the CRI path) and only slows the start.
                 *([] if self.cri else ['disabled_plugins = ["io.containerd.grpc.v1.cri"]']),
                 "[grpc]", f'  address = "{self.sock}"',
                 "[ttrpc]", f'  address = "{self.sock}.ttrpc"',
                 # Else containerd keeps its opt plugin's files in /opt/containerd.
                 '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{self.dir}/opt"']
        for name, addr in self.proxy.items():
            lines += [f"[proxy_plugins.{name}]", '  type = "snapshot"', f'  address = "{addr}"']
        if self.cri:
            lines.append(self.cri)
        open(conf, "w").write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", conf], stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"containerd exited at start (exit {self.proc.returncode}); "
                                 f"see {self.dir}/containerd.log")
            if os.path.exists(self.sock) and subprocess.run(
                    self.ctr("version"), capture_output=True, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise BenchError(f"containerd did not answer on {self.sock} within 30 s; see {self.dir}/containerd.log")

    def ctr(self, *args, binary="ctr"):
        return [binary, "-a", self.sock, "-n", self.NS, *args]

    def watch(self):
        pids = {self.proc.pid: "containerd"} if self.proc else {}
        for pid, _ in find_pids(self.sock.encode()):
            if pid != (self.proc.pid if self.proc else None):
                pids[pid] = "containerd-shim"
        return pids

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # Containers left by a failed run, then the daemon.
            for pid, _ in find_pids(self.sock.encode()):
                if pid != self.proc.pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            stop_process(self.proc)
        self.proc = None
        umount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_process(proc, timeout=20):
    """SIGTERM, then SIGKILL if it has not exited within timeout seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def umount_under(path):
    """Lazily unmounts every mount at or below path, deepest first."""
    path = os.path.realpath(path)
    try:
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
    except OSError:
        return
    for m in sorted({m for m in mounts if m == path or m.startswith(path + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


class Estargz:
    """HOOK for path (b), eStargz lazy pull: bench/estargz (built by another helper) provides
    build.sh (prints the path of skiff-bench-estargz, a containerd proxy snapshotter) and
    convert.sh SRC DST [--optimize -- CMD...]. Absent or broken, the path is reported as
    not available; nothing is substituted for it."""

    DIR = os.path.join(BENCH, "estargz")

    def __init__(self):
        self.binary, self.reason = None, None
        build = os.path.join(self.DIR, "build.sh")
        if not os.path.exists(build):
            self.reason = "bench/estargz/build.sh is not there"
            return
        try:
            out = subprocess.run(["bash", build], capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            self.reason = "bench/estargz/build.sh timed out"
            return
        path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode != 0 or not os.access(path, os.X_OK):
            self.reason = f"bench/estargz/build.sh failed: {(out.stderr.strip() or 'no binary printed')[-300:]}"
            return
        self.binary = path
        self.proc = None

    def available(self):
        return self.binary is not None

    def convert(self, src, dst, optimize_cmd=None):
        cmd = ["bash", os.path.join(self.DIR, "convert.sh"), src, dst]
        if optimize_cmd:
            cmd += ["--optimize", "--", *optimize_cmd]
        sh(cmd, timeout=3600)

    def start(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        self.root, self.sock = os.path.join(workdir, "root"), os.path.join(workdir, "estargz.sock")
        self.log = open(os.path.join(workdir, "estargz.log"), "w")
        self.proc = subprocess.Popen([self.binary, "--root", self.root, "--address", self.sock],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"skiff-bench-estargz did not create {self.sock}; see {workdir}/estargz.log")
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)
        self.proc = None
        if getattr(self, "root", None):
            umount_under(self.root)


class SkiffSnapshotter:
    """`skiff snapshotter` on a Skiff's root, for a private containerd."""

    def __init__(self, skiff, sock):
        self.skiff = skiff
        self.sock = sock
        self.proc = None

    def start(self):
        os.makedirs(self.skiff.root, exist_ok=True)
        self.log = open(self.sock + ".log", "w")
        self.proc = subprocess.Popen(self.skiff.cmd("snapshotter", "--address", self.sock),
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"skiff snapshotter did not start; see {self.sock}.log")
            time.sleep(0.05)

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self.proc = None


class Skiff:
    """skiff with its own --root: one fresh root per cold run."""

    def __init__(self, root, binary=None):
        self.root = root
        self.binary = binary or SKIFF

    def cmd(self, *args):
        return [self.binary, "--plain-http", "-q", "--root", self.root, *args]

    def watch(self):
        pids = {}
        for pid, argv in find_pids(self.root.encode()):
            if argv and os.path.basename(argv[0].decode(errors="replace")) == "skiff":
                pids[pid] = "skiff mount daemon" if b"mount" in argv else "skiff run"
        return pids

    def trees(self):
        d = os.path.join(self.root, "images")
        return [os.path.join(d, k, "tree") for k in sorted(os.listdir(d))] if os.path.isdir(d) else []

    def stats(self, trees=None):
        """Counters of the given mounts (default: every image mount under this root), summed."""
        total = {}
        for t in trees or self.trees():
            r = subprocess.run(self.cmd("stats", t), capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                for k, v in json.loads(r.stdout).get("metrics", {}).items():
                    if isinstance(v, (int, float)):
                        total[k] = total.get(k, 0) + v
        return total

    def cleanup(self):
        for t in self.trees():
            subprocess.run(self.cmd("umount", "--lazy", t), capture_output=True, timeout=60)
        for pid, _ in find_pids(self.root.encode()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        umount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def write_docs_section(heading, text):
    """Replaces the section of docs/benchmarks.md that starts with `heading` (up to the next
    `## `) with text, or appends it."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "docs", "benchmarks.md")
    doc = open(path).read()
    pat = re.compile(re.escape(heading) + r".*?(?=\n## |\Z)", re.S)
    doc = pat.sub(lambda _: text.rstrip() + "\n", doc) if pat.search(doc) else doc.rstrip() + "\n\n" + text
    open(path, "w").write(doc)
