#!/usr/bin/python3
"""HelloBench-style cold starts over a shaped link (issue 5), side by side in one run.

For each workload, time from the start command to the first line of output, total time,
bytes over the link (host veth counters: before first output and in all) and peak memory
(VmHWM) of the daemons, for:
  oci          containerd + runc, overlayfs snapshotter: `ctr image pull` then `ctr run --rm`
  estargz      the eStargz proxy snapshotter of bench/estargz (lazy), when it is there
  estargz-opt  the same, image converted with `ctr-remote image optimize` for the workload
  skiff        `skiff run --rm` from a fresh --root (empty chunk cache, nothing mounted)
  skiff-trace  the same, image converted with a prefetch trace of the workload
  skiff-ctr    containerd + runc with `skiff snapshotter` (fresh root): `skiff snapshotter pull`
               then `ctr run --rm --snapshotter skiff` of the skiff image (no trace)
  skiff-ctr-shim  the same with skiff's own shim instead of runc's (`ctr run --runtime
               io.containerd.skiff.v2`): the whole skiff stack under containerd
  skiff-cri    the same snapshotter under containerd's CRI plugin, driven as the kubelet does by
               crates/cli/examples/cri_run.rs: PullImage, RunPodSandbox (host network), Create-
               and StartContainer, output read from the CRI log (no trace)
  skiff-vm     `skiff run --rm --sandbox vm` from a fresh --root: the same lazy image as a verified
               block device, in a QEMU guest of its own (TCG on a host without a usable KVM); the
               guest kernel, agent and initramfs are the node's, cached, as after `make agent`
  skiff-baseline  `skiff run --rm` with SKIFF_BASELINE_BIN, an earlier build (only when set)
Every cold run starts from nothing: a fresh containerd root or skiff root, page cache dropped.
Paths are interleaved run by run. The physical limit is also measured (see limit()).

Usage: coldstart.py --profile 100mbit [--runs 5] [--workloads python,node,...] --out FILE.json
"""
import argparse, json, os, shlex, signal, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True  # no __pycache__ in the clone
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from harness import (CRI_RUN, SKIFF, SKIFF_BASELINE, BenchError, Containerd, Estargz, Link, Skiff, SkiffSnapshotter, drop_caches, ensure_packages,  # noqa: E402
                     log, rate_bytes_per_s, sh, timed, umount_under, version, PATH_ENV, ROOT)

HELLO_C = r'printf "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n" >/tmp/hello.c'
# name -> (corpus image, command, a string its output must contain)
WORKLOADS = {
    "python": ("python", ["python3", "-c", "print(1)"], "1"),
    "node": ("node", ["node", "-e", "console.log(1)"], "1"),
    "gcc": ("gcc", ["sh", "-c", HELLO_C + " && gcc -o /tmp/hello /tmp/hello.c && /tmp/hello"], "hello"),
    # java -version writes to stderr; first output is read on stdout.
    "java": ("large", ["sh", "-c", "exec java -version 2>&1"], "version"),
    "numpy": ("large", ["python3", "-c", "import numpy; print(numpy.__version__)"], "."),
}
# skiff's containerd shim, built beside skiff; containerd finds it on its PATH.
SHIM = os.path.join(os.path.dirname(os.path.realpath(SKIFF)), "containerd-shim-skiff-v2")
os.environ["PATH"] = os.path.dirname(SHIM) + os.pathsep + os.environ.get("PATH", "")
PATHS = ["oci", "estargz", "estargz-opt", "skiff", "skiff-trace", "skiff-ctr", "skiff-ctr-shim", "skiff-cri", "skiff-vm"] + (["skiff-baseline"] if SKIFF_BASELINE else [])
# What `skiff run --sandbox vm` boots: make agent's agent and guest kernel.
CACHE = os.environ.get("SKIFF_CACHE", os.path.expanduser("~/.cache/skiff"))
VM_AGENT = os.path.join(CACHE, "agent-target", "skiff-agent")


def vm_assets():
    kernels = os.path.join(CACHE, "vm")
    return os.access(VM_AGENT, os.X_OK) and os.path.isdir(kernels) and any(
        d.startswith("linux-image-") for d in os.listdir(kernels))
DAEMONS = {"containerd", "containerd-shim", "estargz snapshotter", "skiff mount daemon", "skiff snapshotter"}


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="skiff-coldstart.", dir="/var/tmp")
        self.link = Link(os.path.join(self.work, "registry"))
        self.reg = None
        self.ctrd = None
        self.skiff = None
        self.estargz = None
        self.esgz_images = {}  # image -> None, or why its conversion failed
        self.unavailable = {}  # (path, workload) -> why it cannot run
        self.seq = 0

    # ---- setup ----
    def ref(self, image, tag):
        return f"{self.reg}/corpus/{image}:{tag}"

    def prepare(self, workloads):
        images = sorted({WORKLOADS[w][0] for w in workloads})
        layouts = {}
        for im in images:
            out = sh(["bash", os.path.join(ROOT, "bench/corpus/build.sh"), im], timeout=3600)
            layouts[im] = out.strip().splitlines()[-1]
        # Set-up traffic goes at 1 Gbit/s; the profile applies to the measured runs only.
        self.reg = self.link.up("1gbit")
        log(f"registry at {self.reg} (netns skb, veth skb-h/skb-n)")
        conv = Skiff(os.path.join(self.work, "convert-root"))
        self.images = {}
        for im in images:
            log(f"push + convert {im}")
            sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layouts[im]}:latest",
                f"docker://{self.ref(im, 'oci')}"])
            sh(conv.cmd("convert", self.ref(im, "oci"), self.ref(im, "skiff")))
            info = json.loads(sh(conv.cmd("inspect", "--json", self.ref(im, "skiff"))))
            manifest = json.loads(sh(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                      f"docker://{self.ref(im, 'oci')}"]))
            self.images[im] = {"layout": layouts[im], "oci_layers": len(manifest["layers"]),
                               "oci_bytes": sum(l["size"] for l in manifest["layers"]),
                               "skiff_blob_bytes": info["blob_bytes"], "file_bytes": info["file_bytes"],
                               "files": info["files"]}
        if "skiff-cri" in self.args.paths:
            self.push_pause()
        self.estargz = Estargz() if "estargz" in self.args.paths or "estargz-opt" in self.args.paths else None
        if self.estargz and not self.estargz.available():
            log(f"eStargz: not available ({self.estargz.reason})")
        self.limits = {}
        for w in workloads:
            im, cmd, _ = WORKLOADS[w]
            log(f"trace + warm start + estargz conversion for {w}")
            self.limits[w] = self.record_trace(w, im, cmd)
            self.limits[w].update(self.warm_starts(w, im, cmd))
            if self.estargz and self.estargz.available():
                self.convert_estargz(w, im, cmd)
        conv.cleanup()

    def push_pause(self):
        """A pause image for the CRI path, from a static binary built here (no public registry)."""
        import gzip, hashlib, io, tarfile
        d = os.path.join(self.work, "pause")
        os.makedirs(os.path.join(d, "layout", "blobs", "sha256"))
        open(os.path.join(d, "pause.c"), "w").write(
            "#include <signal.h>\n#include <unistd.h>\nstatic void q(int s) { (void)s; _exit(0); }\n"
            "int main(void) { signal(SIGTERM, q); signal(SIGINT, q); for (;;) pause(); }\n")
        sh(["gcc", "-static", "-O2", "-o", os.path.join(d, "pause"), os.path.join(d, "pause.c")])
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as t:
            t.add(os.path.join(d, "pause"), arcname="pause")

        def blob(b):
            h = hashlib.sha256(b).hexdigest()
            open(os.path.join(d, "layout", "blobs", "sha256", h), "wb").write(b)
            return {"digest": f"sha256:{h}", "size": len(b)}
        layer = blob(gzip.compress(raw.getvalue(), mtime=0))
        config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/pause"]},
                                  "rootfs": {"type": "layers", "diff_ids": [
                                      "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode())
        manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                                **layer}]}).encode())
        open(os.path.join(d, "layout", "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
        open(os.path.join(d, "layout", "index.json"), "w").write(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
             "annotations": {"org.opencontainers.image.ref.name": "pause"}}]}))
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{d}/layout:pause",
            f"docker://{self.reg}/pause:bench"])

    def cri_config(self):
        return "\n".join([
            '[plugins."io.containerd.grpc.v1.cri"]',
            f'  sandbox_image = "{self.reg}/pause:bench"',
            '  stream_server_address = "127.0.0.1"', '  stream_server_port = "0"',
            # Lowering the pause container's OOM score is denied in a container without CAP_SYS_RESOURCE.
            '  restrict_oom_score_adj = true',
            '  [plugins."io.containerd.grpc.v1.cri".containerd]',
            '    snapshotter = "skiff"', '    disable_snapshot_annotations = false',
            f'  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{self.reg}"]',
            f'    endpoint = ["http://{self.reg}"]',
            '  [plugins."io.containerd.grpc.v1.cri".cni]',
            f'    bin_dir = "{self.work}/cni/bin"', f'    conf_dir = "{self.work}/cni/conf"'])

    def convert_estargz(self, w, im, cmd):
        """A conversion that fails makes that path unavailable for that workload, with the reason."""
        if im not in self.esgz_images:
            try:
                self.estargz.convert(self.ref(im, "oci"), self.ref(im, "esgz"))
                self.esgz_images[im] = None
            except BenchError as e:
                self.esgz_images[im] = f"not available: bench/estargz/convert.sh failed: {e}"
        self.unavailable[("estargz", w)] = self.esgz_images[im]
        if "estargz-opt" in self.args.paths:
            try:
                self.estargz.convert(self.ref(im, "oci"), self.ref(im, f"esgz-opt-{w}"), cmd)
            except BenchError as e:
                self.unavailable[("estargz-opt", w)] = f"not available: bench/estargz/convert.sh --optimize failed: {e}"
        for p in ("estargz", "estargz-opt"):
            if self.unavailable.get((p, w)):
                log(f"{p} {w}: {self.unavailable[(p, w)][:300]}")

    def skip_reason(self, p, w):
        """Why path p cannot run workload w, or None."""
        if p.startswith("estargz"):
            if not (self.estargz and self.estargz.available()):
                return f"not available: {self.estargz.reason if self.estargz else 'not requested'}"
            return self.unavailable.get((p, w))
        if p == "skiff-cri" and not os.access(CRI_RUN, os.X_OK):
            return f"not available: no {CRI_RUN} (cargo build --release -p skiff --example cri_run)"
        if p == "skiff-ctr-shim" and not os.access(SHIM, os.X_OK):
            return f"not available: no {SHIM} (make release builds it beside skiff)"
        if p == "skiff-vm" and not vm_assets():
            return f"not available: no guest agent at {VM_AGENT} or guest kernel under {CACHE}/vm (make agent)"
        if p == "skiff-baseline" and not SKIFF_BASELINE:
            return "not available: set SKIFF_BASELINE_BIN (bench/run.sh --baseline BIN)"
        return None

    def record_trace(self, w, im, cmd):
        """Mounts the skiff image with --record-trace, runs the workload in a chroot (an overlay
        on the mount, so it can write), converts again with the trace. Also measures the bytes the
        workload reads: the traced files, each compressed whole with zstd -2."""
        s = Skiff(os.path.join(self.work, f"trace-root-{w}"))
        d = os.path.join(self.work, f"trace-{w}")
        mnt, up, wk, merged = (os.path.join(d, x) for x in ("mnt", "upper", "work", "merged"))
        for x in (up, wk, merged):
            os.makedirs(x)
        trace = os.path.join(self.work, f"trace-{w}.txt")
        trace_live = trace + ".live"
        try:
            sh(s.cmd("mount", "--daemon", "--readahead", "0", "--record-trace", trace_live, self.ref(im, "skiff"), mnt))
            sh(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={mnt},upperdir={up},workdir={wk},index=off", merged])
            sh(["mount", "-t", "proc", "proc", os.path.join(merged, "proc")])
            sh(["mount", "--bind", "/dev", os.path.join(merged, "dev")])
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd="/",
                               env={"PATH": PATH_ENV, "HOME": "/root"},
                               preexec_fn=lambda: (os.chroot(merged), os.chdir("/")))
            if r.returncode != 0:
                raise BenchError(f"workload {w} failed in the trace chroot: {r.stderr.strip()[-400:]}")
            stats = s.stats([mnt])
            # The workload's trace, before the reads below add to it.
            recorded = open(trace_live).read()
            with open(trace, "w") as f:
                f.write(recorded)
            # Bare lines are first opens; "PATH\tOFFSET" lines are chunk reads.
            paths = [p for p in recorded.splitlines() if p and "\t" not in p]
            raw = comp = 0
            for p in paths:
                f = os.path.join(mnt, p.lstrip("/"))
                if os.path.isfile(f) and not os.path.islink(f):
                    raw += os.path.getsize(f)
                    z = subprocess.run(["zstd", "-2", "-c", "-q", f], capture_output=True, timeout=300)
                    comp += len(z.stdout)
        finally:
            umount_under(merged)
            subprocess.run(s.cmd("umount", mnt), capture_output=True, timeout=60)
            s.cleanup()
            umount_under(d)
        # Kept beside the results, to inspect or replay.
        subprocess.run(["cp", trace, f"{self.args.out}.trace-{w}.txt"], check=False)
        conv = Skiff(os.path.join(self.work, "convert-root"))
        sh(conv.cmd("convert", "--prefetch-trace", trace, self.ref(im, "oci"), self.ref(im, f"trace-{w}")))
        info = json.loads(sh(conv.cmd("inspect", "--json", self.ref(im, f"trace-{w}"))))
        return {"trace_files": len(paths), "read_bytes": raw, "read_compressed": comp,
                "trace_fetched": stats.get("fetched_bytes"), "prefetch_bytes": info.get("prefetch_bytes")}

    def warm_starts(self, w, im, cmd):
        """Process start-up without any fetch: median of 3 warm runs, skiff and OCI."""
        s = Skiff(os.path.join(self.work, f"warm-{w}"))
        try:
            runs = [timed(s.cmd("run", "--rm", self.ref(im, "skiff"), *cmd), self.link) for _ in range(4)]
        finally:
            s.cleanup()
        c = Containerd(os.path.join(self.work, f"warm-ctrd-{w}"))
        try:
            c.start()
            sh(c.ctr("image", "pull", "--plain-http", self.ref(im, "oci")), timeout=1800)
            oci = [timed(c.ctr("run", "--rm", self.ref(im, "oci"), f"warm{i}", *cmd), self.link)
                   for i in range(4)]
        finally:
            c.stop()
        for r in runs + oci:
            if r["rc"] != 0:
                raise BenchError(f"warm run of {w} failed (exit {r['rc']}): {r['output'][-300:]}")
        return {"warm_skiff": statistics.median(r["first"] for r in runs[1:]),
                "warm_oci": statistics.median(r["first"] for r in oci[1:])}

    # ---- one cold run per path ----
    def cold(self, path, w):
        im, cmd, expect = WORKLOADS[w]
        self.seq += 1
        cid = f"c{self.seq}"
        logf = os.path.join(self.work, f"run-{self.seq}-{path}-{w}.log")
        extra = {}
        mark = logf + ".pulled"  # the wall clock when the pull finished
        if path == "oci":
            self.ctrd = Containerd(os.path.join(self.work, f"ctrd-{self.seq}"))
            self.ctrd.start()
            drop_caches()
            pull = " ".join(shlex.quote(x) for x in self.ctrd.ctr("image", "pull", "--plain-http",
                                                                 self.ref(im, "oci")))
            run = ["sh", "-c", f'{pull} >/dev/null && date +%s.%N >{mark} && exec "$@"', "sh",
                   *self.ctrd.ctr("run", "--rm", self.ref(im, "oci"), cid, *cmd)]
            r = timed(run, self.link, watch=self.ctrd.watch, log_path=logf)
        elif path.startswith("estargz"):
            ref = self.ref(im, "esgz" if path == "estargz" else f"esgz-opt-{w}")
            ed = os.path.join(self.work, f"esgz-{self.seq}")
            self.estargz.start(ed)
            self.ctrd = Containerd(os.path.join(self.work, f"ctrd-{self.seq}"), proxy={"stargz": self.estargz.sock})
            self.ctrd.start()
            drop_caches()
            pull = " ".join(shlex.quote(x) for x in self.ctrd.ctr("image", "rpull", "--plain-http", ref,
                                                                 binary="ctr-remote"))
            run = ["sh", "-c", f'{pull} >/dev/null && date +%s.%N >{mark} && exec "$@"', "sh",
                   *self.ctrd.ctr("run", "--rm", "--snapshotter", "stargz", ref, cid, *cmd)]
            pid = self.estargz.proc.pid

            def watch():
                d = self.ctrd.watch()
                d[pid] = "estargz snapshotter"
                return d
            r = timed(run, self.link, watch=watch, log_path=logf)
        elif path == "skiff-cri":
            watch = self.start_snapshotter(cri=self.cri_config())
            run = [CRI_RUN, "--containerd", self.ctrd.sock, "--log-dir", os.path.join(self.work, f"pod-{self.seq}"),
                   "--name", cid, self.ref(im, "skiff"), *cmd]
            r = timed(run, self.link, watch=watch, log_path=logf)
            extra = self.skiff.stats()
            try:
                phases = json.loads(open(logf).read().strip().splitlines()[-1])
                mark_time = r["t0_wall"] + phases["pull_s"]
                open(mark, "w").write(f"{mark_time}")
            except (OSError, ValueError, KeyError, IndexError):
                pass
        elif path in ("skiff-ctr", "skiff-ctr-shim"):
            watch = self.start_snapshotter()
            ref = self.ref(im, "skiff")
            pull = " ".join(shlex.quote(x) for x in self.skiff.cmd(
                "snapshotter", "pull", ref, "--containerd-address", self.ctrd.sock, "-n", Containerd.NS))
            shim = ["--runtime", "io.containerd.skiff.v2"] if path == "skiff-ctr-shim" else []
            run = ["sh", "-c", f'{pull} >/dev/null && date +%s.%N >{mark} && exec "$@"', "sh",
                   *self.ctrd.ctr("run", "--rm", "--snapshotter", "skiff", *shim, ref, cid, *cmd)]
            r = timed(run, self.link, watch=watch, log_path=logf)
            extra = self.skiff.stats()
        else:
            tag = f"trace-{w}" if path == "skiff-trace" else "skiff"
            binary = SKIFF_BASELINE if path == "skiff-baseline" else SKIFF
            self.skiff = Skiff(os.path.join(self.work, f"skiff-{self.seq}"), binary)
            sandbox = ["--sandbox", "vm"] if path == "skiff-vm" else []
            drop_caches()
            r = timed(self.skiff.cmd("run", "--rm", *sandbox, self.ref(im, tag), *cmd), self.link,
                      watch=self.skiff.watch, log_path=logf)
            extra = self.skiff.stats()
        self.teardown_run()
        if r["rc"] != 0 or expect not in r["output"]:
            err = open(logf).read().strip()[-400:]
            raise BenchError(f"{path} {w}: exit {r['rc']}, output {r['output'][-200:]!r}; stderr: {err}")
        if os.path.exists(mark):
            r["pull"] = float(open(mark).read()) - r["t0_wall"]
        r["daemon_mem"] = sum(v for k, v in r["mem"].items() if k in DAEMONS)
        if extra:
            r["skiff_fetched"] = extra.get("fetched_bytes")
        del r["output"]
        return r

    def start_snapshotter(self, cri=None):
        """A fresh skiff root, `skiff snapshotter` on it, and a containerd using it (with the CRI
        plugin when `cri` is its config); caches dropped. Returns the daemons' watch function."""
        self.skiff = Skiff(os.path.join(self.work, f"skiff-{self.seq}"))
        self.snap = SkiffSnapshotter(self.skiff, os.path.join(self.work, f"snap-{self.seq}.sock"))
        self.snap.start()
        self.ctrd = Containerd(os.path.join(self.work, f"ctrd-{self.seq}"), proxy={"skiff": self.snap.sock}, cri=cri)
        self.ctrd.start()
        drop_caches()

        def watch():
            d = self.ctrd.watch()
            d.update(self.skiff.watch())
            d[self.snap.proc.pid] = "skiff snapshotter"
            return d
        return watch

    def teardown_run(self):
        if self.ctrd:
            self.ctrd.stop()
            self.ctrd = None
        if getattr(self, "snap", None):
            self.snap.stop()
            self.snap = None
        if self.estargz and getattr(self.estargz, "proc", None):
            self.estargz.stop()
        if self.skiff:
            self.skiff.cleanup()
            self.skiff = None

    def teardown(self):
        try:
            self.teardown_run()
        finally:
            self.link.down()
            umount_under(self.work)
            subprocess.run(["rm", "-rf", self.work])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="100mbit", help="link rate: 1gbit, 100mbit, 20mbit")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--out", required=True, help="JSON results file")
    args = ap.parse_args()
    args.paths = args.paths.split(",")
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"coldstart: unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    if os.geteuid() != 0:
        sys.exit("coldstart: must run as root (netns, containerd, mounts, drop_caches)")
    if not os.access(SKIFF, os.X_OK):
        sys.exit(f"coldstart: no skiff binary at {SKIFF}; run `make release` (or set SKIFF_BIN)")
    ensure_packages(["containerd", "ctr", "runc", "skopeo", "umoci", "debootstrap", "docker-registry", "tc", "zstd"])

    b = Bench(args)

    def on_signal(sig, _):
        raise KeyboardInterrupt(f"signal {sig}")
    # Explicit, as a shell that starts us in the background sets SIGINT to ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t_start = time.time()
    results = {w: {p: [] for p in args.paths} for w in workloads}
    notes = {}
    try:
        b.prepare(workloads)
        b.link.shape(args.profile)
        log(f"link shaped to {args.profile}; {args.runs} cold runs per path")
        for i in range(args.runs):
            for w in workloads:
                for p in args.paths:
                    why = b.skip_reason(p, w)
                    if why:
                        notes[f"{p}/{w}"] = why
                        continue
                    try:
                        r = b.cold(p, w)
                    except BenchError as e:
                        b.teardown_run()
                        notes.setdefault(f"{p}/{w}", str(e))
                        log(f"FAILED {p} {w}: {e}")
                        continue
                    results[w][p].append(r)
                    log(f"run {i + 1}/{args.runs} {w:6} {p:11} first {r['first']:6.2f} s  total {r['total']:6.2f} s"
                        f"  link {r['bytes'] / 1e6:7.1f} MB  daemons {r['daemon_mem'] / 2**20:5.0f} MiB")
    finally:
        b.teardown()
    meta = {"profile": args.profile, "rate_bytes_per_s": rate_bytes_per_s(args.profile), "runs": args.runs,
            "date": time.strftime("%Y-%m-%d", time.gmtime(t_start)), "seconds": round(time.time() - t_start),
            "kernel": os.uname().release, "cpu": cpu_model(), "cores": os.cpu_count(),
            "skiff": version([SKIFF, "--version"]),
            "skiff_baseline": version([SKIFF_BASELINE, "--version"]) if SKIFF_BASELINE else None,
            "containerd": version(["containerd", "--version"]),
            "runc": version(["runc", "--version"]), "skopeo": version(["skopeo", "--version"]),
            "ctr-remote": version(["ctr-remote", "--version"]),
            "stargz-snapshotter": version(["dpkg-query", "-W", "-f", "${Package} ${Version}; ", "stargz-snapshotter",
                                           "golang-github-containerd-stargz-snapshotter-dev"]),
            # A known bench/estargz bug at the time of the run (see report.py).
            "estargz_opt_drops_dashes": report.jq_drops_dashes(),
            "estargz": (b.estargz.binary if b.estargz and b.estargz.available() else None)}
    out = {"meta": meta, "images": b.images if hasattr(b, "images") else {},
           "limits": getattr(b, "limits", {}), "results": results, "notes": notes}
    json.dump(out, open(args.out, "w"), indent=1)
    log(f"results in {args.out}")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
